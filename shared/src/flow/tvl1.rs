//! Duality-based TV-L1 optical flow (Zach, Pock & Bischof 2007; Sánchez et al. 2013) with the
//! parameterisation and defaults of OpenCV's `DualTVL1OpticalFlow`, which the official
//! SKD-TSTSAN preprocessing calls.
//!
//! The iteration is the same as OpenCV's; the speed comes from fusing its eight image passes
//! per inner iteration into two (thresholding + divergence + primal update, then forward
//! gradient + dual update), rows computed in runs of eight pixels that the compiler turns into
//! vector instructions (the same arithmetic per pixel, so the same bits as pixel by pixel), and
//! optional row-band parallelism. Warping samples bicubically at exact sub-pixel positions (OpenCV
//! rounds them to 1/32 px), I1 and its two derivatives at once from one interleaved array.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::Flow;
use super::median::{MedianScratch, median5_in_place};
use crate::error::{Error, Result};
use crate::image::{GrayImage, Interpolation, resize, resize_by_factor};

/// Solver parameters; `Default` is OpenCV's `DualTVL1OpticalFlow_create()`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tvl1Params {
    /// Time step of the dual update.
    pub tau: f32,
    /// Weight of the data term (smaller = smoother flow).
    pub lambda: f32,
    /// Coupling between the data and smoothness sub-problems.
    pub theta: f32,
    /// Pyramid levels (fewer if a level would fall below 16 px).
    pub scales: usize,
    /// Re-linearisations (image warps) per level.
    pub warps: usize,
    /// Stop when the RMS flow update falls below this (pixels).
    pub epsilon: f32,
    pub inner_iterations: usize,
    pub outer_iterations: usize,
    /// Downscaling factor between pyramid levels.
    pub scale_step: f32,
    /// Median filter size applied to the flow before each outer iteration (1 = off; 5 supported).
    pub median_filtering: usize,
}

impl Default for Tvl1Params {
    fn default() -> Self {
        Tvl1Params {
            tau: 0.25,
            lambda: 0.15,
            theta: 0.3,
            scales: 5,
            warps: 5,
            epsilon: 0.01,
            inner_iterations: 30,
            outer_iterations: 10,
            scale_step: 0.8,
            median_filtering: 5,
        }
    }
}

impl Tvl1Params {
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::InvalidArgument(format!("TV-L1 {what}")));
        if !(self.tau > 0.0 && self.lambda > 0.0 && self.theta > 0.0) {
            return bad("tau, lambda and theta must be positive");
        }
        if self.scales == 0 || self.warps == 0 || self.inner_iterations == 0 || self.outer_iterations == 0 {
            return bad("scales, warps and iteration counts must be at least 1");
        }
        if !(self.scale_step > 0.0 && self.scale_step < 1.0) {
            return bad("scale_step must lie in (0, 1)");
        }
        if self.epsilon.is_nan() || self.epsilon < 0.0 {
            return bad("epsilon must not be negative");
        }
        if self.median_filtering != 1 && self.median_filtering != 5 {
            return bad("median_filtering must be 1 (off) or 5");
        }
        Ok(())
    }
}

