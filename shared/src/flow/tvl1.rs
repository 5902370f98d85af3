//! Duality-based TV-L1 optical flow (Zach, Pock & Bischof 2007; Sánchez et al. 2013) with the
//! parameterisation and defaults of OpenCV's `DualTVL1OpticalFlow`, which the official
//! SKD-TSTSAN preprocessing calls.
//!
//! The iteration is the same as OpenCV's; the speed comes from fusing its eight image passes
//! per inner iteration into two (thresholding + divergence + primal update, then forward
//! gradient + dual update), branch-free inner loops the compiler vectorises, and optional
//! row-band parallelism. Warping samples bicubically at exact sub-pixel positions (OpenCV
//! rounds them to 1/32 px).

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
    i1: &'a [f32],
    i1x: Vec<f32>,
    i1y: Vec<f32>,
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
        Level {
            w,
            h,
            i0: i0.data(),
            i1: i1.data(),
            i1x,
            i1y,
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
        let (w, h) = (self.w, self.h);
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                let (fx, fy) = (x as f32 + u1[i], y as f32 + u2[i]);
                let [a, b, c] = sample_cubic3([self.i1, &self.i1x, &self.i1y], w, h, fx, fy);
                self.iwx[i] = b;
                self.iwy[i] = c;
                self.grad[i] = b * b + c * c;
                self.rho_c[i] = a - b * u1[i] - c * u2[i] - self.i0[i];
            }
        }
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

#[inline(always)]
fn primal_row(r: PrimalRow, u1: &mut [f32], u2: &mut [f32], l_t: f32, theta: f32) -> f32 {
    let n = u1.len();
    let (iwx, iwy, grad, rho_c) = (&r.iwx[..n], &r.iwy[..n], &r.grad[..n], &r.rho_c[..n]);
    let (p11, p12, p12p) = (&r.p11[..n], &r.p12[..n], &r.p12_prev[..n]);
    let (p21, p22, p22p) = (&r.p21[..n], &r.p22[..n], &r.p22_prev[..n]);
    let u2 = &mut u2[..n];
    let mut err = [0f32; 8];
    for x in 0..n {
        // Divergence (backward differences; the first column and row see zero outside).
        let left1 = if x > 0 { p11[x - 1] } else { 0.0 };
        let left2 = if x > 0 { p21[x - 1] } else { 0.0 };
        let div1 = p11[x] - left1 + p12[x] - p12p[x];
        let div2 = p21[x] - left2 + p22[x] - p22p[x];
        // Point-wise thresholding of the linearised data term.
        let (ix, iy, g) = (iwx[x], iwy[x], grad[x]);
        let (a, b) = (u1[x], u2[x]);
        let rho = rho_c[x] + ix * a + iy * b;
        let lg = l_t * g;
        let safe_g = if g > f32::EPSILON { g } else { 1.0 };
        let inside = if g > f32::EPSILON { -rho / safe_g } else { 0.0 };
        let fi = if rho < -lg {
            l_t
        } else if rho > lg {
            -l_t
        } else {
            inside
        };
        let na = a + fi * ix + theta * div1;
        let nb = b + fi * iy + theta * div2;
        u1[x] = na;
        u2[x] = nb;
        err[x & 7] += (na - a) * (na - a) + (nb - b) * (nb - b);
    }
    err.iter().sum()
}

#[inline(always)]
fn dual_row(u: &[f32], u_next: &[f32], px: &mut [f32], py: &mut [f32], taut: f32) {
    let n = px.len();
    let (u, u_next, py) = (&u[..n], &u_next[..n], &mut py[..n]);
    for x in 0..n {
        let ux = if x + 1 < n { u[x + 1] - u[x] } else { 0.0 };
        let uy = u_next[x] - u[x];
        let ng = 1.0 + taut * (ux * ux + uy * uy).sqrt();
        px[x] = (px[x] + taut * ux) / ng;
        py[x] = (py[x] + taut * uy) / ng;
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

/// Bicubic samples of three same-size images at (fx, fy); taps outside the image count as 0.
#[inline(always)]
fn sample_cubic3(imgs: [&[f32]; 3], w: usize, h: usize, fx: f32, fy: f32) -> [f32; 3] {
    let (x0, y0) = (fx.floor(), fy.floor());
    let (sx, sy) = (x0 as i64 - 1, y0 as i64 - 1);
    if sx >= w as i64 || sx + 4 <= 0 || sy >= h as i64 || sy + 4 <= 0 || !fx.is_finite() || !fy.is_finite() {
        return [0.0; 3];
    }
    let (wx, wy) = (cubic_weights(fx - x0), cubic_weights(fy - y0));
    let mut out = [0f32; 3];
    let interior = sx >= 0 && sy >= 0 && sx + 4 <= w as i64 && sy + 4 <= h as i64;
    for (k, img) in imgs.iter().enumerate() {
        let mut acc = 0.0;
        for (j, wyj) in wy.iter().enumerate() {
            let yy = sy + j as i64;
            if !interior && (yy < 0 || yy >= h as i64) {
                continue;
            }
            let row = &img[yy as usize * w..(yy as usize + 1) * w];
            let mut racc = 0.0;
            for (i, wxi) in wx.iter().enumerate() {
                let xx = sx + i as i64;
                if interior || (xx >= 0 && xx < w as i64) {
                    racc += row[xx as usize] * wxi;
                }
            }
            acc += racc * wyj;
        }
        out[k] = acc;
    }
    out
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

    #[test]
    fn cubic_weights_sum_to_one_and_interpolate() {
        for t in [0.0, 0.25, 0.5, 0.9] {
            assert!((cubic_weights(t).iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert_eq!(cubic_weights(0.0), [0.0, 1.0, 0.0, 0.0]);
    }
}
