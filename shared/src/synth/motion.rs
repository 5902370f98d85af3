//! Facial action units as smooth local displacement fields, and emotions as AU combinations.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// The action units the generator can render (FACS numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionUnit {
    Au1InnerBrowRaiser,
    Au2OuterBrowRaiser,
    Au4BrowLowerer,
    Au5UpperLidRaiser,
    Au6CheekRaiser,
    Au7LidTightener,
    Au9NoseWrinkler,
    Au10UpperLipRaiser,
    Au12LipCornerPuller,
    Au14Dimpler,
    Au15LipCornerDepressor,
    Au17ChinRaiser,
    Au20LipStretcher,
    Au26JawDrop,
}

impl ActionUnit {
    pub fn number(self) -> u8 {
        use ActionUnit::*;
        match self {
            Au1InnerBrowRaiser => 1,
            Au2OuterBrowRaiser => 2,
            Au4BrowLowerer => 4,
            Au5UpperLidRaiser => 5,
            Au6CheekRaiser => 6,
            Au7LidTightener => 7,
            Au9NoseWrinkler => 9,
            Au10UpperLipRaiser => 10,
            Au12LipCornerPuller => 12,
            Au14Dimpler => 14,
            Au15LipCornerDepressor => 15,
            Au17ChinRaiser => 17,
            Au20LipStretcher => 20,
            Au26JawDrop => 26,
        }
    }

    /// Gaussian bumps (centre, radius, direction) in face units; mirrored ones come in pairs.
    fn bumps(self) -> Vec<Bump> {
        use ActionUnit::*;
        let pair = |x: f32, y: f32, s: f32, dx: f32, dy: f32| vec![Bump::new(x, y, s, dx, dy), Bump::new(-x, y, s, -dx, dy)];
        match self {
            Au1InnerBrowRaiser => pair(0.2, -0.42, 0.13, 0.0, -1.0),
            Au2OuterBrowRaiser => pair(0.46, -0.44, 0.13, 0.0, -1.0),
            Au4BrowLowerer => pair(0.22, -0.4, 0.14, -0.45, 0.9),
            Au5UpperLidRaiser => pair(0.33, -0.3, 0.08, 0.0, -1.0),
            Au6CheekRaiser => pair(0.4, 0.05, 0.16, 0.0, -1.0),
            Au7LidTightener => pair(0.33, -0.15, 0.07, 0.0, -1.0),
            Au9NoseWrinkler => pair(0.12, -0.02, 0.1, 0.0, -1.0),
            Au10UpperLipRaiser => pair(0.12, 0.38, 0.1, 0.0, -1.0),
            Au12LipCornerPuller => pair(0.3, 0.48, 0.12, 0.8, -0.6),
            Au14Dimpler => pair(0.33, 0.47, 0.08, 0.9, 0.0),
            Au15LipCornerDepressor => pair(0.3, 0.52, 0.12, 0.0, 1.0),
            Au17ChinRaiser => vec![Bump::new(0.0, 0.75, 0.18, 0.0, -1.0)],
            Au20LipStretcher => pair(0.3, 0.5, 0.12, 1.0, 0.1),
            Au26JawDrop => vec![Bump::new(0.0, 0.68, 0.28, 0.0, 1.0)],
        }
    }
}

/// Emotion categories of CASME II's coding sheet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Emotion {
    Happiness,
    Surprise,
    Disgust,
    Repression,
    Others,
    Sadness,
    Fear,
}

impl Emotion {
    pub fn name(self) -> &'static str {
        match self {
            Emotion::Happiness => "happiness",
            Emotion::Surprise => "surprise",
            Emotion::Disgust => "disgust",
            Emotion::Repression => "repression",
            Emotion::Others => "others",
            Emotion::Sadness => "sadness",
            Emotion::Fear => "fear",
        }
    }

    /// A cycle with roughly CASME II's class proportions (others and disgust most common).
    pub const CYCLE: [Emotion; 10] = [
        Emotion::Others,
        Emotion::Disgust,
        Emotion::Happiness,
        Emotion::Surprise,
        Emotion::Repression,
        Emotion::Others,
        Emotion::Disgust,
        Emotion::Fear,
        Emotion::Happiness,
        Emotion::Sadness,
    ];

    /// The action units of one instance; "others" is deliberately a loose mix that overlaps
    /// the other classes, so the task is learnable but not trivial.
    pub fn action_units(self, rng: &mut impl Rng) -> Vec<ActionUnit> {
        use ActionUnit::*;
        match self {
            Emotion::Happiness => vec![Au6CheekRaiser, Au12LipCornerPuller],
            Emotion::Surprise => {
                let mut a = vec![Au1InnerBrowRaiser, Au2OuterBrowRaiser, Au5UpperLidRaiser];
                if rng.random_bool(0.4) {
                    a.push(Au26JawDrop);
                }
                a
            }
            Emotion::Disgust => vec![Au9NoseWrinkler, Au10UpperLipRaiser, Au4BrowLowerer],
            Emotion::Repression => {
                let mut a = vec![Au15LipCornerDepressor, Au17ChinRaiser];
                if rng.random_bool(0.5) {
                    a.push(Au14Dimpler);
                }
                a
            }
            Emotion::Others => {
                let pool = [Au4BrowLowerer, Au7LidTightener, Au14Dimpler, Au1InnerBrowRaiser, Au17ChinRaiser];
                let first = pool[rng.random_range(0..pool.len())];
                let mut a = vec![first];
                let second = pool[rng.random_range(0..pool.len())];
                if second != first && rng.random_bool(0.3) {
                    a.push(second);
                }
                a
            }
            Emotion::Sadness => vec![Au1InnerBrowRaiser, Au4BrowLowerer, Au15LipCornerDepressor],
            Emotion::Fear => vec![Au1InnerBrowRaiser, Au2OuterBrowRaiser, Au4BrowLowerer, Au20LipStretcher],
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bump {
    x: f32,
    y: f32,
    inv_two_s2: f32,
    reach2: f32,
    dx: f32,
    dy: f32,
}

impl Bump {
    fn new(x: f32, y: f32, s: f32, dx: f32, dy: f32) -> Bump {
        let n = (dx * dx + dy * dy).sqrt().max(1e-6);
        Bump { x, y, inv_two_s2: 1.0 / (2.0 * s * s), reach2: (3.5 * s) * (3.5 * s), dx: dx / n, dy: dy / n }
    }
}

/// A displacement field in face units: a sum of weighted Gaussian bumps.
#[derive(Debug, Clone, Default)]
pub struct Deformation {
    bumps: Vec<(Bump, f32)>,
}

impl Deformation {
    /// `gain` per AU is the peak displacement in face units at amplitude 1.
    pub fn from_action_units(aus: &[(ActionUnit, f32)]) -> Deformation {
        let mut bumps = Vec::new();
        for &(au, gain) in aus {
            for b in au.bumps() {
                bumps.push((b, gain));
            }
        }
        Deformation { bumps }
    }

    /// Displacement (face units) at a face-normalised point.
    pub fn at(&self, nx: f32, ny: f32) -> (f32, f32) {
        let (mut ux, mut uy) = (0.0, 0.0);
        for (b, gain) in &self.bumps {
            let d2 = (nx - b.x).powi(2) + (ny - b.y).powi(2);
            if d2 < b.reach2 {
                let g = gain * (-d2 * b.inv_two_s2).exp();
                ux += g * b.dx;
                uy += g * b.dy;
            }
        }
        (ux, uy)
    }
}
