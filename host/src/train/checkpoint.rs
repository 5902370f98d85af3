//! Training state on disk: a fold's kept weights and its resumable checkpoint (weights plus
//! optimiser state), and a fold's starting weights.

use std::path::Path;

use anyhow::{Context, Result, bail};
use mer_shared::atomic_file;
use serde::Serialize;
use tch::{Tensor, nn};

use super::config::TrainConfig;
use super::optimizer::Adam;
use crate::weights::{copy_into, read_tensors, sorted_variables, write_tensors_atomic};

/// Pretty JSON plus a newline, written atomically.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    atomic_file::write(path, (text + "\n").as_bytes())?;
    Ok(())
}

/// A copy of every variable held in memory: a fold's best weights so far, which change at many
/// epochs but need to reach the disk only with a resumable checkpoint.
pub struct Snapshot(Vec<(String, Tensor)>);

impl Snapshot {
    pub fn of(vs: &nn::VarStore) -> Snapshot {
        Snapshot(sorted_variables(vs).into_iter().map(|(n, t)| (n, t.detach().copy())).collect())
    }

    pub fn read(path: &Path) -> Result<Snapshot> {
        Ok(Snapshot(read_tensors(path)?))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_tensors_atomic(path, &self.0)
    }

    pub fn restore(&self, vs: &mut nn::VarStore) -> Result<()> {
        copy_into(vs, &self.0, |_| true, Path::new("the weights kept in memory"))?;
        Ok(())
    }
}

/// Weights plus optimiser state, for resuming a fold.
pub fn save_training_state(path: &Path, vs: &nn::VarStore, opt: &Adam) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = sorted_variables(vs).into_iter().map(|(n, t)| (format!("model.{n}"), t)).collect();
    named.extend(opt.state());
    write_tensors_atomic(path, &named)
}

pub fn load_training_state(path: &Path, vs: &mut nn::VarStore, opt: &mut Adam) -> Result<()> {
    let named = read_tensors(path)?;
    let model: Vec<(String, Tensor)> =
        named.iter().filter_map(|(n, t)| n.strip_prefix("model.").map(|s| (s.to_string(), t.shallow_clone()))).collect();
    copy_into(vs, &model, |_| true, path)?;
    opt.load_state(&named).with_context(|| format!("resuming from {}", path.display()))
}

/// Starting weights of a fold: `--init` (classifier layers dropped, as the reference does when
/// fine-tuning from CK+), else the magnification checkpoint, else the fresh initialisation.
pub fn initialise(vs: &mut nn::VarStore, config: &TrainConfig) -> Result<()> {
    let Some(skd) = config.skd() else { return Ok(()) };
    if let Some(init) = &skd.init {
        let named = read_tensors(init)?;
        let unused = copy_into(vs, &named, |n| !n.contains("fc"), init)?;
        let unused: Vec<&String> = unused.iter().filter(|n| !n.contains("fc")).collect();
        if !unused.is_empty() {
            bail!("{} has entries this model does not have: {:?}", init.display(), unused);
        }
    } else if let Some((path, mode)) = &skd.magnet {
        crate::import::magnet::apply(vs, path, *mode)?;
    }
    Ok(())
}
