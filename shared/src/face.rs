//! Face boxes: the SeetaFace frontal detector (rustface) with its model embedded in the binary,
//! the margin that turns its box into the crop region (cut and resized by `input::face_crop`). The host finds a clip's
//! face once on a reference frame, as the reference pipeline does with its RetinaFace box before
//! resizing to 128×128; the device tracks the face in the live stream with the same detector.
//!
//! # What the box covers
//! SeetaFace boxes are square. On the faces of the rustface group photo they run from the
//! middle of the forehead to just below the mouth, and from cheek to cheek: the hairline and
//! most of the chin fall outside. RetinaFace boxes (WIDER FACE convention) reach the hairline
//! and the bottom of the chin and are taller than wide. The default
//! [`DetectorSettings::margin`] grows the detector box by 15 % of its size at the top, 10 %
//! at the bottom and 5 % at each side — estimated by eye on that photo, to be re-checked on
//! real dataset frames — so the crop holds the forehead (AU1/AU2/AU4) and the chin (AU17).
//! Like the reference crop, the result is a little taller than wide, and the resize to the
//! model's square face squashes it the same way.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::image::{Interpolation, resize};
use crate::{Error, GrayImage, Result};

/// SeetaFace frontal model, copied out of the rustface package by build.rs.
static MODEL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seeta_fd_frontal_v1.0.bin"));

/// Side of the detector's sliding window at scale 1. rustface 0.1.7 ignores its own
/// min-face setting (it never enlarges the image), so faces smaller than this are missed
/// unless the image is scaled up first; see [`FaceDetector::detect`].
const WINDOW: usize = 40;

/// An axis-aligned face box in pixels of the frame it was found in.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FaceBox {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
    /// Detector confidence; 0 for boxes given by the user.
    pub score: f64,
}

impl FaceBox {
    pub fn area(&self) -> usize {
        self.width * self.height
    }

    /// The part of the box inside a `width`×`height` image, or None when nothing is left.
    pub fn clipped(&self, width: usize, height: usize) -> Option<FaceBox> {
        let x1 = self.x.saturating_add(self.width).min(width);
        let y1 = self.y.saturating_add(self.height).min(height);
        (self.x < x1 && self.y < y1).then(|| FaceBox { width: x1 - self.x, height: y1 - self.y, ..*self })
    }

    /// The box grown by `margin` (fractions of its own size, per side), clipped to the image.
    pub fn expanded(&self, margin: &Margin, width: usize, height: usize) -> Option<FaceBox> {
        let (x, y, w, h) = (self.x as f64, self.y as f64, self.width as f64, self.height as f64);
        let x0 = (x - (w * margin.side).round()).clamp(0.0, width as f64) as usize;
        let x1 = (x + w + (w * margin.side).round()).clamp(0.0, width as f64) as usize;
        let y0 = (y - (h * margin.top).round()).clamp(0.0, height as f64) as usize;
        let y1 = (y + h + (h * margin.bottom).round()).clamp(0.0, height as f64) as usize;
        (x0 < x1 && y0 < y1).then_some(FaceBox { x: x0, y: y0, width: x1 - x0, height: y1 - y0, score: self.score })
    }
}

impl fmt::Display for FaceBox {
    /// `x,y,w,h`, the form the command line takes a box in.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{},{}", self.x, self.y, self.width, self.height)
    }
}

impl std::str::FromStr for FaceBox {
    type Err = Error;

    /// `x,y,w,h` in whole pixels, as `--crop` and `--roi` take a box.
    fn from_str(s: &str) -> Result<FaceBox> {
        let usage = "a face box is x,y,w,h in whole pixels (e.g. 120,60,400,400)";
        let parts: Vec<&str> = s.trim().split(',').map(str::trim).collect();
        if parts.len() != 4 {
            return Err(Error::InvalidArgument(format!("{usage}; got {s:?}")));
        }
        let mut v = [0usize; 4];
        for (slot, (part, name)) in v.iter_mut().zip(parts.iter().zip(["x", "y", "w", "h"])) {
            *slot = part
                .parse()
                .map_err(|_| Error::InvalidArgument(format!("{usage}; {name} = {part:?} in {s:?} is not a whole number of pixels")))?;
        }
        if v[2] == 0 || v[3] == 0 {
            return Err(Error::InvalidArgument(format!("{usage}; the box {s:?} has zero width or height")));
        }
        Ok(FaceBox { x: v[0], y: v[1], width: v[2], height: v[3], score: 0.0 })
    }
}

