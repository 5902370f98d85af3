//! Neural network models trained by the host.

pub mod layers;
pub mod skd_tstsan;
