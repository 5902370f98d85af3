//! Interview clips made from a real face photograph: the photo is placed in a frame and moved
//! by the same action-unit displacement fields as the synthetic faces (brows, lids, cheeks, lip
//! corners, …), so the texture a spotter sees is a person's and only the motion is designed.
//!
//! Each clip draws, from its seed: where the face sits and how large it is; micro-expressions
//! (1–2 px at the apex, 0.17–0.45 s long, one every 1–2.5 s); blinks between them; head motion
//! (a slow drift of a few pixels plus a sub-pixel tremor); lighting that changes as a room's does
//! (a slow drift of the level and of a left–right gradient, a beat of mains flicker, and now and
//! then an auto-exposure step); and sensor noise. Frames are written as JPEG, as a camera
//! recording would be. The photo must be a tight, upright face crop like the apex faces of the
//! MEGC composite release: brows near 17 % of its height, eyes near 26 %, lip corners near 72 %.

use std::f32::consts::TAU;
use std::path::Path;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use serde::Serialize;

use super::casme2::write_jpeg;
use super::interview::{Blink, FRAMES_DIR, InterviewTruth, TRUTH_FILE};
use super::motion::Emotion;
use super::rng_for;
use super::scene::Event;
use crate::error::{Error, Result};
use crate::image::GrayImage;

#[derive(Debug, Clone, Serialize)]
pub struct PhotoClipOptions {
    pub seconds: f32,
    pub fps: f32,
    pub width: usize,
    pub height: usize,
    pub seed: u64,
}

impl Default for PhotoClipOptions {
    fn default() -> Self {
        PhotoClipOptions { seconds: 12.0, fps: 100.0, width: 640, height: 480, seed: 1 }
    }
}

/// Where the face's parts are in a tight face crop, as fractions of its width and height: the
/// centre and half-sizes that map the crop onto the face units of the action units.
const FACE_CENTRE: (f32, f32) = (0.5, 0.43);
const FACE_HALF: (f32, f32) = (0.52, 0.6);
/// Eye centres and half-sizes (fractions of the crop), for blinks.
const EYES: [(f32, f32); 2] = [(0.27, 0.26), (0.73, 0.26)];
const EYE_HALF: (f32, f32) = (0.1, 0.05);

/// The lighting of one frame, in grey levels of 0–255 (gain as a factor).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Light {
    pub gain: f32,
    pub offset: f32,
    /// Added at the face's right edge, subtracted at its left.
    pub gradient: f32,
}

/// Everything needed to render any frame of a clip deterministically.
#[derive(Debug, Clone)]
pub struct PhotoScene {
    pub width: usize,
    pub height: usize,
    pub fps: f32,
    pub frames: usize,
    photo: GrayImage,
    /// Top-left corner of the photo in the frame, and frame pixels per photo pixel.
    origin: (f32, f32),
    scale: f32,
    /// Face centre and half-sizes in frame pixels (the action units' face units).
    pub face: (f32, f32, f32, f32),
    pub events: Vec<Event>,
    /// (first frame, frames).
    pub blinks: Vec<(usize, usize)>,
    /// Head translation per frame, pixels.
    pub head: Vec<(f32, f32)>,
    pub light: Vec<Light>,
    pub noise_sigma: f32,
    pub seed: u64,
    background: Vec<f32>,
}

/// A smooth random signal: a sinusoid of random phase.
struct Wave {
    hz: f32,
    amplitude: f32,
    phase: f32,
}

impl Wave {
    fn random(rng: &mut ChaCha8Rng, hz: (f32, f32), amplitude: (f32, f32)) -> Wave {
        Wave { hz: rng.random_range(hz.0..hz.1), amplitude: rng.random_range(amplitude.0..amplitude.1), phase: rng.random_range(0.0..TAU) }
    }

    fn at(&self, seconds: f32) -> f32 {
        self.amplitude * (TAU * self.hz * seconds + self.phase).sin()
    }
}

