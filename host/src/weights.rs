//! Weights on disk: safetensors under the official key names, written atomically so an
//! interrupted run never leaves a half-written file that looks valid, and copied into a model's
//! variables only when every name and shape fits.

use std::path::Path;

use anyhow::{Context, Result, bail};
use mer_shared::atomic_file;
use tch::{Device, Tensor, nn};

pub(crate) fn write_tensors_atomic(path: &Path, named: &[(String, Tensor)]) -> Result<()> {
    let cpu: Vec<(String, Tensor)> = named.iter().map(|(n, t)| (n.clone(), t.to_device(Device::Cpu).contiguous())).collect();
    // tch writes safetensors only to a path of its own: the helper's temporary.
    atomic_file::write_via(path, |tmp| Tensor::write_safetensors(&cpu, tmp))?;
    Ok(())
}

pub(crate) fn sorted_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// All variables under their official names.
pub fn save_weights(vs: &nn::VarStore, path: &Path) -> Result<()> {
    write_tensors_atomic(path, &sorted_variables(vs))
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
