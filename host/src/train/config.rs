//! Everything that determines a training run, recorded verbatim in its outputs.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::augment::Augment;
use super::losses::LossConfig;
use super::optimizer::AdamConfig;
use crate::model::skd_tstsan::{Ablation, SKD_TSTSAN, SkdSettings};
use crate::model::{Arch, ArchSettings};

/// How each LOSO fold chooses the model it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Never looks at the test subject: the model after the fixed budget, or the epoch with the
    /// best validation UF1 on held-out training subjects (`--val-subjects`).
    Honest,
    /// The official code's protocol: evaluate on the test subject after every epoch, keep the
    /// epoch with the best test accuracy (later epochs win ties), stop at accuracy 1.0.
    /// Optimistic by construction.
    Paper,
}

impl Protocol {
    /// The sentence every report produced this way carries.
    pub fn note(self) -> &'static str {
        match self {
            Protocol::Honest => {
                "honest LOSO: model selection never saw the test subject (fixed budget or validation subjects drawn from the training subjects)"
            }
            Protocol::Paper => {
                "paper protocol: each fold reports the epoch with the best accuracy ON ITS TEST SUBJECT and stops at 100 % test accuracy, as the official code does; these figures are optimistic upper bounds, not LOSO estimates"
            }
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Honest => "honest",
            Protocol::Paper => "paper",
        })
    }
}

/// Shard `index` (1-based) of `count`: the subjects at sorted positions k with k mod count == index − 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub fn select<T: Clone>(&self, sorted: &[T]) -> Vec<T> {
        sorted.iter().enumerate().filter(|(k, _)| k % self.count == self.index - 1).map(|(_, s)| s.clone()).collect()
    }
}

impl FromStr for Shard {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Shard> {
        let parsed = s.split_once('/').and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) if count >= 1 && (1..=count).contains(&index) => Ok(Shard { index, count }),
            _ => bail!("--fold expects i/n with 1 ≤ i ≤ n (e.g. 3/8), got {s:?}"),
        }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Re-exported where the training configuration used to define it.
use crate::model::skd_tstsan::MagnetMode;

/// Everything that determines a run. In run.json the architecture's own settings sit beside the
/// shared ones (`arch`, then e.g. SKD-TSTSAN's `amp`, `ablation`, `init`, `magnet`), as records
/// written before the settings had a type of their own hold them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "TrainConfigRecord")]
pub struct TrainConfig {
    pub arch: Arch,
    pub protocol: Protocol,
    /// Iterations (batches) per fold.
    pub iters: usize,
    pub batch: usize,
    pub seed: u64,
    pub optimizer: AdamConfig,
    pub loss: LossConfig,
    /// Honest protocol only: training subjects held out per fold to pick the epoch (0 = the
    /// model after the fixed budget).
    pub val_subjects: usize,
    /// Iterations between resumable checkpoints (taken at the end of an epoch).
    pub checkpoint_every: usize,
    /// Training-time augmentation (records from before it existed: none).
    pub augment: Augment,
    /// The architecture's own settings.
    #[serde(flatten)]
    pub settings: ArchSettings,
}

/// run.json's configuration as written: the settings of every architecture optional, so that
/// older records (which gave every architecture SKD-TSTSAN's) still read.
#[derive(Deserialize)]
struct TrainConfigRecord {
    arch: Arch,
    protocol: Protocol,
    iters: usize,
    batch: usize,
    seed: u64,
    optimizer: AdamConfig,
    loss: LossConfig,
    val_subjects: usize,
    checkpoint_every: usize,
    #[serde(default)]
    augment: Augment,
    amp: Option<f64>,
    ablation: Option<Ablation>,
    init: Option<PathBuf>,
    magnet: Option<(PathBuf, MagnetMode)>,
}

impl From<TrainConfigRecord> for TrainConfig {
    fn from(r: TrainConfigRecord) -> TrainConfig {
        let settings = match r.arch.default_settings() {
            ArchSettings::Skd(d) => ArchSettings::Skd(SkdSettings {
                amp: r.amp.unwrap_or(d.amp),
                ablation: r.ablation.unwrap_or(d.ablation),
                init: r.init,
                magnet: r.magnet,
            }),
            other => other,
        };
        TrainConfig {
            arch: r.arch,
            protocol: r.protocol,
            iters: r.iters,
            batch: r.batch,
            seed: r.seed,
            optimizer: r.optimizer,
            loss: r.loss,
            val_subjects: r.val_subjects,
            checkpoint_every: r.checkpoint_every,
            augment: r.augment,
            settings,
        }
    }
}

impl Default for TrainConfig {
    /// The official recipe: SKD-TSTSAN, batch 16, 20k iterations, amplification 2, seed 1337.
    fn default() -> Self {
        TrainConfig::new(SKD_TSTSAN)
    }
}

impl TrainConfig {
    /// The official recipe's shared settings for `arch`, with its default settings.
    pub fn new(arch: Arch) -> TrainConfig {
        TrainConfig {
            arch,
            protocol: Protocol::Honest,
            iters: 20_000,
            batch: 16,
            seed: 1337,
            optimizer: AdamConfig::default(),
            loss: LossConfig::default(),
            val_subjects: 0,
            checkpoint_every: 1000,
            augment: Augment::None,
            settings: arch.default_settings(),
        }
    }

    /// SKD-TSTSAN's settings, for the architectures that take them.
    pub fn skd(&self) -> Option<&SkdSettings> {
        match &self.settings {
            ArchSettings::Skd(s) => Some(s),
            ArchSettings::None {} => None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let arch = self.arch;
        if std::mem::discriminant(&self.settings) != std::mem::discriminant(&arch.default_settings()) {
            bail!("the configuration holds settings of another architecture than {arch}");
        }
        arch.validate(&self.settings)?;
        if self.iters == 0 || self.batch == 0 {
            bail!("--iters and --batch must be at least 1");
        }
        if let Some(why) = self.augment.refusal(arch) {
            bail!("{why}");
        }
        if self.protocol == Protocol::Paper && self.val_subjects > 0 {
            bail!("--val-subjects belongs to the honest protocol; the paper protocol selects on the test subject");
        }
        Ok(())
    }

    /// The same configuration, ignoring what may legitimately differ between shards of one run.
    pub fn comparable(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config serialises");
        v.as_object_mut().expect("object").remove("checkpoint_every");
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_subjects() {
        let subjects: Vec<u32> = (1..=10).collect();
        let mut all: Vec<u32> = (1..=3).flat_map(|i| Shard { index: i, count: 3 }.select(&subjects)).collect();
        all.sort();
        assert_eq!(all, subjects);
        assert_eq!(Shard { index: 2, count: 3 }.select(&subjects), vec![2, 5, 8]);
        assert_eq!("3/8".parse::<Shard>().unwrap(), Shard { index: 3, count: 8 });
        for bad in ["0/3", "4/3", "1/0", "a/b", "3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
