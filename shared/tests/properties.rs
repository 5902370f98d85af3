//! Property tests of the image operations and the flow solver.

use mer_shared::flow::{Tvl1Params, optical_strain, tvl1_flow};
use mer_shared::image::{Interpolation, resize};
use mer_shared::{Flow, GrayImage};
use proptest::prelude::*;

fn image(w: usize, h: usize, seed: u64) -> GrayImage {
    let mut s = seed | 1;
    GrayImage::from_fn(w, h, |_, _| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % 1000) as f32 / 999.0
    })
}

/// A smooth texture shifted by (dx, dy): frame b shows frame a's content moved by +(dx, dy).
fn texture(w: usize, h: usize, dx: f32, dy: f32, k: f32) -> GrayImage {
    GrayImage::from_fn(w, h, |x, y| {
        let (x, y) = (x as f32 - dx, y as f32 - dy);
        0.5 + 0.2 * (x * 0.31 * k).sin() * (y * 0.27).cos() + 0.15 * ((x + 2.0 * y) * 0.13).sin() + 0.1 * (x * 0.71 - y * 0.45 * k).cos()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn resize_stays_within_the_input_range(w in 2usize..40, h in 2usize..40, dw in 1usize..60, dh in 1usize..60, seed: u64, area: bool) {
        let img = image(w, h, seed);
        let interp = if area { Interpolation::Area } else { Interpolation::Bilinear };
        let out = resize(&img, dw, dh, interp);
        prop_assert_eq!((out.width(), out.height()), (dw, dh));
        let (lo, hi) = mer_shared::image::min_max(img.data());
        prop_assert!(out.data().iter().all(|&v| v >= lo - 1e-5 && v <= hi + 1e-5));
    }

    #[test]
    fn resize_keeps_constant_images_constant(w in 1usize..30, h in 1usize..30, dw in 1usize..50, dh in 1usize..50, c in 0f32..1.0, area: bool) {
        let interp = if area { Interpolation::Area } else { Interpolation::Bilinear };
        let out = resize(&GrayImage::filled(w, h, c), dw, dh, interp);
        prop_assert!(out.data().iter().all(|&v| (v - c).abs() < 1e-5));
    }

    #[test]
    fn grid_blocks_tile_the_image(n in 1usize..6, side in 1usize..8, seed: u64) {
        let img = image(n * side, n * side, seed);
        let blocks = img.grid(n).unwrap();
        for (i, b) in blocks.iter().enumerate() {
            let (r, c) = (i / n, i % n);
            prop_assert_eq!(b, &img.crop(c * side, r * side, side, side).unwrap());
        }
    }

    #[test]
    fn min_max_normalisation_spans_zero_to_one(w in 2usize..20, h in 1usize..20, seed: u64) {
        let n = image(w, h, seed).min_max_normalized();
        let (lo, hi) = mer_shared::image::min_max(n.data());
        prop_assert!(lo == 0.0 && ((hi - 1.0).abs() < 1e-6 || hi == 0.0));
    }
}

proptest! {
    // TV-L1 runs take tens of milliseconds each: few cases.
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn identical_frames_have_zero_flow(w in 16usize..48, h in 16usize..48, seed: u64) {
        let a = image(w, h, seed);
        let f = tvl1_flow(&a, &a, &Tvl1Params::default(), 1).unwrap();
        prop_assert!(f.u().iter().chain(f.v()).all(|v| v.abs() < 1e-4));
    }

    #[test]
    fn flat_frames_never_produce_nan(w in 3usize..40, h in 3usize..40, a in 0f32..1.0, b in 0f32..1.0) {
        let f = tvl1_flow(&GrayImage::filled(w, h, a), &GrayImage::filled(w, h, b), &Tvl1Params::default(), 1).unwrap();
        prop_assert!(f.check_finite("flow").is_ok());
        prop_assert!(optical_strain(&f).check_finite("strain").is_ok());
    }

    #[test]
    fn subpixel_translations_are_recovered(dx in -2.5f32..2.5, dy in -2.5f32..2.5, k in 0.8f32..1.2) {
        let (a, b) = (texture(64, 64, 0.0, 0.0, k), texture(64, 64, dx, dy, k));
        let f = tvl1_flow(&a, &b, &Tvl1Params::default(), 1).unwrap();
        let truth = Flow::new(64, 64, vec![dx; 4096], vec![dy; 4096]).unwrap();
        let epe = f.mean_endpoint_error(&truth, 10).unwrap();
        prop_assert!(epe < 0.15, "EPE {} for ({}, {})", epe, dx, dy);
    }
}
