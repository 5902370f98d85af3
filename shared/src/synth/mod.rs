//! Synthetic micro-expressions: the embedded default data for demos and tests.
//!
//! Procedurally rendered gray faces (a per-subject identity), moved by smooth local
//! deformations modelled on facial action units, with onset→apex→offset timing, sensor noise,
//! illumination flicker, head jitter and blinks as distractors. Every frame is rendered from the
//! analytic face, so the true flow between any two frames is known.

pub mod casme2;
mod face;
pub mod interview;
mod motion;
pub mod photo;
mod scene;

pub use face::FaceIdentity;
pub use motion::{ActionUnit, Emotion};
pub use scene::{Event, Scene};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A reproducible random stream for one (seed, purpose, index) triple, independent of how
/// many other streams were drawn.
pub(crate) fn rng_for(seed: u64, purpose: u64, index: u64) -> ChaCha8Rng {
    let mut z = seed ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    // splitmix64 finaliser spreads nearby seeds apart
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ChaCha8Rng::seed_from_u64(z ^ (z >> 31))
}

/// Random stream for the `index`-th standalone frame pair (benchmarks, reference tests).
pub fn pair_rng(seed: u64, index: u64) -> ChaCha8Rng {
    rng_for(seed, 30, index)
}
