//! `mer-shared`: everything both sides of the product must compute identically.
//!
//! The host trains on tensors built here and the device classifies tensors built here, so a
//! model always sees the input it was trained on. Nothing in this crate touches libtorch or a
//! camera; it builds for aarch64.

pub mod atomic_file;
pub mod bundle;
pub mod classifier;
pub mod error;
pub mod event;
pub mod face;
pub mod flow;
pub mod flow_image;
pub mod frames;
pub mod image;
pub mod inference;
pub mod input;
pub mod labels;
pub mod logging;
pub mod manifest;
pub mod npy;
pub mod push;
pub mod stdout;
pub mod synth;

pub use error::{Error, Result};
pub use flow::Flow;
pub use image::GrayImage;
