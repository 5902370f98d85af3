//! Training and leave-one-subject-out evaluation.

pub mod losses;