/// Flow from `i0` to `i1` (images in [0, 1], equal size, at least 3×3), on `threads` threads
/// (1 = the calling thread only).
pub fn tvl1_flow(i0: &GrayImage, i1: &GrayImage, params: &Tvl1Params, threads: usize) -> Result<Flow> {
    params.validate()?;
    if (i0.width(), i0.height()) != (i1.width(), i1.height()) {
        return Err(Error::size("second frame size", format!("{}x{}", i0.width(), i0.height()), format!("{}x{}", i1.width(), i1.height())));
    }
    if i0.width() < 3 || i0.height() < 3 {
        return Err(Error::InvalidArgument(format!("frames of {}x{} are too small for flow", i0.width(), i0.height())));
    }
    i0.check_finite("first frame")?;
    i1.check_finite("second frame")?;
    if threads <= 1 {
        return Ok(solve(i0, i1, params, None));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot start {threads} threads: {e}")))?;
    Ok(pool.install(|| solve(i0, i1, params, Some(threads))))
}

fn solve(i0: &GrayImage, i1: &GrayImage, p: &Tvl1Params, threads: Option<usize>) -> Flow {
    // OpenCV works on 0..255 intensities; lambda is tuned for that range.
    let to255 = |img: &GrayImage| GrayImage::new(img.width(), img.height(), img.data().iter().map(|v| v * 255.0).collect()).unwrap();
    let mut pyr0 = vec![to255(i0)];
    let mut pyr1 = vec![to255(i1)];
    for _ in 1..p.scales {
        let step = p.scale_step as f64;
        let a = resize_by_factor(pyr0.last().unwrap(), step, step, Interpolation::Bilinear);
        if a.width() < 16 || a.height() < 16 {
            break;
        }
        let b = resize_by_factor(pyr1.last().unwrap(), step, step, Interpolation::Bilinear);
        pyr0.push(a);
        pyr1.push(b);
    }
    let coarsest = pyr0.len() - 1;
    let (w, h) = (pyr0[coarsest].width(), pyr0[coarsest].height());
    let mut u1 = GrayImage::filled(w, h, 0.0);
    let mut u2 = GrayImage::filled(w, h, 0.0);
    for s in (0..=coarsest).rev() {
        let mut level = Level::new(&pyr0[s], &pyr1[s], p, threads);
        level.run(u1.data_mut(), u2.data_mut());
        if s == 0 {
            break;
        }
        let (nw, nh) = (pyr0[s - 1].width(), pyr0[s - 1].height());
        let up = 1.0 / p.scale_step;
        u1 = resize(&u1, nw, nh, Interpolation::Bilinear);
        u2 = resize(&u2, nw, nh, Interpolation::Bilinear);
        u1.data_mut().iter_mut().for_each(|v| *v *= up);
        u2.data_mut().iter_mut().for_each(|v| *v *= up);
    }
    Flow::new(u1.width(), u1.height(), u1.into_data(), u2.into_data()).unwrap()
}

/// All per-pixel buffers of one pyramid level.
struct Level<'a> {
    w: usize,
    h: usize,
    i0: &'a [f32],
    /// I1 and its two derivatives, side by side per pixel (with a zero), as warping samples them.
    i1_taps: Vec<[f32; 4]>,
    /// Warped I1 derivatives, |∇I1|² and the constant part of the linearised residual.
    iwx: Vec<f32>,
    iwy: Vec<f32>,
    grad: Vec<f32>,
    rho_c: Vec<f32>,
    /// Dual variables of the two flow components.
    p11: Vec<f32>,
    p12: Vec<f32>,
    p21: Vec<f32>,
    p22: Vec<f32>,
    zeros: Vec<f32>,
    median_scratch: MedianScratch,
    params: Tvl1Params,
    threads: Option<usize>,
}

impl<'a> Level<'a> {
    fn new(i0: &'a GrayImage, i1: &'a GrayImage, params: &Tvl1Params, threads: Option<usize>) -> Self {
        let (w, h) = (i0.width(), i0.height());
        let n = w * h;
        let (i1x, i1y) = centered_gradient(i1.data(), w, h);
        let i1_taps = i1.data().iter().zip(&i1x).zip(&i1y).map(|((&v, &dx), &dy)| [v, dx, dy, 0.0]).collect();
        Level {
            w,
            h,
            i0: i0.data(),
            i1_taps,
            iwx: vec![0.0; n],
            iwy: vec![0.0; n],
            grad: vec![0.0; n],
            rho_c: vec![0.0; n],
            p11: vec![0.0; n],
            p12: vec![0.0; n],
            p21: vec![0.0; n],
            p22: vec![0.0; n],
            zeros: vec![0.0; w],
            median_scratch: MedianScratch::default(),
            params: *params,
            threads,
        }
    }

