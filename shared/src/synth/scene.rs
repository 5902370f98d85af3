//! A rendered scene: static background, one synthetic face in a box, micro-expression events,
//! head jitter, blinks, illumination flicker and sensor noise — plus its true flow.

use rand::Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use serde::Serialize;

use super::face::FaceIdentity;
use super::motion::{ActionUnit, Deformation, Emotion};
use super::rng_for;
use crate::flow::Flow;
use crate::image::GrayImage;

/// One micro-expression in a scene (frame indices of the scene).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub onset: usize,
    pub apex: usize,
    pub offset: usize,
    pub emotion: Emotion,
    pub action_units: Vec<u8>,
    /// Peak displacement of the strongest action unit at the apex, in pixels.
    pub amplitude_px: f32,
    #[serde(skip)]
    deformation: Deformation,
}

impl Event {
    /// Builds an event whose strongest unit moves `amplitude_px` pixels at the apex when the
    /// face half-width is `face_half_width` pixels.
    pub fn new(
        rng: &mut impl Rng,
        emotion: Emotion,
        (onset, apex, offset): (usize, usize, usize),
        amplitude_px: f32,
        face_half_width: f32,
    ) -> Event {
        assert!(onset < apex && apex < offset, "event timing must satisfy onset < apex < offset");
        let units = emotion.action_units(rng);
        let gain = amplitude_px / face_half_width;
        let weighted: Vec<(ActionUnit, f32)> =
            units.iter().enumerate().map(|(k, &au)| (au, if k == 0 { gain } else { gain * rng.random_range(0.6..1.0) })).collect();
        Event {
            onset,
            apex,
            offset,
            emotion,
            action_units: units.iter().map(|a| a.number()).collect(),
            amplitude_px,
            deformation: Deformation::from_action_units(&weighted),
        }
    }

    /// The displacement field at the apex, in face units.
    pub(crate) fn deformation(&self) -> &Deformation {
        &self.deformation
    }

    /// Expression strength in [0, 1]: raised-cosine rise to the apex and fall to the offset.
    pub fn strength(&self, t: f32) -> f32 {
        let (on, ap, off) = (self.onset as f32, self.apex as f32, self.offset as f32);
        if t <= on || t >= off {
            0.0
        } else if t <= ap {
            0.5 - 0.5 * (std::f32::consts::PI * (t - on) / (ap - on)).cos()
        } else {
            0.5 + 0.5 * (std::f32::consts::PI * (t - ap) / (off - ap)).cos()
        }
    }
}

/// Everything needed to render any frame of a clip deterministically.
#[derive(Debug, Clone)]
pub struct Scene {
    pub width: usize,
    pub height: usize,
    pub fps: f32,
    pub frames: usize,
    pub identity: FaceIdentity,
    /// Face box centre and half-sizes in pixels.
    pub face: (f32, f32, f32, f32),
    pub events: Vec<Event>,
    /// Blinks as (first frame, duration in frames).
    pub blinks: Vec<(usize, usize)>,
    /// Head translation per frame, pixels.
    pub jitter: Vec<(f32, f32)>,
    /// Illumination gain per frame.
    pub gain: Vec<f32>,
    pub noise_sigma: f32,
    pub seed: u64,
    background: Vec<f32>,
}

