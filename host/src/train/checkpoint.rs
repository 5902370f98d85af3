//! Weights and training state on disk (safetensors, official key names), written atomically so an
//! interrupted run never leaves a half-written file that looks valid.

use std::path::Path;

use anyhow::{Context, Result, bail};
use mer_shared::atomic_file;
use serde::Serialize;
use tch::{Device, Tensor, nn};

use super::config::TrainConfig;
use super::optimizer::Adam;

fn write_tensors_atomic(path: &Path, named: &[(String, Tensor)]) -> Result<()> {
    let cpu: Vec<(String, Tensor)> = named.iter().map(|(n, t)| (n.clone(), t.to_device(Device::Cpu).contiguous())).collect();
    // tch writes safetensors only to a path of its own: the helper's temporary.
    atomic_file::write_via(path, |tmp| Tensor::write_safetensors(&cpu, tmp))?;
    Ok(())
}

/// Pretty JSON plus a newline, written atomically.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    atomic_file::write(path, (text + "\n").as_bytes())?;
    Ok(())
}

fn sorted_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// All variables under their official names.
pub fn save_weights(vs: &nn::VarStore, path: &Path) -> Result<()> {
    write_tensors_atomic(path, &sorted_variables(vs))
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

pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    Tensor::read_safetensors(path).with_context(|| format!("reading {} (expected a safetensors file)", path.display()))
}

/// Copies `named` into the store's variables whose names pass `keep`. Every kept variable must
/// be present with the same shape; the names of file entries nothing used are returned.
pub fn copy_into(vs: &mut nn::VarStore, named: &[(String, Tensor)], keep: impl Fn(&str) -> bool, source: &Path) -> Result<Vec<String>> {
    let vars = vs.variables();
    let mut missing = Vec::new();
    let mut misshaped = Vec::new();
    tch::no_grad(|| {
        for (name, var) in &vars {
            if !keep(name) {
                continue;
            }
            match named.iter().find(|(n, _)| n == name) {
                None => missing.push(name.clone()),
                Some((_, t)) if t.size() != var.size() => misshaped.push(format!("{name}: file {:?}, model {:?}", t.size(), var.size())),
                Some((_, t)) => {
                    let mut v = var.shallow_clone();
                    v.copy_(&t.to_kind(var.kind()));
                }
            }
        }
    });
    if !missing.is_empty() || !misshaped.is_empty() {
        missing.sort();
        misshaped.sort();
        bail!(
            "{} does not fit this model: {} missing ({}), {} mis-shaped ({})",
            source.display(),
            missing.len(),
            missing.join(", "),
            misshaped.len(),
            misshaped.join("; ")
        );
    }
    Ok(named.iter().filter(|(n, _)| !vars.contains_key(n)).map(|(n, _)| n.clone()).collect())
}

pub fn load_weights(vs: &mut nn::VarStore, path: &Path) -> Result<()> {
    let named = read_tensors(path)?;
    copy_into(vs, &named, |_| true, path)?;
    Ok(())
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
