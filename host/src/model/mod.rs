//! Neural network models trained by the host.

pub mod am3f_flownet;
pub mod htnet;
pub mod layers;
pub mod skd_tstsan;
