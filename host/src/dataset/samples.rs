//! Samples read whole as plain arrays, with where they came from: what a loader hands to
//! training, which turns them into tensors.

use mer_shared::manifest::InputProvenance;
use serde::{Deserialize, Serialize};

/// Where the samples came from, recorded in every run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSource {
    pub path: String,
    /// Digest of the preparation parameters (identifies the cache's content).
    pub digest: String,
    pub taxonomy: String,
    /// Where the inputs came from (runs recorded before this field say `unknown`).
    #[serde(default)]
    pub inputs: InputProvenance,
    /// Composite data: the source datasets kept (`mer train --sources`); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

/// N samples of one shape, sample after sample in `values`, with one label, subject and id each.
#[derive(Debug, Clone)]
pub struct SampleArrays {
    /// (C, H, W) of one sample.
    pub shape: [usize; 3],
    pub values: Vec<f32>,
    pub labels: Vec<i64>,
    pub subjects: Vec<String>,
    pub ids: Vec<String>,
    pub classes: Vec<String>,
    pub source: DataSource,
}
