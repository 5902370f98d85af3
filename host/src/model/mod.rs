//! Neural network models trained by the host.

pub mod htnet;
pub mod layers;
pub mod skd_tstsan;
