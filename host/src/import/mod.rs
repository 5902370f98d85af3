//! Reading model weights that other tools wrote.

pub mod magnet;
pub mod official;

/// Re-exported so that crates without their own tch dependency can name what this module returns.
pub use tch::{Kind, Tensor};
pub use torch_archive::{Checkpoint, Description, EntryInfo, describe, read_checkpoint, read_state_dict};
