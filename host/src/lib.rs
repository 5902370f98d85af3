//! `mer-host`: the workstation side of mer. The `mer` binary is a thin command-line layer over
//! these modules.

pub mod demo;
pub mod flow_bench;
pub mod learnability;
pub mod prepare;
pub mod progress;
pub mod torch_info;
