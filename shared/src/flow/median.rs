//! 5×5 median filter with replicated borders (`cv2.medianBlur(src, 5)` on float images), used
//! by TV-L1 to reject flow outliers between outer iterations.

use std::sync::OnceLock;

const K: usize = 5;
const TAPS: usize = K * K;

/// Compare-exchange pairs that leave the median of 25 values at index 12.
fn median_network() -> &'static [(usize, usize)] {
    static NET: OnceLock<Vec<(usize, usize)>> = OnceLock::new();
    NET.get_or_init(|| {
        // Batcher's odd-even merge sort for 32 inputs; inputs 25..32 are +inf and never move,
        // so comparators touching them drop out. Then keep only comparators the median needs.
        let n = 32;
        let mut all = Vec::new();
        let mut p = 1;
        while p < n {
            let mut k = p;
            while k >= 1 {
                let mut j = k % p;
                while j + k < n {
                    for i in 0..k.min(n - j - k) {
                        if (i + j) / (2 * p) == (i + j + k) / (2 * p) {
                            all.push((i + j, i + j + k));
                        }
                    }
                    j += 2 * k;
                }
                k /= 2;
            }
            p *= 2;
        }
        all.retain(|&(a, b)| a < TAPS && b < TAPS);
        let mut needed = [false; TAPS];
        needed[TAPS / 2] = true;
        let mut kept = Vec::new();
        for &(a, b) in all.iter().rev() {
            if needed[a] || needed[b] {
                needed[a] = true;
                needed[b] = true;
                kept.push((a, b));
            }
        }
        kept.reverse();
        kept
    })
}

/// Filters `img` (row-major `width`×`height`) in place; `scratch` is reused between calls.
pub fn median5_in_place(img: &mut [f32], width: usize, height: usize, scratch: &mut Vec<f32>) {
    let net = median_network();
    let (pw, ph) = (width + K - 1, height + K - 1);
    scratch.clear();
    scratch.resize(pw * ph + TAPS * width, 0.0);
    let (padded, lanes) = scratch.split_at_mut(pw * ph);
    for py in 0..ph {
        let sy = (py as isize - 2).clamp(0, height as isize - 1) as usize;
        let src = &img[sy * width..(sy + 1) * width];
        let dst = &mut padded[py * pw..(py + 1) * pw];
        dst[0] = src[0];
        dst[1] = src[0];
        dst[2..2 + width].copy_from_slice(src);
        dst[2 + width] = src[width - 1];
        dst[3 + width] = src[width - 1];
    }
    for y in 0..height {
        for dy in 0..K {
            for dx in 0..K {
                let lane = &mut lanes[(dy * K + dx) * width..(dy * K + dx + 1) * width];
                let start = (y + dy) * pw + dx;
                lane.copy_from_slice(&padded[start..start + width]);
            }
        }
        for &(a, b) in net {
            let (lo, hi) = lanes.split_at_mut(b * width);
            let lo = &mut lo[a * width..(a + 1) * width];
            let hi = &mut hi[..width];
            for (p, q) in lo.iter_mut().zip(hi.iter_mut()) {
                let (x, z) = (*p, *q);
                *p = if x < z { x } else { z };
                *q = if x < z { z } else { x };
            }
        }
        img[y * width..(y + 1) * width].copy_from_slice(&lanes[(TAPS / 2) * width..(TAPS / 2 + 1) * width]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(img: &[f32], w: usize, h: usize) -> Vec<f32> {
        let mut out = vec![0.0; w * h];
        for y in 0..h {
            for x in 0..w {
                let mut v = Vec::new();
                for dy in -2i64..=2 {
                    for dx in -2i64..=2 {
                        let sy = (y as i64 + dy).clamp(0, h as i64 - 1) as usize;
                        let sx = (x as i64 + dx).clamp(0, w as i64 - 1) as usize;
                        v.push(img[sy * w + sx]);
                    }
                }
                v.sort_by(|a, b| a.partial_cmp(b).unwrap());
                out[y * w + x] = v[12];
            }
        }
        out
    }

    #[test]
    fn network_computes_the_true_median() {
        let (w, h) = (13, 9);
        let mut state = 12345u64;
        let img: Vec<f32> = (0..w * h)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect();
        let mut got = img.clone();
        median5_in_place(&mut got, w, h, &mut Vec::new());
        assert_eq!(got, reference(&img, w, h));
        assert!(median_network().len() < 200);
    }
}
