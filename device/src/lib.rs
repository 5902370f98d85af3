//! `mer-device`: the runtime on the interview-room board. Hardware sits behind traits so the
//! whole pipeline runs on replayed or synthetic frames in tests.

pub mod bayer;
pub mod camera;
pub mod clip;
pub mod config;
pub mod control;
pub mod daemon;
mod deadline;
pub mod event_log;
pub mod face;
pub mod gpio;
pub mod model_store;
pub mod pipeline;
pub mod probation;
pub mod push_server;
pub mod repeats;
pub mod service;
pub mod source;
pub mod spot_stream;
pub mod spotting;

#[cfg(test)]
mod push_tests;
#[cfg(test)]
mod test_bundles;
#[cfg(test)]
mod test_relay;