/// How far the crop reaches beyond the detector box, as fractions of the box size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Margin {
    /// Added on the left and on the right.
    pub side: f64,
    pub top: f64,
    pub bottom: f64,
}

impl Margin {
    pub const NONE: Margin = Margin { side: 0.0, top: 0.0, bottom: 0.0 };
}

/// Detector settings. They determine the crops, so they are part of the preparation cache key.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DetectorSettings {
    /// Smallest face searched for, as a fraction of the shorter image side. Micro-expression
    /// clips show one face filling much of the frame, so small faces are background noise.
    pub min_face_fraction: f64,
    /// Floor of the smallest face size, pixels (SeetaFace's own lower limit is 20).
    pub min_face_px: usize,
    /// Detections scoring below this are dropped (rustface suggests 0.95, 2.8 or 4.5).
    pub score_threshold: f64,
    /// Ratio between adjacent image-pyramid scales, in (0.01, 0.99).
    pub pyramid_scale: f32,
    /// Sliding-window step in pixels of each pyramid level.
    pub step: u32,
    /// Growth of the detector box into the crop; see the module documentation.
    pub margin: Margin,
}

impl Default for DetectorSettings {
    fn default() -> Self {
        DetectorSettings {
            min_face_fraction: 0.2,
            min_face_px: 20,
            score_threshold: 2.0,
            pyramid_scale: 0.8,
            step: 4,
            margin: Margin { side: 0.05, top: 0.15, bottom: 0.10 },
        }
    }
}

impl DetectorSettings {
    /// rustface panics on values outside its ranges; this says what is wrong instead.
    pub fn validate(&self) -> Result<()> {
        if !(self.min_face_fraction >= 0.0 && self.min_face_fraction <= 1.0) {
            return Err(Error::InvalidArgument(format!("detector min_face_fraction must lie in [0, 1], got {}", self.min_face_fraction)));
        }
        if self.min_face_px < 20 {
            return Err(Error::InvalidArgument(format!(
                "detector min_face_px must be at least 20 (SeetaFace's limit), got {}",
                self.min_face_px
            )));
        }
        if !(self.score_threshold > 0.0 && self.score_threshold.is_finite()) {
            return Err(Error::InvalidArgument(format!("detector score_threshold must be positive, got {}", self.score_threshold)));
        }
        if !(self.pyramid_scale >= 0.01 && self.pyramid_scale <= 0.99) {
            return Err(Error::InvalidArgument(format!("detector pyramid_scale must lie in [0.01, 0.99], got {}", self.pyramid_scale)));
        }
        if self.step == 0 {
            return Err(Error::InvalidArgument("detector step must be at least 1 pixel".into()));
        }
        let m = self.margin;
        if [m.side, m.top, m.bottom].iter().any(|v| !(*v >= 0.0 && *v <= 2.0)) {
            return Err(Error::InvalidArgument(format!("detector margins must lie in [0, 2] (fractions of the box size), got {m:?}")));
        }
        Ok(())
    }

    /// Smallest face size searched for in a `width`×`height` image, pixels.
    pub fn min_face(&self, width: usize, height: usize) -> usize {
        ((width.min(height) as f64 * self.min_face_fraction).round() as usize).max(self.min_face_px)
    }
}

/// The SeetaFace frontal detector with the model embedded in the binary.
///
/// Not `Send` (rustface hands out a plain trait object); building one takes about a
/// millisecond, so parallel code creates one per job.
pub struct FaceDetector {
    inner: Box<dyn rustface::Detector>,
    settings: DetectorSettings,
}

impl FaceDetector {
    pub fn new() -> Result<Self> {
        Self::with_settings(DetectorSettings::default())
    }

