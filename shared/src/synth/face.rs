//! A procedural gray face with a per-subject identity, defined analytically so it can be
//! sampled at any sub-pixel position.

use rand::Rng;

/// One sinusoidal texture component (frequency in face units, phase, amplitude).
#[derive(Debug, Clone)]
struct Wave {
    fx: f32,
    fy: f32,
    phase: f32,
    amp: f32,
}

/// Geometry and appearance of one synthetic subject. Coordinates are face-normalised:
/// the face box spans [-1, 1] on both axes, x to the right, y downwards.
#[derive(Debug, Clone)]
pub struct FaceIdentity {
    pub tone: f32,
    pub eye: (f32, f32),
    pub eye_size: (f32, f32),
    pub brow: (f32, f32),
    pub brow_size: (f32, f32),
    pub nostril: (f32, f32),
    pub mouth: (f32, f32),
    pub mouth_size: (f32, f32),
    pub face_radius: (f32, f32),
    texture: Vec<Wave>,
}

fn smoothstep(edge: f32, d: f32) -> f32 {
    // 1 inside (d < 0), 0 outside, soft over `edge`
    (0.5 - d / edge).clamp(0.0, 1.0)
}

impl FaceIdentity {
    pub fn random(rng: &mut impl Rng) -> FaceIdentity {
        let mut j = |base: f32, spread: f32| base + rng.random_range(-spread..=spread);
        let tone = j(0.62, 0.08);
        let eye = (j(0.33, 0.03), j(-0.22, 0.03));
        let eye_size = (j(0.13, 0.015), j(0.06, 0.01));
        let brow = (j(0.34, 0.03), j(-0.43, 0.03));
        let brow_size = (j(0.17, 0.02), j(0.035, 0.008));
        let nostril = (j(0.08, 0.01), j(0.2, 0.03));
        let mouth = (j(0.0, 0.01), j(0.5, 0.04));
        let mouth_size = (j(0.27, 0.03), j(0.06, 0.01));
        let face_radius = (j(0.82, 0.04), j(0.98, 0.02));
        let texture = (0..16)
            .map(|k| {
                // a few broad shading waves and many skin-scale ones (periods of a few pixels
                // on a 60-px half-face), which TV-L1 needs to see motion
                let broad = k < 4;
                let f = if broad { rng.random_range(2.0..6.0) } else { rng.random_range(25.0..80.0) };
                let angle: f32 = rng.random_range(0.0..std::f32::consts::TAU);
                Wave {
                    fx: f * angle.cos(),
                    fy: f * angle.sin(),
                    phase: rng.random_range(0.0..std::f32::consts::TAU),
                    amp: if broad { rng.random_range(0.02..0.05) } else { rng.random_range(0.012..0.03) },
                }
            })
            .collect();
        FaceIdentity { tone, eye, eye_size, brow, brow_size, nostril, mouth, mouth_size, face_radius, texture }
    }

    /// Intensity and coverage (alpha) of the face at a face-normalised point; `blink` in [0, 1]
    /// closes the eyes.
    pub fn shade(&self, nx: f32, ny: f32, blink: f32) -> (f32, f32) {
        let (rx, ry) = self.face_radius;
        let r = ((nx / rx).powi(2) + (ny / ry).powi(2)).sqrt();
        let alpha = smoothstep(0.04, r - 1.0);
        if alpha <= 0.0 {
            return (0.0, 0.0);
        }
        let mut v = self.tone + 0.08 * (1.0 - r * r).max(0.0);
        for w in &self.texture {
            v += w.amp * (w.fx * nx + w.fy * ny + w.phase).sin();
        }
        let ax = nx.abs();
        // brows: dark bars, slightly arched
        let (bx, by) = self.brow;
        let (bw, bh) = self.brow_size;
        let arch = 0.04 * (1.0 - ((ax - bx) / bw).powi(2)).max(0.0);
        let db = (((ax - bx) / bw).powi(2) + ((ny - by + arch) / bh).powi(2)).sqrt();
        v = mix(v, 0.22, smoothstep(0.25, db - 1.0));
        // eyes: sclera, iris and lid line; a blink shrinks the opening
        let (ex, ey) = self.eye;
        let (ew, eh) = self.eye_size;
        let open = (1.0 - blink).max(0.05);
        let de = (((ax - ex) / ew).powi(2) + ((ny - ey) / (eh * open)).powi(2)).sqrt();
        let eye_in = smoothstep(0.2, de - 1.0);
        let di = ((ax - ex).powi(2) + (ny - ey).powi(2)).sqrt() / (0.45 * eh.max(0.02) * 1.6);
        let iris = smoothstep(0.3, di - 1.0);
        v = mix(v, mix(0.85, 0.15, iris), eye_in);
        let lid = (((ax - ex) / (ew * 1.05)).powi(2) + ((ny - ey + eh * open) / (0.02)).powi(2)).sqrt();
        v = mix(v, 0.25, 0.7 * smoothstep(0.3, lid - 1.0));
        // nose: a soft ridge and two nostrils
        let (nxo, nyo) = self.nostril;
        v += 0.05 * (-((nx / 0.05).powi(2))).exp() * (1.0 - ((ny - 0.0) / 0.25).powi(2)).max(0.0);
        let dn = (((ax - nxo) / 0.04).powi(2) + ((ny - nyo) / 0.025).powi(2)).sqrt();
        v = mix(v, 0.2, smoothstep(0.3, dn - 1.0));
        // mouth: lips and the dark line between them
        let (mx, my) = self.mouth;
        let (mw, mh) = self.mouth_size;
        let dm = (((nx - mx) / mw).powi(2) + ((ny - my) / mh).powi(2)).sqrt();
        v = mix(v, v * 0.7, smoothstep(0.2, dm - 1.0));
        let line = (((nx - mx) / (mw * 0.95)).powi(2) + ((ny - my) / 0.012).powi(2)).sqrt();
        v = mix(v, 0.18, smoothstep(0.4, line - 1.0));
        (v, alpha)
    }
}

fn mix(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}