impl PhotoScene {
    pub fn new(photo: &GrayImage, opts: &PhotoClipOptions) -> Result<PhotoScene> {
        if !(10.0..=1000.0).contains(&opts.fps) || !opts.seconds.is_finite() || opts.seconds <= 0.0 {
            return Err(Error::InvalidArgument("fps must lie in 10..=1000 and seconds must be positive".into()));
        }
        if opts.width < 160 || opts.height < 160 || opts.width > 8192 || opts.height > 8192 {
            return Err(Error::InvalidArgument("clip frames must be 160 to 8192 pixels on each side".into()));
        }
        if photo.width() < 32 || photo.height() < 32 {
            return Err(Error::InvalidArgument(format!("a {}×{} photo is too small for a face", photo.width(), photo.height())));
        }
        let frames = (opts.seconds * opts.fps).round().max(1.0) as usize;
        let secs = |s: f32| ((s * opts.fps).round() as usize).max(1);
        let mut rng = rng_for(opts.seed, 30, 0);
        let (w, h) = (opts.width as f32, opts.height as f32);
        // The face fills 42-52 % of the frame height, somewhere near the middle.
        let side = rng.random_range(0.42..0.52) * h;
        let scale = side / photo.height() as f32;
        let (pw, ph) = (photo.width() as f32 * scale, photo.height() as f32 * scale);
        let origin = ((w - pw) / 2.0 + rng.random_range(-0.08..0.08) * w, (h - ph) / 2.0 + rng.random_range(-0.06..0.06) * h);
        let face = (origin.0 + FACE_CENTRE.0 * pw, origin.1 + FACE_CENTRE.1 * ph, FACE_HALF.0 * pw, FACE_HALF.1 * ph);

        let mut events = Vec::new();
        let mut t = secs(rng.random_range(0.6..1.5));
        let mut k = rng.random_range(0..Emotion::CYCLE.len());
        loop {
            let rise = secs(rng.random_range(0.07..0.2));
            let fall = secs(rng.random_range(0.1..0.25));
            if t + rise + fall + secs(0.5) >= frames {
                break;
            }
            let emotion = Emotion::CYCLE[k % Emotion::CYCLE.len()];
            k += 1;
            let amplitude = rng.random_range(1.0..2.0);
            events.push(Event::new(&mut rng, emotion, (t, t + rise, t + rise + fall), amplitude, face.2));
            t += rise + fall + secs(rng.random_range(1.0..2.5));
        }
        // Blinks fall in the quiet stretches, at least 0.15 s from any expression.
        let mut blinks = Vec::new();
        let mut b = secs(rng.random_range(0.3..2.0));
        while b + secs(0.4) < frames {
            let len = secs(rng.random_range(0.15..0.3));
            let margin = secs(0.15);
            let clear = events.iter().all(|e: &Event| b + len + margin < e.onset || b > e.offset + margin);
            if clear {
                blinks.push((b, len));
                b += len + secs(rng.random_range(2.0..5.0));
            } else {
                b += secs(0.1);
            }
        }

        let mut rng = rng_for(opts.seed, 31, 0);
        let drift = [Wave::random(&mut rng, (0.05, 0.3), (0.5, 2.5)), Wave::random(&mut rng, (0.05, 0.3), (0.3, 1.5))];
        let step = Normal::new(0.0f32, 0.015).unwrap();
        let (mut jx, mut jy) = (0f32, 0f32);
        let head = (0..frames)
            .map(|t| {
                jx = (0.99 * jx + step.sample(&mut rng)).clamp(-0.4, 0.4);
                jy = (0.99 * jy + step.sample(&mut rng)).clamp(-0.4, 0.4);
                let s = t as f32 / opts.fps;
                (drift[0].at(s) + jx, drift[1].at(s) + jy)
            })
            .collect();

        let level = Wave::random(&mut rng, (0.03, 0.2), (1.0, 4.0));
        let gradient = Wave::random(&mut rng, (0.03, 0.2), (1.0, 3.0));
        let flicker = Wave::random(&mut rng, (0.5, 3.0), (0.0, 1.0));
        let exposure_step = rng.random_bool(0.5).then(|| {
            let at = rng.random_range(0.2..0.9) * frames as f32;
            let size = rng.random_range(0.01..0.03) * if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            (at, secs(rng.random_range(0.1..0.3)) as f32, size)
        });
        let light = (0..frames)
            .map(|t| {
                let s = t as f32 / opts.fps;
                let gain = 1.0 + exposure_step.map_or(0.0, |(at, ramp, size)| size * ((t as f32 - at) / ramp).clamp(0.0, 1.0));
                Light { gain, offset: level.at(s) + flicker.at(s), gradient: gradient.at(s) }
            })
            .collect();

        let bg_tone = rng.random_range(0.2..0.5f32);
        let (a, b) = (rng.random_range(0.01..0.03f32), rng.random_range(0.01..0.03f32));
        let background = (0..opts.width * opts.height)
            .map(|i| {
                let (x, y) = ((i % opts.width) as f32, (i / opts.width) as f32);
                bg_tone + 0.08 * (x * a).sin() * (y * b).cos() + 0.02 * ((x + y) * 0.2).sin()
            })
            .collect();
        Ok(PhotoScene {
            width: opts.width,
            height: opts.height,
            fps: opts.fps,
            frames,
            photo: photo.clone(),
            origin,
            scale,
            face,
            events,
            blinks,
            head,
            light,
            noise_sigma: rng.random_range(1.5..3.0) / 255.0,
            seed: opts.seed,
            background,
        })
    }