impl Scene {
    /// A scene with random distractor tracks (jitter random walk, flicker); events and blinks
    /// are added by the caller.
    pub fn new(
        seed: u64,
        width: usize,
        height: usize,
        fps: f32,
        frames: usize,
        identity: FaceIdentity,
        face: (f32, f32, f32, f32),
    ) -> Scene {
        let mut rng = rng_for(seed, 11, 0);
        let step = Normal::new(0.0f32, 0.02).unwrap();
        let mut jitter = Vec::with_capacity(frames);
        let (mut jx, mut jy) = (0f32, 0f32);
        for _ in 0..frames {
            // a slow, mean-reverting random walk of a few tenths of a pixel
            jx = 0.995 * jx + step.sample(&mut rng);
            jy = 0.995 * jy + step.sample(&mut rng);
            jitter.push((jx.clamp(-0.6, 0.6), jy.clamp(-0.6, 0.6)));
        }
        let flicker_hz = rng.random_range(0.5..2.0f32);
        let gain = (0..frames)
            .map(|t| 1.0 + 0.01 * (std::f32::consts::TAU * flicker_hz * t as f32 / fps).sin() + rng.random_range(-0.004..0.004))
            .collect();
        let bg_tone = rng.random_range(0.25..0.45f32);
        let (a, b) = (rng.random_range(0.01..0.03f32), rng.random_range(0.01..0.03f32));
        let background = (0..width * height)
            .map(|i| {
                let (x, y) = ((i % width) as f32, (i / width) as f32);
                bg_tone + 0.08 * (x * a).sin() * (y * b).cos() + 0.02 * ((x + y) * 0.2).sin()
            })
            .collect();
        Scene {
            width,
            height,
            fps,
            frames,
            identity,
            face,
            events: Vec::new(),
            blinks: Vec::new(),
            jitter,
            gain,
            noise_sigma: 1.5 / 255.0,
            seed,
            background,
        }
    }

    fn blink(&self, t: usize) -> f32 {
        self.blinks
            .iter()
            .map(|&(start, dur)| {
                if t < start || t >= start + dur {
                    0.0
                } else {
                    let x = (t - start) as f32 / dur as f32;
                    1.0 - (2.0 * x - 1.0).abs()
                }
            })
            .fold(0.0, f32::max)
    }

    /// The expressions under way in frame t, with their strengths. Found once per frame, so
    /// that a long clip's many expressions do not cost anything per pixel.
    fn active(&self, t: usize) -> Vec<(f32, &Event)> {
        self.events.iter().filter_map(|e| Some((e.strength(t as f32), e)).filter(|(s, _)| *s > 0.0)).collect()
    }

    /// Face motion at pixel (x, y) in frame t: head jitter plus every active expression.
    fn motion(&self, t: usize, active: &[(f32, &Event)], x: f32, y: f32) -> (f32, f32) {
        let (cx, cy, rx, ry) = self.face;
        let (nx, ny) = ((x - cx) / rx, (y - cy) / ry);
        let (mut mx, mut my) = self.jitter[t];
        for (s, e) in active {
            let (dx, dy) = e.deformation.at(nx, ny);
            mx += s * dx * rx;
            my += s * dy * rx;
        }
        (mx, my)
    }

    /// Pixels whose face content can be non-zero (face box plus a margin for motion).
    fn face_region(&self) -> (usize, usize, usize, usize) {
        let (cx, cy, rx, ry) = self.face;
        let x0 = (cx - rx - 4.0).floor().max(0.0) as usize;
        let y0 = (cy - ry - 4.0).floor().max(0.0) as usize;
        let x1 = ((cx + rx + 4.0).ceil() as usize).min(self.width);
        let y1 = ((cy + ry + 4.0).ceil() as usize).min(self.height);
        (x0, y0, x1, y1)
    }

    /// Renders frame t in [0, 1].
    pub fn render(&self, t: usize) -> GrayImage {
        assert!(t < self.frames, "frame {t} is past the end ({} frames)", self.frames);
        let (cx, cy, rx, ry) = self.face;
        let (x0, y0, x1, y1) = self.face_region();
        let blink = self.blink(t);
        let gain = self.gain[t];
        let noise = Normal::new(0.0f32, self.noise_sigma.max(1e-9)).unwrap();
        let active = self.active(t);
        let mut data = self.background.clone();
        data.par_chunks_mut(self.width).enumerate().for_each(|(y, row)| {
            let mut rng = rng_for(self.seed, 12, (t * self.height + y) as u64);
            for (x, px) in row.iter_mut().enumerate() {
                if (y0..y1).contains(&y) && (x0..x1).contains(&x) {
                    let (mx, my) = self.motion(t, &active, x as f32, y as f32);
                    let (qx, qy) = (x as f32 - mx, y as f32 - my);
                    let (v, alpha) = self.identity.shade((qx - cx) / rx, (qy - cy) / ry, blink);
                    *px = *px * (1.0 - alpha) + v * alpha;
                }
                *px = (*px * gain + noise.sample(&mut rng)).clamp(0.0, 1.0);
            }
        });
        GrayImage::new(self.width, self.height, data).unwrap()
    }

