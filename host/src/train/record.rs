//! The records of a run directory that every later step reads back: `RUN/run.json` (what the
//! run was made from) and where each fold's records lie. Training writes them, reports and
//! exports read them.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::config::{Shard, TrainConfig};
use super::ensemble::Member;
use crate::dataset::samples::DataSource;

/// What a run directory was made from (`RUN/run.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub config: TrainConfig,
    pub data: DataSource,
    pub classes: Vec<String>,
    /// Every subject of the dataset, i.e. the folds of the complete run.
    pub subjects: Vec<String>,
    pub samples: usize,
    /// The shards whose folds this directory holds (empty = all folds of one unsharded run).
    pub shards: Vec<Shard>,
    /// An ensemble's member runs (`mer ensemble`); empty for a trained run, whose `config` is
    /// then the whole story. In an ensemble `config` is the first member's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ensemble: Vec<Member>,
}

impl RunInfo {
    pub fn read(dir: &Path) -> Result<RunInfo> {
        let path = dir.join("run.json");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {} (is {} a training run?)", path.display(), dir.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Why `other` cannot belong to the same experiment, if it cannot.
    pub fn mismatch(&self, other: &RunInfo) -> Option<String> {
        if self.config.comparable() != other.config.comparable() {
            return Some("the training configurations differ".into());
        }
        if self.data.digest != other.data.digest {
            return Some(format!("the data differ (preparation digest {} vs {})", self.data.digest, other.data.digest));
        }
        if self.ensemble != other.ensemble {
            return Some("the ensembles' members differ".into());
        }
        if self.classes != other.classes || self.subjects != other.subjects || self.samples != other.samples {
            return Some("the class lists, subjects or sample counts differ".into());
        }
        None
    }
}

/// `RUN/folds/<subject>`: a fold's `fold.json`, `epochs.jsonl` and weights.
pub fn fold_dir(run: &Path, subject: &str) -> PathBuf {
    run.join("folds").join(subject)
}