    /// How far each eye is closed in frame t, 0 (open) to 1 (shut).
    fn closure(&self, t: usize) -> f32 {
        self.blinks
            .iter()
            .filter(|&&(start, len)| (start..start + len).contains(&t))
            .map(|&(start, len)| 1.0 - (2.0 * (t - start) as f32 / len as f32 - 1.0).abs())
            .fold(0.0, f32::max)
    }

    /// The photo at (u, v) (photo pixels, bilinear, edges clamped) with the lids lowered by
    /// `closure`: inside an eye, the part above the closing line shows the lid, whose tone is
    /// the skin just above the eye.
    fn sample(&self, u: f32, v: f32, closure: f32) -> f32 {
        let (pw, ph) = (self.photo.width() as f32, self.photo.height() as f32);
        let mut value = bilinear(&self.photo, u, v);
        if closure > 0.0 {
            for (ex, ey) in EYES {
                let (dx, dy) = ((u / pw - ex) / EYE_HALF.0, (v / ph - ey) / EYE_HALF.1);
                let r2 = dx * dx + dy * dy;
                if r2 < 1.0 && dy < 2.0 * closure - 1.0 {
                    let lid = bilinear(&self.photo, u, (ey - 1.6 * EYE_HALF.1) * ph);
                    let soft = (1.0 - r2).min(0.25) / 0.25;
                    value += soft * (lid - value);
                }
            }
        }
        value
    }