    /// True flow from frame t1 to frame t2 (zero on the static background). Blinks are
    /// occlusions, not motion, and are not part of it.
    pub fn true_flow(&self, t1: usize, t2: usize) -> Flow {
        assert!(t1 < self.frames && t2 < self.frames, "frames out of range");
        let (cx, cy, rx, ry) = self.face;
        let (w, h) = (self.width, self.height);
        let (x0, y0, x1, y1) = self.face_region();
        let mut u = vec![0f32; w * h];
        let mut v = vec![0f32; w * h];
        let (active1, active2) = (self.active(t1), self.active(t2));
        u.par_chunks_mut(w).zip(v.par_chunks_mut(w)).enumerate().for_each(|(y, (ur, vr))| {
            if !(y0..y1).contains(&y) {
                return;
            }
            for x in x0..x1 {
                let (px, py) = (x as f32, y as f32);
                let (m1x, m1y) = self.motion(t1, &active1, px, py);
                let (qx, qy) = (px - m1x, py - m1y);
                if self.identity.shade((qx - cx) / rx, (qy - cy) / ry, 0.0).1 <= 0.0 {
                    continue;
                }
                // Solve p2 - m_t2(p2) = q by fixed-point iteration (motions are small and smooth).
                let (mut p2x, mut p2y) = (qx + m1x, qy + m1y);
                for _ in 0..6 {
                    let (mx, my) = self.motion(t2, &active2, p2x, p2y);
                    p2x = qx + mx;
                    p2y = qy + my;
                }
                ur[x] = p2x - px;
                vr[x] = p2y - py;
            }
        });
        Flow::new(w, h, u, v).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scene() -> Scene {
        let mut rng = rng_for(7, 0, 0);
        let id = FaceIdentity::random(&mut rng);
        let mut s = Scene::new(7, 96, 112, 200.0, 40, id, (48.0, 56.0, 50.0, 54.0));
        s.events.push(Event::new(&mut rng, Emotion::Happiness, (5, 20, 35), 1.5, 50.0));
        s
    }

    #[test]
    fn rendering_is_deterministic_and_in_range() {
        let s = scene();
        let a = s.render(20);
        assert_eq!(a, s.render(20));
        assert!(a.data().iter().all(|v| (0.0..=1.0).contains(v)));
        assert_ne!(a, s.render(5));
    }

    #[test]
    fn true_flow_peaks_at_the_requested_amplitude() {
        let mut s = scene();
        s.jitter.iter_mut().for_each(|j| *j = (0.0, 0.0));
        let f = s.true_flow(5, 20);
        let peak = f.u().iter().zip(f.v()).map(|(u, v)| (u * u + v * v).sqrt()).fold(0f32, f32::max);
        assert!((1.2..=1.6).contains(&peak), "peak {peak}");
        // composition: onset->apex then apex->onset returns home
        let back = s.true_flow(20, 5);
        let i = f.u().iter().zip(f.v()).map(|(u, v)| u * u + v * v).enumerate().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap().0;
        let (x, y) = ((i % 96) as f32 + f.u()[i], (i / 96) as f32 + f.v()[i]);
        let j = y.round() as usize * 96 + x.round() as usize;
        assert!((f.u()[i] + back.u()[j]).abs() < 0.1 && (f.v()[i] + back.v()[j]).abs() < 0.1);
        assert!(s.true_flow(0, 4).u().iter().all(|&u| u == 0.0));
    }
}
