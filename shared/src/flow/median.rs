//! 5×5 median filter with replicated borders (`cv2.medianBlur(src, 5)` on float images), used
//! by TV-L1 to reject flow outliers between outer iterations.
//!
//! Per output row, every 5-pixel column is sorted once (shared by the five windows that
//! contain it). Two horizontally adjacent windows share four columns: a merge network gives
//! ranks 7..12 of those 20 values once per pair, and each window's median is then selected
//! against its own fifth column with ten min/max operations. About 50 compare-exchanges per
//! pixel instead of ~110 for a per-pixel network; every step runs across a whole row at once so
//! the compiler vectorises it.

use std::sync::OnceLock;

const K: usize = 5;
/// Slots of the merge network: column k's sorted values sit at 8k..8k+4, the rest are +inf.
const SLOTS: usize = 32;

/// Sorting network for 5 values.
const SORT5: [(usize, usize); 9] = [(0, 1), (3, 4), (2, 4), (2, 3), (0, 3), (0, 2), (1, 4), (1, 3), (1, 2)];

fn batcher(n: usize) -> Vec<(usize, usize)> {
    let mut net = Vec::new();
    let mut p = 1;
    while p < n {
        let mut k = p;
        while k >= 1 {
            let mut j = k % p;
            while j + k < n {
                for i in 0..k.min(n - j - k) {
                    if (i + j) / (2 * p) == (i + j + k) / (2 * p) {
                        net.push((i + j, i + j + k));
                    }
                }
                j += 2 * k;
            }
            k /= 2;
        }
        p *= 2;
    }
    net
}

/// Comparators of Batcher's 32-input sort that matter for ranks 7..12 of four pre-sorted
/// columns. Redundant comparators are found with the 0-1 principle: with sorted columns every
/// 0-1 input is fixed by the count of ones per column (6^4 cases), and a comparator that never
/// swaps any of them never swaps real inputs either.
fn merge_network() -> &'static [(usize, usize)] {
    static NET: OnceLock<Vec<(usize, usize)>> = OnceLock::new();
    NET.get_or_init(|| {
        let mut inputs = Vec::new();
        for code in 0..6usize.pow(4) {
            let mut v = [1u8; SLOTS];
            for k in 0..4 {
                let ones = code / 6usize.pow(k as u32) % 6;
                for r in 0..K {
                    v[8 * k + r] = u8::from(r >= K - ones);
                }
            }
            inputs.push(v);
        }
        let mut acting = Vec::new();
        for (a, b) in batcher(SLOTS) {
            let mut swapped = false;
            for v in inputs.iter_mut() {
                if v[a] > v[b] {
                    v.swap(a, b);
                    swapped = true;
                }
            }
            if swapped {
                acting.push((a, b));
            }
        }
        let mut needed = [false; SLOTS];
        (7..13).for_each(|i| needed[i] = true);
        let mut kept = Vec::new();
        for &(a, b) in acting.iter().rev() {
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

#[inline(always)]
fn compare_exchange(lanes: &mut [f32], n: usize, a: usize, b: usize) {
    let (lo, hi) = lanes.split_at_mut(b * n);
    let lo = &mut lo[a * n..(a + 1) * n];
    let hi = &mut hi[..n];
    for (p, q) in lo.iter_mut().zip(hi.iter_mut()) {
        let (x, z) = (*p, *q);
        *p = if x < z { x } else { z };
        *q = if x < z { z } else { x };
    }
}

/// Reusable buffers of the filter.
#[derive(Default)]
pub struct MedianScratch {
    padded: Vec<f32>,
    columns: Vec<f32>,
    merge: Vec<f32>,
}

/// Filters `img` (row-major `width`×`height`) in place.
#[multiversion::multiversion(targets = "simd")]
pub fn median5_in_place(img: &mut [f32], width: usize, height: usize, s: &mut MedianScratch) {
    let net = merge_network();
    let (pw, ph) = (width + K - 1, height + K - 1);
    let pairs = width.div_ceil(2);
    s.padded.resize(pw * ph, 0.0);
    s.columns.resize(K * pw, 0.0);
    s.merge.resize(SLOTS * pairs, 0.0);
    for py in 0..ph {
        let sy = (py as isize - 2).clamp(0, height as isize - 1) as usize;
        let src = &img[sy * width..(sy + 1) * width];
        let dst = &mut s.padded[py * pw..(py + 1) * pw];
        dst[..2].fill(src[0]);
        dst[2..2 + width].copy_from_slice(src);
        dst[2 + width..].fill(src[width - 1]);
    }
    for y in 0..height {
        // columns[r][cx]: the 5 values of padded column cx around row y, sorted.
        s.columns.copy_from_slice(&s.padded[y * pw..(y + K) * pw]);
        for &(a, b) in &SORT5 {
            compare_exchange(&mut s.columns, pw, a, b);
        }
        // Pair j covers pixels 2j and 2j+1, which share padded columns 2j+1..2j+4.
        s.merge.fill(f32::INFINITY);
        for k in 0..4 {
            for r in 0..K {
                let col = &s.columns[r * pw..(r + 1) * pw];
                let lane = &mut s.merge[(8 * k + r) * pairs..(8 * k + r + 1) * pairs];
                for (j, v) in lane.iter_mut().enumerate() {
                    *v = col[2 * j + 1 + k];
                }
            }
        }
        for &(a, b) in net {
            compare_exchange(&mut s.merge, pairs, a, b);
        }
        // The 13th smallest of A (20 sorted) ∪ B (5 sorted) is min over i of max(A[12-i], B[i-1]).
        let out = &mut img[y * width..(y + 1) * width];
        let a = |i: usize, j: usize| s.merge[i * pairs + j];
        let col = |r: usize, cx: usize| s.columns[r * pw + cx];
        for (x, pixel) in out.iter_mut().enumerate() {
            let (j, cx) = if x % 2 == 0 { (x / 2, x) } else { (x / 2, x + 4) };
            let mut m = a(12, j);
            for i in 1..=K {
                let v = a(12 - i, j).max(col(i - 1, cx));
                m = m.min(v);
            }
            *pixel = m;
        }
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
    fn equals_a_sorting_median_on_odd_and_even_widths() {
        let mut state = 12345u64;
        for (w, h) in [(13, 9), (16, 5), (1, 1), (2, 7), (40, 33)] {
            let img: Vec<f32> = (0..w * h)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((state >> 40) % 50) as f32 / 7.0 // many ties, too
                })
                .collect();
            let mut got = img.clone();
            median5_in_place(&mut got, w, h, &mut MedianScratch::default());
            assert_eq!(got, reference(&img, w, h), "{w}x{h}");
        }
        assert!(merge_network().len() <= 70, "{}", merge_network().len());
    }
}