    fn run(&mut self, u1: &mut [f32], u2: &mut [f32]) {
        let p = self.params;
        let n = (self.w * self.h) as f32;
        let scaled_epsilon = p.epsilon * p.epsilon * n;
        let l_t = p.lambda * p.theta;
        let taut = p.tau / p.theta;
        for _ in 0..p.warps {
            self.warp(u1, u2);
            let mut error = f32::MAX;
            let mut outer = 0;
            while error > scaled_epsilon && outer < p.outer_iterations {
                if p.median_filtering > 1 {
                    median5_in_place(u1, self.w, self.h, &mut self.median_scratch);
                    median5_in_place(u2, self.w, self.h, &mut self.median_scratch);
                }
                let mut inner = 0;
                while error > scaled_epsilon && inner < p.inner_iterations {
                    error = self.primal_step(u1, u2, l_t, p.theta);
                    self.dual_step(u1, u2, taut);
                    inner += 1;
                }
                outer += 1;
            }
        }
    }

    /// Samples I1 and its gradient at x + u (bicubic, zero outside) and linearises the residual.
    fn warp(&mut self, u1: &[f32], u2: &[f32]) {
        warp_level(self.i0, &self.i1_taps, self.w, u1, u2, [&mut self.iwx, &mut self.iwy, &mut self.grad, &mut self.rho_c]);
    }

    /// Thresholding (v), divergence of p and the primal update of u, fused; returns Σ|Δu|².
    fn primal_step(&self, u1: &mut [f32], u2: &mut [f32], l_t: f32, theta: f32) -> f32 {
        let w = self.w;
        match self.threads {
            None => primal_band(self, 0, u1, u2, l_t, theta),
            Some(t) => {
                let band = self.h.div_ceil(t * 4).max(1) * w;
                u1.par_chunks_mut(band)
                    .zip(u2.par_chunks_mut(band))
                    .enumerate()
                    .map(|(k, (a, b))| primal_band(self, k * band / w, a, b, l_t, theta))
                    .sum()
            }
        }
    }

    /// Forward gradient of u and the projected dual update of p, fused.
    fn dual_step(&mut self, u1: &[f32], u2: &[f32], taut: f32) {
        let (w, h) = (self.w, self.h);
        match self.threads {
            None => dual_band(u1, u2, w, h, 0, [&mut self.p11, &mut self.p12, &mut self.p21, &mut self.p22], taut),
            Some(t) => {
                let band = h.div_ceil(t * 4).max(1) * w;
                self.p11
                    .par_chunks_mut(band)
                    .zip(self.p12.par_chunks_mut(band))
                    .zip(self.p21.par_chunks_mut(band).zip(self.p22.par_chunks_mut(band)))
                    .enumerate()
                    .for_each(|(k, ((a, b), (c, d)))| dual_band(u1, u2, w, h, k * band / w, [a, b, c, d], taut));
            }
        }
    }
}

/// [`Level::warp`] into `[iwx, iwy, grad, rho_c]`; compiled for the host's vector instructions
/// (a rounding instruction for `floor` instead of a call), which leaves every value as it was.
#[multiversion::multiversion(targets = "simd")]
fn warp_level(i0: &[f32], i1_taps: &[[f32; 4]], w: usize, u1: &[f32], u2: &[f32], out: [&mut [f32]; 4]) {
    let [iwx, iwy, grad, rho_c] = out;
    let h = i0.len() / w;
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let (fx, fy) = (x as f32 + u1[i], y as f32 + u2[i]);
            let [a, b, c, _] = sample_cubic(i1_taps, w, h, fx, fy);
            iwx[i] = b;
            iwy[i] = c;
            grad[i] = b * b + c * c;
            rho_c[i] = a - b * u1[i] - c * u2[i] - i0[i];
        }
    }
}