    /// Renders frame t in [0, 1].
    pub fn render(&self, t: usize) -> GrayImage {
        assert!(t < self.frames, "frame {t} is past the end ({} frames)", self.frames);
        let (cx, cy, rx, ry) = self.face;
        let (pw, ph) = (self.photo.width() as f32, self.photo.height() as f32);
        let closure = self.closure(t);
        let active: Vec<(f32, &Event)> = self.events.iter().map(|e| (e.strength(t as f32), e)).filter(|(s, _)| *s > 0.0).collect();
        let (hx, hy) = self.head[t];
        let light = self.light[t];
        let noise = Normal::new(0.0f32, self.noise_sigma.max(1e-9)).unwrap();
        // A few photo pixels of feathering, so the photo's edge is not a hard step.
        let feather = 4.0;
        let mut data = self.background.clone();
        data.par_chunks_mut(self.width).enumerate().for_each(|(y, row)| {
            let mut rng = rng_for(self.seed, 32, (t * self.height + y) as u64);
            for (x, px) in row.iter_mut().enumerate() {
                let (mut mx, mut my) = (hx, hy);
                let (nx, ny) = ((x as f32 - cx) / rx, (y as f32 - cy) / ry);
                for (s, e) in &active {
                    let (dx, dy) = e.deformation().at(nx, ny);
                    mx += s * dx * rx;
                    my += s * dy * rx;
                }
                let u = (x as f32 - mx - self.origin.0) / self.scale;
                let v = (y as f32 - my - self.origin.1) / self.scale;
                let edge = u.min(v).min(pw - 1.0 - u).min(ph - 1.0 - v);
                if edge > 0.0 {
                    let alpha = (edge / feather).min(1.0);
                    *px += alpha * (self.sample(u, v, closure) - *px);
                }
                let lit = *px + (light.offset + light.gradient * ((x as f32 - cx) / rx).clamp(-1.5, 1.5)) / 255.0;
                *px = (lit * light.gain + noise.sample(&mut rng)).clamp(0.0, 1.0);
            }
        });
        GrayImage::new(self.width, self.height, data).expect("sizes match")
    }
}

