//! `mer-host`: the workstation side of mer. The `mer` binary is a thin command-line layer over
//! these modules.

pub mod calibration;
pub mod dataset;
pub mod demo;
pub mod evaluate;
pub mod events_pull;
pub mod export;
pub mod fleet;
pub mod flow_bench;
pub mod import;
pub mod known_devices;
pub mod learnability;
pub mod metrics;
pub mod model;
pub mod photo_clips;
pub mod plots;
pub mod prepare;
pub mod progress;
pub mod spot_eval;
pub mod spot_recognition;
pub mod spot_timeline;
pub mod torch_info;
pub mod train;
pub mod weights;
