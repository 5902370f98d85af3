//! `cv2.resize` for float images: INTER_LINEAR and INTER_AREA, with OpenCV's coordinate
//! mapping and border rules, so that host and device match the official Python pipeline.

use serde::{Deserialize, Serialize};

use super::GrayImage;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// `cv2.INTER_LINEAR` (the `cv2.resize` default used by the official code).
    Bilinear,
    /// `cv2.INTER_AREA`: pixel-area averaging when shrinking.
    Area,
}

/// Resizes to exactly `width`×`height`.
pub fn resize(img: &GrayImage, width: usize, height: usize, interp: Interpolation) -> GrayImage {
    assert!(width > 0 && height > 0, "target size must not be empty");
    let sx = img.width() as f64 / width as f64;
    let sy = img.height() as f64 / height as f64;
    resample(img, width, height, sx, sy, interp)
}

/// `cv2.resize(img, None, fx, fy)`: the target size is the rounded scaled size, and the
/// coordinate mapping uses 1/fx exactly (not the ratio of the rounded sizes).
pub fn resize_by_factor(img: &GrayImage, fx: f64, fy: f64, interp: Interpolation) -> GrayImage {
    assert!(fx > 0.0 && fy > 0.0, "scale factors must be positive");
    let width = ((img.width() as f64 * fx).round() as usize).max(1);
    let height = ((img.height() as f64 * fy).round() as usize).max(1);
    resample(img, width, height, 1.0 / fx, 1.0 / fy, interp)
}

/// Source taps of one output index: (first source index, weights over consecutive pixels).
struct Taps {
    start: Vec<usize>,
    weights: Vec<Vec<f32>>,
}

fn resample(img: &GrayImage, dw: usize, dh: usize, scale_x: f64, scale_y: f64, interp: Interpolation) -> GrayImage {
    let (sw, sh) = (img.width(), img.height());
    let area_shrink = interp == Interpolation::Area && scale_x >= 1.0 && scale_y >= 1.0;
    let (tx, ty) = if area_shrink {
        (area_taps(sw, dw, scale_x), area_taps(sh, dh, scale_y))
    } else {
        let area_mode = interp == Interpolation::Area;
        (linear_taps(sw, dw, scale_x, area_mode), linear_taps(sh, dh, scale_y, area_mode))
    };
    // Horizontal pass into a buffer of source rows, then the vertical pass.
    let src = img.data();
    let mut horiz = vec![0f32; sh * dw];
    for y in 0..sh {
        let row = &src[y * sw..(y + 1) * sw];
        let out = &mut horiz[y * dw..(y + 1) * dw];
        for (dx, o) in out.iter_mut().enumerate() {
            let s = tx.start[dx];
            *o = tx.weights[dx].iter().enumerate().map(|(k, w)| row[s + k] * w).sum();
        }
    }
    let mut data = vec![0f32; dw * dh];
    for dy in 0..dh {
        let out = &mut data[dy * dw..(dy + 1) * dw];
        let s = ty.start[dy];
        for (k, &w) in ty.weights[dy].iter().enumerate() {
            let row = &horiz[(s + k) * dw..(s + k + 1) * dw];
            for (o, &v) in out.iter_mut().zip(row) {
                *o += v * w;
            }
        }
    }
    GrayImage::new(dw, dh, data).expect("sizes are consistent")
}

/// OpenCV's INTER_LINEAR taps (and INTER_AREA when enlarging, `area_mode`).
fn linear_taps(src: usize, dst: usize, scale: f64, area_mode: bool) -> Taps {
    let inv_scale = 1.0 / scale;
    let mut taps = Taps { start: Vec::with_capacity(dst), weights: Vec::with_capacity(dst) };
    for d in 0..dst {
        let (mut s, mut f) = if area_mode {
            let s = (d as f64 * scale).floor() as i64;
            let f = ((d + 1) as f64 - (s + 1) as f64 * inv_scale) as f32;
            (s, if f <= 0.0 { 0.0 } else { f - f.floor() })
        } else {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let s = f.floor();
            (s as i64, f - s)
        };
        if s < 0 {
            s = 0;
            f = 0.0;
        }
        if s >= src as i64 - 1 {
            s = src as i64 - 1;
            f = 0.0;
        }
        taps.start.push(s as usize);
        taps.weights.push(if f == 0.0 { vec![1.0] } else { vec![1.0 - f, f] });
    }
    taps
}

/// OpenCV's INTER_AREA taps when shrinking: each output pixel averages the source area it
/// covers, partial pixels weighted by their covered fraction.
fn area_taps(src: usize, dst: usize, scale: f64) -> Taps {
    let mut taps = Taps { start: Vec::with_capacity(dst), weights: Vec::with_capacity(dst) };
    for d in 0..dst {
        let fs1 = d as f64 * scale;
        let fs2 = fs1 + scale;
        let cell = scale.min(src as f64 - fs1);
        let s2 = (fs2.floor() as usize).min(src - 1);
        let s1 = (fs1.ceil() as usize).min(s2);
        let mut start = s1;
        let mut w = Vec::new();
        if s1 as f64 - fs1 > 1e-3 {
            start = s1 - 1;
            w.push(((s1 as f64 - fs1) / cell) as f32);
        }
        for _ in s1..s2 {
            w.push((1.0 / cell) as f32);
        }
        if fs2 - s2 as f64 > 1e-3 {
            w.push(((fs2 - s2 as f64).min(1.0).min(cell) / cell) as f32);
        }
        taps.start.push(start);
        taps.weights.push(w);
    }
    taps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_is_exact() {
        let img = GrayImage::from_fn(7, 5, |x, y| (x * 3 + y * 11) as f32 / 50.0);
        for interp in [Interpolation::Bilinear, Interpolation::Area] {
            assert_eq!(resize(&img, 7, 5, interp), img);
        }
    }

    #[test]
    fn bilinear_upscale_of_a_ramp_follows_opencv_mapping() {
        // 2 -> 4: x_src = (x + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 -> clamped at the ends
        let img = GrayImage::new(2, 1, vec![0.0, 1.0]).unwrap();
        let out = resize(&img, 4, 1, Interpolation::Bilinear);
        assert_eq!(out.data(), &[0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn area_halving_is_a_box_mean_and_keeps_the_mean() {
        let img = GrayImage::from_fn(8, 6, |x, y| ((x * 7 + y * 3) % 5) as f32);
        let out = resize(&img, 4, 3, Interpolation::Area);
        assert!((out.get(1, 2) - (img.get(2, 4) + img.get(3, 4) + img.get(2, 5) + img.get(3, 5)) / 4.0).abs() < 1e-6);
        let mean = |i: &GrayImage| i.data().iter().sum::<f32>() / i.data().len() as f32;
        assert!((mean(&out) - mean(&img)).abs() < 1e-5);
        // non-integer shrink keeps the mean too
        let odd = resize(&img, 3, 4, Interpolation::Area);
        assert!((mean(&odd) - mean(&img)).abs() < 1e-4);
    }

    #[test]
    fn factor_resize_rounds_the_size() {
        let img = GrayImage::filled(128, 128, 0.5);
        let out = resize_by_factor(&img, 0.8, 0.8, Interpolation::Bilinear);
        assert_eq!((out.width(), out.height()), (102, 102));
        assert!(out.data().iter().all(|&v| (v - 0.5).abs() < 1e-6));
    }
}