/// Primal update of the rows starting at `y0` held in the bands `u1b`, `u2b`.
#[multiversion::multiversion(targets = "simd")]
fn primal_band(lv: &Level, y0: usize, u1b: &mut [f32], u2b: &mut [f32], l_t: f32, theta: f32) -> f32 {
    let w = lv.w;
    let mut err = 0.0;
    for (r, (a, b)) in u1b.chunks_exact_mut(w).zip(u2b.chunks_exact_mut(w)).enumerate() {
        let y = y0 + r;
        let row = y * w..(y + 1) * w;
        err += primal_row(
            PrimalRow {
                iwx: &lv.iwx[row.clone()],
                iwy: &lv.iwy[row.clone()],
                grad: &lv.grad[row.clone()],
                rho_c: &lv.rho_c[row.clone()],
                p11: &lv.p11[row.clone()],
                p12: &lv.p12[row.clone()],
                p12_prev: prev_row(&lv.p12, &lv.zeros, y, w),
                p21: &lv.p21[row.clone()],
                p22: &lv.p22[row.clone()],
                p22_prev: prev_row(&lv.p22, &lv.zeros, y, w),
            },
            a,
            b,
            l_t,
            theta,
        );
    }
    err
}

/// Dual update of the rows starting at `y0` held in the bands `[p11, p12, p21, p22]`.
#[multiversion::multiversion(targets = "simd")]
fn dual_band(u1: &[f32], u2: &[f32], w: usize, h: usize, y0: usize, p: [&mut [f32]; 4], taut: f32) {
    let [p11, p12, p21, p22] = p;
    for r in 0..p11.len() / w {
        let y = y0 + r;
        let cur = y * w..(y + 1) * w;
        // On the last row the vertical difference is zero: use the row itself as "next".
        let next = if y + 1 < h { (y + 1) * w..(y + 2) * w } else { cur.clone() };
        let band = r * w..(r + 1) * w;
        dual_row(&u1[cur.clone()], &u1[next.clone()], &mut p11[band.clone()], &mut p12[band.clone()], taut);
        dual_row(&u2[cur], &u2[next], &mut p21[band.clone()], &mut p22[band], taut);
    }
}

/// Row y - 1 of `buf`, or zeros above the first row.
fn prev_row<'b>(buf: &'b [f32], zeros: &'b [f32], y: usize, w: usize) -> &'b [f32] {
    if y > 0 { &buf[(y - 1) * w..y * w] } else { zeros }
}

struct PrimalRow<'r> {
    iwx: &'r [f32],
    iwy: &'r [f32],
    grad: &'r [f32],
    rho_c: &'r [f32],
    p11: &'r [f32],
    p12: &'r [f32],
    p12_prev: &'r [f32],
    p21: &'r [f32],
    p22: &'r [f32],
    p22_prev: &'r [f32],
}

/// Lanes processed together: the rows are cut into runs of this many pixels whose arithmetic
/// the compiler turns into vector instructions, and the squared update is summed per lane
/// (pixel x into lane x mod 8) so that the total does not depend on how a row is cut.
const LANES: usize = 8;

/// One pixel's inputs to the primal update: the dual variables there, to its left and above
/// (zero outside the image), and the linearised data term.
struct PrimalIn {
    p11: f32,
    p11_left: f32,
    p12: f32,
    p12_up: f32,
    p21: f32,
    p21_left: f32,
    p22: f32,
    p22_up: f32,
    ix: f32,
    iy: f32,
    g: f32,
    rho_c: f32,
}

/// The primal update of one pixel from (a, b) = (u1, u2): the new u1, u2 and the squared change.
#[inline(always)]
fn primal_pixel(i: PrimalIn, a: f32, b: f32, l_t: f32, theta: f32) -> (f32, f32, f32) {
    // Divergence (backward differences).
    let div1 = i.p11 - i.p11_left + i.p12 - i.p12_up;
    let div2 = i.p21 - i.p21_left + i.p22 - i.p22_up;
    // Point-wise thresholding of the linearised data term.
    let rho = i.rho_c + i.ix * a + i.iy * b;
    let lg = l_t * i.g;
    let safe_g = if i.g > f32::EPSILON { i.g } else { 1.0 };
    let inside = if i.g > f32::EPSILON { -rho / safe_g } else { 0.0 };
    let fi = if rho < -lg {
        l_t
    } else if rho > lg {
        -l_t
    } else {
        inside
    };
    let na = a + fi * i.ix + theta * div1;
    let nb = b + fi * i.iy + theta * div2;
    (na, nb, (na - a) * (na - a) + (nb - b) * (nb - b))
}

