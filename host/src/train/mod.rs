//! Training and leave-one-subject-out evaluation.

pub mod augment;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod ensemble;
pub mod fold;
/// The losses live with the models they train.
pub use crate::model::losses;
pub mod optimizer;
pub mod record;
pub mod report;
pub mod run;