    pub fn with_settings(settings: DetectorSettings) -> Result<Self> {
        settings.validate()?;
        let model = rustface::read_model(MODEL).map_err(|e| Error::Model(format!("reading the embedded SeetaFace model: {e}")))?;
        let mut inner = rustface::create_detector_with_model(model);
        inner.set_min_face_size(20);
        inner.set_score_thresh(settings.score_threshold);
        inner.set_pyramid_scale_factor(settings.pyramid_scale);
        inner.set_slide_window_step(settings.step, settings.step);
        Ok(FaceDetector { inner, settings })
    }

    pub fn settings(&self) -> &DetectorSettings {
        &self.settings
    }

    /// All faces of at least [`DetectorSettings::min_face`] pixels, best score first, clipped
    /// to the image.
    ///
    /// The image is first scaled so that the smallest wanted face fills the detector's
    /// 40-pixel window: shrinking skips the levels that could only find tiny faces (a
    /// 640×480 frame is searched at 267×200), enlarging finds faces of 20–40 pixels.
    pub fn detect(&mut self, img: &GrayImage) -> Vec<FaceBox> {
        let (w, h) = (img.width(), img.height());
        let scale = WINDOW as f64 / self.settings.min_face(w, h) as f64;
        let (sw, sh) = (((w as f64 * scale).round() as usize).max(1), ((h as f64 * scale).round() as usize).max(1));
        if sw.min(sh) < WINDOW {
            return Vec::new();
        }
        let scaled = if (sw, sh) == (w, h) {
            img.to_u8()
        } else {
            let interp = if scale < 1.0 { Interpolation::Area } else { Interpolation::Bilinear };
            resize(img, sw, sh, interp).to_u8()
        };
        let image = rustface::ImageData::new(&scaled, sw as u32, sh as u32);
        let (fx, fy) = (w as f64 / sw as f64, h as f64 / sh as f64);
        let mut faces: Vec<FaceBox> = self
            .inner
            .detect(&image)
            .into_iter()
            .filter_map(|info| {
                let b = info.bbox();
                // Refined boxes may start left of or above the image; keep the part inside.
                let (x0, y0) = (b.x() as f64 * fx, b.y() as f64 * fy);
                let (x1, y1) = (x0 + b.width() as f64 * fx, y0 + b.height() as f64 * fy);
                let (x0, y0) = (x0.round().max(0.0) as usize, y0.round().max(0.0) as usize);
                let (x1, y1) = (x1.round().max(0.0) as usize, y1.round().max(0.0) as usize);
                if x1 <= x0 || y1 <= y0 {
                    return None;
                }
                FaceBox { x: x0, y: y0, width: x1 - x0, height: y1 - y0, score: info.score() }.clipped(w, h)
            })
            .collect();
        faces.sort_by(|a, b| b.score.total_cmp(&a.score));
        faces
    }

    /// The largest detected face (ties: the higher score). In a micro-expression clip the
    /// subject is the largest face; the largest box is also the least likely false positive.
    pub fn largest(&mut self, img: &GrayImage) -> Option<FaceBox> {
        self.detect(img).into_iter().max_by(|a, b| a.area().cmp(&b.area()).then(a.score.total_cmp(&b.score)))
    }

