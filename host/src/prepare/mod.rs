//! Building blocks of dataset preparation: where the face is in a clip ([`face`]) and where
//! the prepared model inputs are kept between runs ([`cache`]).

pub mod cache;
pub mod face;
pub mod pipeline;

pub use cache::{CacheKey, PreparationCache, PreparedSample, PreparedSet};
pub use face::{CropMode, DetectorSettings, FaceBox, FaceDetector, Margin};