fn bilinear(img: &GrayImage, u: f32, v: f32) -> f32 {
    let (w, h) = (img.width(), img.height());
    let u = u.clamp(0.0, (w - 1) as f32);
    let v = v.clamp(0.0, (h - 1) as f32);
    let (x0, y0) = (u.floor() as usize, v.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (u - x0 as f32, v - y0 as f32);
    let top = img.get(x0, y0) + fx * (img.get(x1, y0) - img.get(x0, y0));
    let bottom = img.get(x0, y1) + fx * (img.get(x1, y1) - img.get(x0, y1));
    top + fy * (bottom - top)
}

/// What a photo clip's `truth.json` holds: `mer synth interview`'s fields (so the interview
/// loaders read it) plus the photo and the nuisances drawn.
#[derive(Debug, Clone, Serialize)]
pub struct PhotoClipTruth {
    /// The face box is the photo's place before head motion.
    #[serde(flatten)]
    pub clip: InterviewTruth,
    /// The photo's file name.
    pub photo: String,
    /// Largest head displacement from the start, pixels.
    pub head_travel_px: f32,
    /// Range of the lighting's level over the clip (offset plus gradient at the face's edge, times gain), grey levels.
    pub light_range: f32,
    pub exposure_step: bool,
    pub noise_sigma: f32,
}

/// Writes a clip made from `photo` (named `photo_name` in the truth) into `out`: numbered JPEG
/// frames under `frames/` and `truth.json`; `progress` is called once per frame.
pub fn write_photo_clip(
    out: &Path,
    photo: &GrayImage,
    photo_name: &str,
    opts: &PhotoClipOptions,
    progress: &(dyn Fn() + Sync),
) -> Result<PhotoClipTruth> {
    let scene = PhotoScene::new(photo, opts)?;
    let dir = out.join(FRAMES_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    for t in 0..scene.frames {
        write_jpeg(&scene.render(t), &dir.join(format!("{t:06}.jpg")), 90)?;
        progress();
    }
    let truth = scene.truth(photo_name);
    let path = out.join(TRUTH_FILE);
    crate::atomic_file::write(&path, serde_json::to_string_pretty(&truth).expect("plain data").as_bytes())?;
    Ok(truth)
}

impl PhotoScene {
    pub fn truth(&self, photo_name: &str) -> PhotoClipTruth {
        let (x, y) = (self.origin.0.max(0.0) as usize, self.origin.1.max(0.0) as usize);
        let side = |n: usize| (n as f32 * self.scale) as usize;
        let (h0x, h0y) = self.head[0];
        let head_travel_px = self.head.iter().map(|&(hx, hy)| (hx - h0x).hypot(hy - h0y)).fold(0.0, f32::max);
        let levels: Vec<f32> = self.light.iter().map(|l| l.gain * (128.0 + l.offset + l.gradient.abs())).collect();
        let light_range = levels.iter().cloned().fold(f32::MIN, f32::max) - levels.iter().cloned().fold(f32::MAX, f32::min);
        PhotoClipTruth {
            clip: InterviewTruth {
                fps: self.fps,
                width: self.width,
                height: self.height,
                frames: self.frames,
                face_box: [x, y, side(self.photo.width()), side(self.photo.height())],
                events: self.events.clone(),
                blinks: self.blinks.iter().map(|&(start_frame, frames)| Blink { start_frame, frames }).collect(),
                seed: self.seed,
                frame_pattern: format!("{FRAMES_DIR}/{{frame:06}}.jpg"),
            },
            photo: photo_name.to_string(),
            head_travel_px,
            light_range,
            exposure_step: self.light.first().zip(self.light.last()).is_some_and(|(a, b)| a.gain != b.gain),
            noise_sigma: self.noise_sigma * 255.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo() -> GrayImage {
        GrayImage::from_fn(64, 64, |x, y| 0.3 + 0.4 * ((x as f32 * 0.3).sin() * (y as f32 * 0.2).cos()).abs())
    }

    #[test]
    fn scenes_are_deterministic_and_hold_expressions_blinks_and_nuisances() {
        let opts = PhotoClipOptions { seconds: 8.0, fps: 50.0, width: 320, height: 240, seed: 7 };
        let scene = PhotoScene::new(&photo(), &opts).unwrap();
        assert_eq!(scene.frames, 400);
        assert!(scene.events.len() >= 3, "{} events", scene.events.len());
        for e in &scene.events {
            assert!(e.onset < e.apex && e.apex < e.offset && e.offset < scene.frames);
            assert!(scene.blinks.iter().all(|&(b, n)| b + n < e.onset || b > e.offset), "a blink overlaps {e:?}");
        }
        assert_eq!(scene.render(123).data(), PhotoScene::new(&photo(), &opts).unwrap().render(123).data());
        let truth = scene.truth("p.jpg");
        assert!(truth.head_travel_px > 0.1 && truth.light_range > 0.5, "{truth:?}");
    }

    #[test]
    fn an_expression_moves_the_face_and_nothing_else() {
        let opts = PhotoClipOptions { seconds: 8.0, fps: 50.0, width: 320, height: 240, seed: 3 };
        let mut scene = PhotoScene::new(&photo(), &opts).unwrap();
        // Without head motion, lighting or noise, frames differ only where the face moves.
        scene.head.iter_mut().for_each(|h| *h = (0.0, 0.0));
        scene.light.iter_mut().for_each(|l| *l = Light { gain: 1.0, offset: 0.0, gradient: 0.0 });
        scene.noise_sigma = 0.0;
        let e = scene.events[0].clone();
        let (before, apex) = (scene.render(e.onset - 1), scene.render(e.apex));
        let changed: Vec<usize> = (0..before.data().len()).filter(|&i| (before.data()[i] - apex.data()[i]).abs() > 1e-4).collect();
        assert!(!changed.is_empty());
        let (cx, cy, rx, ry) = scene.face;
        for i in changed {
            let (x, y) = ((i % 320) as f32, (i / 320) as f32);
            assert!(((x - cx) / rx).abs() < 1.6 && ((y - cy) / ry).abs() < 1.6, "pixel ({x}, {y}) changed");
        }
    }

    #[test]
    fn bad_options_are_refused() {
        let opts = PhotoClipOptions { fps: 0.0, ..PhotoClipOptions::default() };
        assert!(PhotoScene::new(&photo(), &opts).is_err());
        let opts = PhotoClipOptions { width: 1 << 20, ..PhotoClipOptions::default() };
        assert!(PhotoScene::new(&photo(), &opts).is_err());
        assert!(PhotoScene::new(&GrayImage::filled(8, 8, 0.5), &PhotoClipOptions::default()).is_err());
    }
}
