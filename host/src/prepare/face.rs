//! How a clip's face region is chosen for preparation: detected once on the clip's reference
//! frame with `mer_shared::face`, given by the user, or the whole frame.

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, anyhow};
use mer_shared::GrayImage;
pub use mer_shared::face::{DetectorSettings, FaceBox, FaceDetector, Margin};
use serde::{Deserialize, Serialize};

/// How a clip's face region is chosen; the same box is applied to all its frames (as the
/// reference pipeline does), so the crop itself adds no motion between frames.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CropMode {
    /// Run the face detector on the clip's reference frame (its onset).
    Detect,
    /// Use whole frames: for datasets that ship cropped faces.
    None,
    /// The same box for every clip, in pixels.
    Fixed(FaceBox),
}

impl CropMode {
    /// The box to cut every frame of a clip with, chosen on its `reference` frame; `None`
    /// means the whole frame.
    pub fn region(&self, reference: &GrayImage, detector: &mut FaceDetector) -> Result<Option<FaceBox>> {
        match self {
            CropMode::None => Ok(None),
            CropMode::Fixed(b) => Ok(Some(*b)),
            CropMode::Detect => detector.face_region(reference).map(Some).ok_or_else(|| {
                anyhow!(
                    "no face found in the {}x{} reference frame (score threshold {}, faces of at least {} px); \
                     give a fixed box (x,y,w,h) or use whole frames (none) for this dataset",
                    reference.width(),
                    reference.height(),
                    detector.settings().score_threshold,
                    detector.settings().min_face(reference.width(), reference.height())
                )
            }),
        }
    }
}

impl fmt::Display for CropMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CropMode::Detect => f.write_str("detect"),
            CropMode::None => f.write_str("none"),
            CropMode::Fixed(b) => write!(f, "{b}"),
        }
    }
}

impl FromStr for CropMode {
    type Err = anyhow::Error;

    /// `detect`, `none`, or `x,y,w,h` in pixels.
    fn from_str(s: &str) -> Result<Self> {
        let text = s.trim();
        match text.to_ascii_lowercase().as_str() {
            "detect" => return Ok(CropMode::Detect),
            "none" => return Ok(CropMode::None),
            _ => {}
        }
        text.parse::<FaceBox>().map(CropMode::Fixed).map_err(|e| anyhow!("{e}; or `detect` or `none` for --crop"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clip_without_a_face_asks_for_another_crop_mode() {
        let mut det = FaceDetector::new().unwrap();
        let err = CropMode::Detect.region(&GrayImage::filled(64, 64, 0.5), &mut det).unwrap_err().to_string();
        assert!(err.contains("no face") && err.contains("64x64") && err.contains("fixed box"), "{err}");
        let fixed = FaceBox { x: 1, y: 2, width: 3, height: 4, score: 0.0 };
        assert_eq!(CropMode::Fixed(fixed).region(&GrayImage::filled(8, 8, 0.5), &mut det).unwrap(), Some(fixed));
        assert_eq!(CropMode::None.region(&GrayImage::filled(8, 8, 0.5), &mut det).unwrap(), None);
    }

    #[test]
    fn crop_modes_parse_and_print() {
        assert_eq!("detect".parse::<CropMode>().unwrap(), CropMode::Detect);
        assert_eq!(" None ".parse::<CropMode>().unwrap(), CropMode::None);
        let fixed: CropMode = "10, 20,300,400".parse().unwrap();
        assert_eq!(fixed, CropMode::Fixed(FaceBox { x: 10, y: 20, width: 300, height: 400, score: 0.0 }));
        assert_eq!(fixed.to_string(), "10,20,300,400");
        assert_eq!(fixed.to_string().parse::<CropMode>().unwrap(), fixed);
        for (bad, needle) in [
            ("detected", "\"detected\""),
            ("1,2,3", "x,y,w,h"),
            ("1,2,3,4,5", "x,y,w,h"),
            ("1,-2,3,4", "y = \"-2\""),
            ("1,2,3.5,4", "w = \"3.5\""),
            ("1,2,0,4", "zero width"),
            ("", "x,y,w,h"),
        ] {
            let err = bad.parse::<CropMode>().unwrap_err().to_string();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }
}
