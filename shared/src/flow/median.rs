//! 5×5 median filter with replicated borders (`cv2.medianBlur(src, 5)` on float images), used
//! by TV-L1 to reject flow outliers between outer iterations.
//!
//! Per output row, every 5-pixel column is sorted once (shared by the five windows that
//! contain it). Two horizontally adjacent windows share four columns: a merge network gives
//! ranks 7..12 of those 20 values once per pair, and each window's median is then selected
//! against its own fifth column with ten min/max operations. About 50 compare-exchanges per
//! pixel instead of ~110 for a per-pixel network. Column sorts run across a whole row at once,
//! the merge and selection over runs of eight pixel pairs held in registers, so the compiler
//! vectorises both.

const K: usize = 5;
/// Slots of the merge network: column k's sorted values sit at 8k..8k+4, the rest are +inf.
const SLOTS: usize = 32;

/// Sorting network for 5 values.
const SORT5: [(usize, usize); 9] = [(0, 1), (3, 4), (2, 4), (2, 3), (0, 3), (0, 2), (1, 4), (1, 3), (1, 2)];

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
}

/// Pixel pairs whose medians are computed together, in registers.
const RUN: usize = 8;

/// Sorts `v[a]` and `v[b]` lane by lane, the smaller into `a`.
#[inline(always)]
fn exchange<const L: usize>(v: &mut [[f32; L]; SLOTS], a: usize, b: usize) {
    let (x, z) = (v[a], v[b]);
    v[a] = std::array::from_fn(|l| if x[l] < z[l] { x[l] } else { z[l] });
    v[b] = std::array::from_fn(|l| if x[l] < z[l] { z[l] } else { x[l] });
}

/// The comparators of Batcher's 32-input sort that matter for ranks 7..12 of four sorted
/// columns (derived, and checked against this list, in the tests), applied as straight-line code
/// so that a run of pairs stays in registers through it.
macro_rules! merge_comparators {
    ($($a:literal $b:literal),* $(,)?) => {
        #[cfg(test)]
        const MERGE: &[(usize, usize)] = &[$(($a, $b)),*];

        #[inline(always)]
        fn merge<const L: usize>(v: &mut [[f32; L]; SLOTS]) {
            $(exchange(v, $a, $b);)*
        }
    };
}

merge_comparators!(
    0 8, 1 9, 2 10, 3 11, 4 12, 16 24, 17 25, 18 26, 19 27, 20 28, 4 8, 5 9, 6 10, 7 11, 20 24, 21 25,
    22 26, 23 27, 2 4, 3 5, 6 8, 10 12, 18 20, 19 21, 22 24, 26 28, 1 2, 3 4, 5 6, 7 8, 9 10, 17 18,
    19 20, 21 22, 23 24, 25 26, 0 16, 1 17, 2 18, 3 19, 4 20, 5 21, 6 22, 7 23, 8 24, 9 25, 8 16, 9 17,
    10 18, 11 19, 12 20, 13 21, 4 8, 5 9, 6 10, 7 11, 12 16, 13 17, 6 8, 7 9, 10 12, 11 13, 7 8, 9 10,
    11 12,
);

/// Medians of the pixels 2j and 2j + 1 (where inside the row `out`) for the `L` pairs from `j0`,
/// from the row's sorted columns (`columns[r * pw + cx]`: rank r of padded column cx).
#[inline(always)]
fn pair_medians<const L: usize>(columns: &[f32], pw: usize, j0: usize, out: &mut [f32]) {
    let col = |r: usize, cx: usize| columns[r * pw + cx];
    // Pair j shares padded columns 2j+1..2j+4: column k's sorted values go to slots 8k..8k+4.
    let mut v = [[f32::INFINITY; L]; SLOTS];
    for k in 0..4 {
        for r in 0..K {
            v[8 * k + r] = std::array::from_fn(|l| col(r, 2 * (j0 + l) + 1 + k));
        }
    }
    merge(&mut v);
    // The 13th smallest of A (the 20, ranks in v) ∪ B (the pixel's own fifth column, sorted) is
    // min over i of max(A[12-i], B[i-1]). Pixel 2j's fifth column is 2j, pixel 2j+1's is 2j+5.
    for (parity, fifth) in [(0, 0), (1, 5)] {
        // (Clamped: a last pair of an odd-width row has no second pixel, nor its fifth column.)
        let b: [[f32; L]; K] = std::array::from_fn(|r| std::array::from_fn(|l| col(r, (2 * (j0 + l) + fifth).min(pw - 1))));
        // Selects, not f32::min/max: vector min/max instructions without NaN fix-ups, and the
        // same result on every platform (min/max leave the sign of a zero tie open).
        let mut m = v[12];
        for i in 1..=K {
            let (a, c) = (v[12 - i], b[i - 1]);
            let high: [f32; L] = std::array::from_fn(|l| if a[l] < c[l] { c[l] } else { a[l] });
            m = std::array::from_fn(|l| if high[l] < m[l] { high[l] } else { m[l] });
        }
        for (l, value) in m.into_iter().enumerate() {
            if let Some(pixel) = out.get_mut(2 * (j0 + l) + parity) {
                *pixel = value;
            }
        }
    }
}

/// Filters `img` (row-major `width`×`height`) in place.
#[multiversion::multiversion(targets = "simd")]
pub fn median5_in_place(img: &mut [f32], width: usize, height: usize, s: &mut MedianScratch) {
    let (pw, ph) = (width + K - 1, height + K - 1);
    s.padded.resize(pw * ph, 0.0);
    s.columns.resize(K * pw, 0.0);
    for py in 0..ph {
        let sy = (py as isize - 2).clamp(0, height as isize - 1) as usize;
        let src = &img[sy * width..(sy + 1) * width];
        let dst = &mut s.padded[py * pw..(py + 1) * pw];
        dst[..2].fill(src[0]);
        dst[2..2 + width].copy_from_slice(src);
        dst[2 + width..].fill(src[width - 1]);
    }
    // Runs of RUN pairs while all their pixels are inside the row, then pair by pair.
    let runs = width / 2 / RUN * RUN;
    for y in 0..height {
        // columns[r][cx]: the 5 values of padded column cx around row y, sorted.
        s.columns.copy_from_slice(&s.padded[y * pw..(y + K) * pw]);
        for &(a, b) in &SORT5 {
            compare_exchange(&mut s.columns, pw, a, b);
        }
        let out = &mut img[y * width..(y + 1) * width];
        for j0 in (0..runs).step_by(RUN) {
            pair_medians::<RUN>(&s.columns, pw, j0, out);
        }
        for j in runs..width.div_ceil(2) {
            pair_medians::<1>(&s.columns, pw, j, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The derivation of the comparators `merge_comparators!` lists: those of Batcher's 32-input
    /// sort that matter for ranks 7..12 of four pre-sorted columns. Redundant comparators are found with the 0-1 principle: with sorted columns every
    /// 0-1 input is fixed by the count of ones per column (6^4 cases), and a comparator that never
    /// swaps any of them never swaps real inputs either.
    fn merge_network() -> Vec<(usize, usize)> {
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
    }

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
        assert_eq!(MERGE, merge_network());
    }
}