/// `LANES` values of `s` from `start`.
#[inline(always)]
fn lanes(s: &[f32], start: usize) -> [f32; LANES] {
    s[start..start + LANES].try_into().expect("LANES values")
}

/// `LANES` values of `s` from `start - 1`, with zero before the first.
#[inline(always)]
fn lanes_left(s: &[f32], start: usize) -> [f32; LANES] {
    if start > 0 {
        lanes(s, start - 1)
    } else {
        let mut v = [0.0; LANES];
        v[1..].copy_from_slice(&s[..LANES - 1]);
        v
    }
}

/// The primal update of one row; returns its Σ|Δu|². Runs of `LANES` pixels are computed lane by
/// lane on arrays, which the compiler vectorises; the rest of the row pixel by pixel, with the
/// same arithmetic.
#[inline(always)]
fn primal_row(r: PrimalRow, u1: &mut [f32], u2: &mut [f32], l_t: f32, theta: f32) -> f32 {
    let n = u1.len();
    let mut err = [0f32; LANES];
    let runs = n / LANES * LANES;
    for start in (0..runs).step_by(LANES) {
        let (p11, p11_left, p12, p12_up) = (lanes(r.p11, start), lanes_left(r.p11, start), lanes(r.p12, start), lanes(r.p12_prev, start));
        let (p21, p21_left, p22, p22_up) = (lanes(r.p21, start), lanes_left(r.p21, start), lanes(r.p22, start), lanes(r.p22_prev, start));
        let (ix, iy, g, rho_c) = (lanes(r.iwx, start), lanes(r.iwy, start), lanes(r.grad, start), lanes(r.rho_c, start));
        let (a, b) = (lanes(u1, start), lanes(u2, start));
        let (mut na, mut nb) = ([0f32; LANES], [0f32; LANES]);
        for k in 0..LANES {
            let input = PrimalIn {
                p11: p11[k],
                p11_left: p11_left[k],
                p12: p12[k],
                p12_up: p12_up[k],
                p21: p21[k],
                p21_left: p21_left[k],
                p22: p22[k],
                p22_up: p22_up[k],
                ix: ix[k],
                iy: iy[k],
                g: g[k],
                rho_c: rho_c[k],
            };
            let d;
            (na[k], nb[k], d) = primal_pixel(input, a[k], b[k], l_t, theta);
            err[k] += d;
        }
        u1[start..start + LANES].copy_from_slice(&na);
        u2[start..start + LANES].copy_from_slice(&nb);
    }
    for x in runs..n {
        let d;
        (u1[x], u2[x], d) = primal_pixel(primal_in(&r, x), u1[x], u2[x], l_t, theta);
        err[x % LANES] += d;
    }
    err.iter().sum()
}

/// [`PrimalIn`] of pixel x of a row.
#[inline(always)]
fn primal_in(r: &PrimalRow, x: usize) -> PrimalIn {
    let left = |p: &[f32]| if x > 0 { p[x - 1] } else { 0.0 };
    PrimalIn {
        p11: r.p11[x],
        p11_left: left(r.p11),
        p12: r.p12[x],
        p12_up: r.p12_prev[x],
        p21: r.p21[x],
        p21_left: left(r.p21),
        p22: r.p22[x],
        p22_up: r.p22_prev[x],
        ix: r.iwx[x],
        iy: r.iwy[x],
        g: r.grad[x],
        rho_c: r.rho_c[x],
    }
}

/// The projected dual update of one pixel from the forward differences (ux, uy) of u there.
#[inline(always)]
fn dual_pixel(px: f32, py: f32, ux: f32, uy: f32, taut: f32) -> (f32, f32) {
    let ng = 1.0 + taut * (ux * ux + uy * uy).sqrt();
    ((px + taut * ux) / ng, (py + taut * uy) / ng)
}

