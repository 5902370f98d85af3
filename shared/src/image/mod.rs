//! Single-channel float images and the operations preprocessing needs.
//!
//! Pixel values are `f32`; decoded images are in [0, 1]. Semantics follow OpenCV where the
//! official pipeline used OpenCV (gray conversion weights, `cv2.resize`, `cv2.normalize`).

mod codec;
mod resize;

pub use codec::{decode_gray, encode_rgb_png, load_gray, save_gray_png, save_rgb_png};
pub use resize::{Interpolation, resize, resize_by_factor};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct GrayImage {
    width: usize,
    height: usize,
    data: Vec<f32>,
}

impl GrayImage {
    /// Wraps row-major pixels; fails if the length does not match or a dimension is zero.
    pub fn new(width: usize, height: usize, data: Vec<f32>) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(Error::InvalidArgument(format!("image must not be empty ({width}x{height})")));
        }
        if data.len() != width * height {
            return Err(Error::size("pixel buffer length", width * height, data.len()));
        }
        Ok(GrayImage { width, height, data })
    }

    pub fn filled(width: usize, height: usize, value: f32) -> Self {
        assert!(width > 0 && height > 0, "image must not be empty");
        GrayImage { width, height, data: vec![value; width * height] }
    }

    pub fn from_fn(width: usize, height: usize, mut f: impl FnMut(usize, usize) -> f32) -> Self {
        assert!(width > 0 && height > 0, "image must not be empty");
        let mut data = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                data.push(f(x, y));
            }
        }
        GrayImage { width, height, data }
    }

    pub fn width(&self) -> usize {
        self.width
    }
    pub fn height(&self) -> usize {
        self.height
    }
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }
    pub fn get(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.width + x]
    }
    pub fn row(&self, y: usize) -> &[f32] {
        &self.data[y * self.width..(y + 1) * self.width]
    }

    /// Fails naming `what` and the pixel index if any value is NaN or infinite.
    pub fn check_finite(&self, what: &str) -> Result<()> {
        crate::error::check_finite(what, &self.data)
    }

    /// Copies the rectangle at (x, y) of size w×h; fails if it leaves the image.
    pub fn crop(&self, x: usize, y: usize, w: usize, h: usize) -> Result<GrayImage> {
        if w == 0 || h == 0 || x + w > self.width || y + h > self.height {
            return Err(Error::InvalidArgument(format!(
                "crop {w}x{h} at ({x},{y}) does not fit in a {}x{} image",
                self.width, self.height
            )));
        }
        let mut data = Vec::with_capacity(w * h);
        for row in y..y + h {
            data.extend_from_slice(&self.data[row * self.width + x..row * self.width + x + w]);
        }
        Ok(GrayImage { width: w, height: h, data })
    }

    /// `cv2.normalize(img, None, 0, 1, NORM_MINMAX)`: maps [min, max] to [0, 1]; a constant
    /// image becomes all zeros, as in OpenCV.
    pub fn min_max_normalized(&self) -> GrayImage {
        let (lo, hi) = min_max(&self.data);
        let range = hi - lo;
        let scale = if range > f64::EPSILON as f32 { 1.0 / range } else { 0.0 };
        let data = self.data.iter().map(|&v| (v - lo) * scale).collect();
        GrayImage { width: self.width, height: self.height, data }
    }

    /// Splits into an n×n grid of equal blocks, row-major, block size `width / n` (as the
    /// official loader: trailing pixels of a size not divisible by n are dropped).
    pub fn grid(&self, n: usize) -> Result<Vec<GrayImage>> {
        if n == 0 || self.width < n || self.height < n {
            return Err(Error::InvalidArgument(format!("cannot split a {}x{} image into a {n}x{n} grid", self.width, self.height)));
        }
        let (bw, bh) = (self.width / n, self.height / n);
        let mut blocks = Vec::with_capacity(n * n);
        for r in 0..n {
            for c in 0..n {
                blocks.push(self.crop(c * bw, r * bh, bw, bh)?);
            }
        }
        Ok(blocks)
    }

    /// Rounds to 8-bit levels (values clamped to [0, 1]) and back, as storing to an 8-bit file does.
    pub fn quantized_u8(&self) -> GrayImage {
        let data = self.data.iter().map(|&v| to_u8(v) as f32 / 255.0).collect();
        GrayImage { width: self.width, height: self.height, data }
    }

    pub fn to_u8(&self) -> Vec<u8> {
        self.data.iter().map(|&v| to_u8(v)).collect()
    }

    pub fn from_u8(width: usize, height: usize, bytes: &[u8]) -> Result<GrayImage> {
        GrayImage::new(width, height, bytes.iter().map(|&b| b as f32 / 255.0).collect())
    }
}

/// Rounds a [0, 1] value to the nearest 8-bit level, saturating (NaN becomes 0).
pub fn to_u8(v: f32) -> u8 {
    (v * 255.0).round().clamp(0.0, 255.0) as u8
}

/// Minimum and maximum of a non-empty slice.
pub fn min_max(values: &[f32]) -> (f32, f32) {
    values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_buffers() {
        assert!(GrayImage::new(3, 2, vec![0.0; 5]).is_err());
        assert!(GrayImage::new(0, 2, vec![]).is_err());
    }

    #[test]
    fn min_max_normalisation_matches_opencv_rules() {
        let img = GrayImage::new(2, 2, vec![2.0, 4.0, 6.0, 10.0]).unwrap();
        assert_eq!(img.min_max_normalized().data(), &[0.0, 0.25, 0.5, 1.0]);
        let flat = GrayImage::filled(3, 3, 0.7);
        assert!(flat.min_max_normalized().data().iter().all(|&v| v == 0.0));
    }

    #[test]
    fn grid_is_row_major_and_exact() {
        let img = GrayImage::from_fn(8, 8, |x, y| (y * 8 + x) as f32);
        let blocks = img.grid(4).unwrap();
        assert_eq!(blocks.len(), 16);
        // block (r=1, c=2) starts at x=4, y=2
        assert_eq!(blocks[4 + 2].get(0, 0), (2 * 8 + 4) as f32);
        assert_eq!(blocks[15].get(1, 1), 63.0);
        assert!(img.grid(9).is_err());
    }

    #[test]
    fn crop_checks_bounds() {
        let img = GrayImage::filled(10, 10, 0.0);
        assert!(img.crop(5, 5, 6, 1).is_err());
        assert_eq!(img.crop(5, 5, 5, 5).unwrap().width(), 5);
    }

    #[test]
    fn finite_check_names_the_index() {
        let img = GrayImage::new(2, 1, vec![0.0, f32::NAN]).unwrap();
        let err = img.check_finite("apex").unwrap_err().to_string();
        assert!(err.contains("apex") && err.contains("index 1"), "{err}");
    }
}