    /// The crop region: the largest face grown by the settings' margin.
    pub fn face_region(&mut self, img: &GrayImage) -> Option<FaceBox> {
        let margin = self.settings.margin;
        self.largest(img).and_then(|b| b.expanded(&margin, img.width(), img.height()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Instant;

    fn group_photo() -> GrayImage {
        // The rustface package directory, found by build.rs through cargo metadata.
        crate::image::load_gray(&PathBuf::from(env!("MER_RUSTFACE_DIR")).join("test.png")).unwrap()
    }

    #[test]
    fn finds_the_faces_of_the_rustface_group_photo() {
        let img = group_photo();
        assert_eq!((img.width(), img.height()), (1666, 1136));
        // The left part of the front rows: faces of 50–65 px, several of them.
        let part = img.crop(0, 150, 520, 200).unwrap();
        let settings = DetectorSettings { min_face_fraction: 0.0, min_face_px: 40, ..DetectorSettings::default() };
        let mut det = FaceDetector::with_settings(settings).unwrap();
        let t = Instant::now();
        let faces = det.detect(&part);
        eprintln!("{} faces in a 520x200 region in {:?}: {faces:?}", faces.len(), t.elapsed());
        assert!(faces.len() >= 4, "{faces:?}");
        for f in &faces {
            assert!(f.score >= settings.score_threshold);
            assert!((40..=90).contains(&f.width) && (40..=90).contains(&f.height), "{f:?}");
            assert!(f.x + f.width <= 520 && f.y + f.height <= 200);
        }
        // A face known from the full image at (49,194) 56x56 lands at (49,44) in the region.
        assert!(faces.iter().any(|f| f.x.abs_diff(49) <= 8 && f.y.abs_diff(44) <= 8), "{faces:?}");
        assert!(faces.windows(2).all(|p| p[0].score >= p[1].score));
    }

    #[test]
    fn a_single_face_is_found_at_its_place_after_scaling() {
        // One face cut out with room around it, then enlarged: detection runs on a shrunken
        // copy, so the box must come back in the caller's pixels.
        let img = group_photo();
        let part = img.crop(1220, 160, 140, 140).unwrap(); // face at (1263,208) 58x58
        let big = resize(&part, 420, 420, Interpolation::Bilinear);
        let mut det = FaceDetector::new().unwrap();
        let t = Instant::now();
        let face = det.largest(&big).expect("a face");
        eprintln!("single face {face:?} in {:?}", t.elapsed());
        // expected in the enlarged image: (43*3, 48*3) = (129,144), side 174
        assert!(face.x.abs_diff(129) <= 24 && face.y.abs_diff(144) <= 24, "{face:?}");
        assert!(face.width.abs_diff(174) <= 30, "{face:?}");
        // The default margin reaches beyond the square box, more at the top and bottom.
        let region = det.face_region(&big).unwrap();
        assert!(region.x < face.x && region.y < face.y && region.width > face.width && region.height > region.width, "{region:?}");
    }

    #[test]
    fn blank_and_tiny_images_have_no_face() {
        let mut det = FaceDetector::new().unwrap();
        assert!(det.detect(&GrayImage::filled(200, 160, 0.5)).is_empty());
        assert!(det.detect(&GrayImage::filled(15, 15, 0.5)).is_empty());
        assert!(det.largest(&GrayImage::filled(1, 1, 0.5)).is_none());
    }

    #[test]
    fn min_face_follows_the_shorter_side() {
        let s = DetectorSettings::default();
        assert_eq!(s.min_face(640, 480), 96);
        assert_eq!(s.min_face(80, 60), 20);
        assert!(DetectorSettings { min_face_px: 10, ..s }.validate().is_err());
        assert!(DetectorSettings { pyramid_scale: 1.0, ..s }.validate().is_err());
        assert!(FaceDetector::with_settings(DetectorSettings { score_threshold: 0.0, ..s }).is_err());
    }

    #[test]
    fn boxes_are_clipped_and_grown_within_the_image() {
        let b = |x, y, width, height| FaceBox { x, y, width, height, score: 0.0 };
        assert_eq!(b(7, 6, 10, 10).clipped(10, 8), Some(b(7, 6, 3, 2)));
        assert_eq!(b(10, 0, 4, 4).clipped(10, 8), None);
        assert_eq!(b(usize::MAX, 0, usize::MAX, 4).clipped(10, 8), None);
        assert_eq!(b(3, 2, usize::MAX, usize::MAX).clipped(10, 8), Some(b(3, 2, 7, 6)));
        assert_eq!(b(20, 0, 4, 4).expanded(&Margin::NONE, 10, 8), None);

        let grown = b(1, 1, 4, 4).expanded(&Margin { side: 0.5, top: 0.5, bottom: 0.25 }, 10, 8).unwrap();
        assert_eq!(grown, b(0, 0, 7, 6));
        assert_eq!(b(1, 1, 4, 4).expanded(&Margin::NONE, 10, 8).unwrap(), b(1, 1, 4, 4));
    }
}