/// The dual update of one row of one flow component; runs of `LANES` as in [`primal_row`].
#[inline(always)]
fn dual_row(u: &[f32], u_next: &[f32], px: &mut [f32], py: &mut [f32], taut: f32) {
    let n = px.len();
    // The last pixel's horizontal difference is zero: runs stop before it.
    let runs = n.saturating_sub(1) / LANES * LANES;
    for start in (0..runs).step_by(LANES) {
        let (here, right, below) = (lanes(u, start), lanes(u, start + 1), lanes(u_next, start));
        let (p, q) = (lanes(px, start), lanes(py, start));
        let (mut np, mut nq) = ([0f32; LANES], [0f32; LANES]);
        for k in 0..LANES {
            (np[k], nq[k]) = dual_pixel(p[k], q[k], right[k] - here[k], below[k] - here[k], taut);
        }
        px[start..start + LANES].copy_from_slice(&np);
        py[start..start + LANES].copy_from_slice(&nq);
    }
    for x in runs..n {
        let ux = if x + 1 < n { u[x + 1] - u[x] } else { 0.0 };
        (px[x], py[x]) = dual_pixel(px[x], py[x], ux, u_next[x] - u[x], taut);
    }
}

/// Central differences inside, one-sided halves on the border (as OpenCV's TV-L1).
fn centered_gradient(src: &[f32], w: usize, h: usize) -> (Vec<f32>, Vec<f32>) {
    let mut dx = vec![0.0; w * h];
    let mut dy = vec![0.0; w * h];
    for y in 0..h {
        let (ym, yp) = (y.saturating_sub(1), (y + 1).min(h - 1));
        for x in 0..w {
            let (xm, xp) = (x.saturating_sub(1), (x + 1).min(w - 1));
            dx[y * w + x] = 0.5 * (src[y * w + xp] - src[y * w + xm]);
            dy[y * w + x] = 0.5 * (src[yp * w + x] - src[ym * w + x]);
        }
    }
    (dx, dy)
}

/// Keys' cubic convolution weights with a = -0.75 (OpenCV's INTER_CUBIC).
#[inline(always)]
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let w0 = ((A * (t + 1.0) - 5.0 * A) * (t + 1.0) + 8.0 * A) * (t + 1.0) - 4.0 * A;
    let w1 = ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    let w2 = ((A + 2.0) * (1.0 - t) - (A + 3.0)) * (1.0 - t) * (1.0 - t) + 1.0;
    [w0, w1, w2, 1.0 - w0 - w1 - w2]
}

