//! Dense optical flow: the TV-L1 solver, optical strain, Middlebury `.flo` files and the
//! colour-wheel visualisation.

mod colour;
mod flo;
mod median;
mod strain;
pub mod tvl1;

pub use colour::{colour_png, colour_wheel_rgb, save_colour_png};
pub use flo::{encode_flo, read_flo, write_flo};
pub use strain::optical_strain;
pub use tvl1::{Tvl1Params, tvl1_flow};

use crate::error::{Error, Result};
use crate::image::GrayImage;

/// A dense flow field: pixel (x, y) of the first frame moves to (x + u, y + v) in the second.
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    width: usize,
    height: usize,
    u: Vec<f32>,
    v: Vec<f32>,
}

impl Flow {
    pub fn new(width: usize, height: usize, u: Vec<f32>, v: Vec<f32>) -> Result<Flow> {
        if width == 0 || height == 0 {
            return Err(Error::InvalidArgument(format!("flow must not be empty ({width}x{height})")));
        }
        for (name, c) in [("u", &u), ("v", &v)] {
            if c.len() != width * height {
                return Err(Error::size(format!("flow component {name}"), width * height, c.len()));
            }
        }
        Ok(Flow { width, height, u, v })
    }

    pub fn zeros(width: usize, height: usize) -> Flow {
        Flow { width, height, u: vec![0.0; width * height], v: vec![0.0; width * height] }
    }

    pub fn width(&self) -> usize {
        self.width
    }
    pub fn height(&self) -> usize {
        self.height
    }
    pub fn u(&self) -> &[f32] {
        &self.u
    }
    pub fn v(&self) -> &[f32] {
        &self.v
    }
    pub fn u_image(&self) -> GrayImage {
        GrayImage::new(self.width, self.height, self.u.clone()).expect("consistent size")
    }
    pub fn v_image(&self) -> GrayImage {
        GrayImage::new(self.width, self.height, self.v.clone()).expect("consistent size")
    }

    /// Mean end-point error against `truth`, optionally ignoring a border of `margin` pixels.
    pub fn mean_endpoint_error(&self, truth: &Flow, margin: usize) -> Result<f32> {
        if (self.width, self.height) != (truth.width, truth.height) {
            return Err(Error::size("flow size", format!("{}x{}", truth.width, truth.height), format!("{}x{}", self.width, self.height)));
        }
        if 2 * margin >= self.width || 2 * margin >= self.height {
            return Err(Error::InvalidArgument(format!("margin {margin} leaves no pixels")));
        }
        let mut sum = 0f64;
        let mut n = 0usize;
        for y in margin..self.height - margin {
            for x in margin..self.width - margin {
                let i = y * self.width + x;
                let (du, dv) = (self.u[i] - truth.u[i], self.v[i] - truth.v[i]);
                sum += ((du * du + dv * dv) as f64).sqrt();
                n += 1;
            }
        }
        Ok((sum / n as f64) as f32)
    }

    pub fn check_finite(&self, what: &str) -> Result<()> {
        crate::error::check_finite(&format!("{what} (u)"), &self.u)?;
        crate::error::check_finite(&format!("{what} (v)"), &self.v)
    }
}
