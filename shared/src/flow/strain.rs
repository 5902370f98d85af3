//! Optical strain magnitude, exactly as the official preprocessing scripts compute it:
//! `u_x = u - shift(u, -1, columns)` etc. (i.e. the negated forward difference), then
//! `sqrt(u_x² + v_y² + ½(u_y + v_x)²)`, with the undefined last column and last row filled
//! forward from their neighbours (pandas `ffill` along columns, then rows).

use super::Flow;
use crate::image::GrayImage;

pub fn optical_strain(flow: &Flow) -> GrayImage {
    let (w, h) = (flow.width(), flow.height());
    let (u, v) = (flow.u(), flow.v());
    let mut out = vec![0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            // Only the interior is defined; the sign convention is irrelevant once squared.
            let i = y * w + x;
            let (xs, ys) = ((x + 1).min(w - 1), (y + 1).min(h - 1));
            out[i] = if x + 1 < w && y + 1 < h {
                let ux = u[i] - u[y * w + xs];
                let vx = v[i] - v[y * w + xs];
                let uy = u[i] - u[ys * w + x];
                let vy = v[i] - v[ys * w + x];
                (ux * ux + vy * vy + 0.5 * (uy + vx) * (uy + vx)).sqrt()
            } else {
                f32::NAN
            };
        }
    }
    // ffill along columns (last column takes its left neighbour), then along rows.
    if w > 1 {
        for y in 0..h {
            out[y * w + w - 1] = out[y * w + w - 2];
        }
    }
    if h > 1 {
        let (body, last) = out.split_at_mut((h - 1) * w);
        last.copy_from_slice(&body[(h - 2) * w..]);
    }
    // A 1-pixel-wide field has no defined strain at all; pandas would leave NaN, we give 0.
    out.iter_mut().filter(|v| v.is_nan()).for_each(|v| *v = 0.0);
    GrayImage::new(w, h, out).expect("consistent size")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_translation_has_no_strain() {
        let f = Flow::new(5, 4, vec![1.5; 20], vec![-0.5; 20]).unwrap();
        assert!(optical_strain(&f).data().iter().all(|&s| s == 0.0));
    }

    #[test]
    fn linear_stretch_matches_closed_form_and_fills_edges() {
        // u = 0.1 x  ->  u_x = -0.1 everywhere inside, strain 0.1
        let (w, h) = (6, 5);
        let u: Vec<f32> = (0..w * h).map(|i| 0.1 * (i % w) as f32).collect();
        let f = Flow::new(w, h, u, vec![0.0; w * h]).unwrap();
        let s = optical_strain(&f);
        assert!(s.data().iter().all(|&v| (v - 0.1).abs() < 1e-6), "{:?}", s.data());
        // shear u = 0.2 y: u_y = -0.2 -> sqrt(0.5 * 0.04)
        let u: Vec<f32> = (0..w * h).map(|i| 0.2 * (i / w) as f32).collect();
        let s = optical_strain(&Flow::new(w, h, u, vec![0.0; w * h]).unwrap());
        assert!(s.data().iter().all(|&v| (v - (0.5f32 * 0.04).sqrt()).abs() < 1e-6));
    }
}