/// Bicubic samples at (fx, fy) of the images interleaved in `taps` (four values per pixel, each
/// sampled with the same weights and in the same order as alone); taps outside count as 0.
#[inline(always)]
fn sample_cubic(taps: &[[f32; 4]], w: usize, h: usize, fx: f32, fy: f32) -> [f32; 4] {
    let (x0, y0) = (fx.floor(), fy.floor());
    let (sx, sy) = (x0 as i64 - 1, y0 as i64 - 1);
    if sx >= w as i64 || sx + 4 <= 0 || sy >= h as i64 || sy + 4 <= 0 || !fx.is_finite() || !fy.is_finite() {
        return [0.0; 4];
    }
    let (wx, wy) = (cubic_weights(fx - x0), cubic_weights(fy - y0));
    let interior = sx >= 0 && sy >= 0 && sx + 4 <= w as i64 && sy + 4 <= h as i64;
    if interior {
        // The four rows' sums side by side (each in its own order, as below), so that they
        // fill the vector registers; then the same weighted sum of the rows.
        let mut rows = [[0f32; 4]; 4];
        for (i, wxi) in wx.iter().enumerate() {
            for (j, row) in rows.iter_mut().enumerate() {
                let t = taps[(sy as usize + j) * w + sx as usize + i];
                for k in 0..4 {
                    row[k] += t[k] * wxi;
                }
            }
        }
        let mut acc = [0f32; 4];
        for (row, wyj) in rows.iter().zip(&wy) {
            for k in 0..4 {
                acc[k] += row[k] * wyj;
            }
        }
        return acc;
    }
    // Near the border: row by row, taps outside skipped.
    let mut acc = [0f32; 4];
    for (j, wyj) in wy.iter().enumerate() {
        let yy = sy + j as i64;
        if yy < 0 || yy >= h as i64 {
            continue;
        }
        let row = &taps[yy as usize * w..(yy as usize + 1) * w];
        let mut racc = [0f32; 4];
        for (i, wxi) in wx.iter().enumerate() {
            let xx = sx + i as i64;
            if xx >= 0 && xx < w as i64 {
                let t = row[xx as usize];
                racc = std::array::from_fn(|k| racc[k] + t[k] * wxi);
            }
        }
        acc = std::array::from_fn(|k| acc[k] + racc[k] * wyj);
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texture(w: usize, h: usize, dx: f32, dy: f32) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| {
            let (x, y) = (x as f32 - dx, y as f32 - dy);
            0.5 + 0.2 * (x * 0.31).sin() * (y * 0.27).cos() + 0.15 * ((x + 2.0 * y) * 0.13).sin() + 0.1 * ((x * 0.71 - y * 0.45).cos())
        })
    }

    #[test]
    fn identical_frames_give_zero_flow() {
        let a = texture(40, 36, 0.0, 0.0);
        let f = tvl1_flow(&a, &a, &Tvl1Params::default(), 1).unwrap();
        assert!(f.u().iter().chain(f.v()).all(|v| v.abs() < 1e-4));
    }

    #[test]
    fn flat_frames_give_finite_zero_flow() {
        let a = GrayImage::filled(20, 20, 0.3);
        let b = GrayImage::filled(20, 20, 0.7);
        let f = tvl1_flow(&a, &b, &Tvl1Params::default(), 1).unwrap();
        f.check_finite("flow").unwrap();
        assert!(f.u().iter().chain(f.v()).all(|v| v.abs() < 1e-3));
    }

    #[test]
    fn translation_is_recovered_and_threads_agree() {
        let (dx, dy) = (1.3, -0.6);
        let a = texture(64, 64, 0.0, 0.0);
        let b = texture(64, 64, dx, dy);
        let f = tvl1_flow(&a, &b, &Tvl1Params::default(), 1).unwrap();
        let truth = Flow::new(64, 64, vec![dx; 64 * 64], vec![dy; 64 * 64]).unwrap();
        let epe = f.mean_endpoint_error(&truth, 8).unwrap();
        assert!(epe < 0.1, "EPE {epe}");
        let g = tvl1_flow(&a, &b, &Tvl1Params::default(), 2).unwrap();
        assert!(g.mean_endpoint_error(&f, 0).unwrap() < 1e-3);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let a = GrayImage::filled(10, 10, 0.0);
        let b = GrayImage::filled(11, 10, 0.0);
        assert!(tvl1_flow(&a, &b, &Tvl1Params::default(), 1).is_err());
        let mut nan = a.clone();
        nan.data_mut()[3] = f32::NAN;
        let err = tvl1_flow(&a, &nan, &Tvl1Params::default(), 1).unwrap_err().to_string();
        assert!(err.contains("second frame") && err.contains("index 3"), "{err}");
        let p = Tvl1Params { scale_step: 1.5, ..Default::default() };
        assert!(tvl1_flow(&a, &a, &p, 1).is_err());
    }

    /// Rows computed in vector runs equal the same rows computed pixel by pixel, bit for bit.
    #[test]
    fn rows_in_runs_equal_rows_pixel_by_pixel() {
        let mut state = 7u64;
        let mut random = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
                })
                .collect()
        };
        for n in [1, 7, 8, 9, 16, 37, 128] {
            let v: Vec<Vec<f32>> = (0..12).map(|_| random(n)).collect();
            // Some pixels without gradient, and thresholds on both sides.
            let grad: Vec<f32> = v[2].iter().enumerate().map(|(x, g)| if x % 5 == 0 { 0.0 } else { g.abs() * 30.0 }).collect();
            let row = || PrimalRow {
                iwx: &v[0],
                iwy: &v[1],
                grad: &grad,
                rho_c: &v[3],
                p11: &v[4],
                p12: &v[5],
                p12_prev: &v[6],
                p21: &v[7],
                p22: &v[8],
                p22_prev: &v[9],
            };
            let (mut u1, mut u2) = (v[10].clone(), v[11].clone());
            let err = primal_row(row(), &mut u1, &mut u2, 0.045, 0.3);
            let (mut e1, mut e2, mut lanes) = (v[10].clone(), v[11].clone(), [0f32; LANES]);
            for x in 0..n {
                let d;
                (e1[x], e2[x], d) = primal_pixel(primal_in(&row(), x), e1[x], e2[x], 0.045, 0.3);
                lanes[x % LANES] += d;
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!((bits(&u1), bits(&u2)), (bits(&e1), bits(&e2)), "width {n}");
            assert_eq!(err.to_bits(), lanes.iter().sum::<f32>().to_bits(), "width {n}");

            let (mut px, mut py) = (v[4].clone(), v[5].clone());
            dual_row(&v[10], &v[11], &mut px, &mut py, 0.83);
            for x in 0..n {
                let ux = if x + 1 < n { v[10][x + 1] - v[10][x] } else { 0.0 };
                let (a, b) = dual_pixel(v[4][x], v[5][x], ux, v[11][x] - v[10][x], 0.83);
                assert_eq!((px[x].to_bits(), py[x].to_bits()), (a.to_bits(), b.to_bits()), "width {n}, pixel {x}");
            }
        }
    }

    /// Interleaved sampling gives each image exactly what sampling it alone does, inside, on the
    /// border and outside.
    #[test]
    fn interleaved_samples_equal_samples_of_each_image() {
        let (w, h) = (9, 7);
        let img = |k: usize| -> Vec<f32> { (0..w * h).map(|i| ((i * (k + 3) * 7919) % 101) as f32 / 10.0 - 5.0).collect() };
        let imgs = [img(0), img(1), img(2), img(3)];
        let taps: Vec<[f32; 4]> = (0..w * h).map(|i| std::array::from_fn(|k| imgs[k][i])).collect();
        let alone = |img: &[f32], fx: f32, fy: f32| -> f32 {
            let (x0, y0) = (fx.floor(), fy.floor());
            let (wx, wy) = (cubic_weights(fx - x0), cubic_weights(fy - y0));
            let mut acc = 0.0;
            for (j, wyj) in wy.iter().enumerate() {
                let yy = y0 as i64 - 1 + j as i64;
                if !(0..h as i64).contains(&yy) {
                    continue;
                }
                let mut racc = 0.0;
                for (i, wxi) in wx.iter().enumerate() {
                    let xx = x0 as i64 - 1 + i as i64;
                    if (0..w as i64).contains(&xx) {
                        racc += img[yy as usize * w + xx as usize] * wxi;
                    }
                }
                acc += racc * wyj;
            }
            acc
        };
        // Inside (where the four rows are summed side by side), across the border, and outside.
        let inside = (0..40).map(|i| (1.0 + (i * 37 % 50) as f32 * 0.099, 1.0 + (i * 53 % 30) as f32 * 0.099));
        let border = [(4.3, 3.6), (0.2, 0.9), (8.7, 6.2), (-1.5, 3.0), (3.0, -2.5), (10.9, 2.0), (-7.0, -7.0)];
        for (fx, fy) in inside.chain(border) {
            let got = sample_cubic(&taps, w, h, fx, fy);
            for k in 0..4 {
                assert_eq!(got[k].to_bits(), alone(&imgs[k], fx, fy).to_bits(), "image {k} at ({fx}, {fy})");
            }
        }
    }

    #[test]
    fn cubic_weights_sum_to_one_and_interpolate() {
        for t in [0.0, 0.25, 0.5, 0.9] {
            assert!((cubic_weights(t).iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert_eq!(cubic_weights(0.0), [0.0, 1.0, 0.0, 0.0]);
    }
}
