//! Import of a state dict saved by the official PyTorch SKD-TSTSAN code into this project's
//! checkpoint format (safetensors, same key names), with a precise account of any mismatch.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tch::{Device, Tensor, nn};

use crate::model::skd_tstsan::{SkdConfig, SkdTstsan};
use crate::weights::{copy_into, save_weights};
use torch_archive::read_state_dict;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KeyReport {
    pub matched: usize,
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    /// "key: file [..], model [..]".
    pub misshaped: Vec<String>,
    /// A `module.` prefix (from DataParallel) was removed from every key.
    pub stripped_prefix: bool,
}

impl KeyReport {
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.misshaped.is_empty()
    }

    pub fn describe(&self) -> String {
        let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        format!(
            "{} keys matched; missing ({}): {}; unexpected ({}): {}; mis-shaped ({}): {}",
            self.matched,
            self.missing.len(),
            list(&self.missing),
            self.unexpected.len(),
            list(&self.unexpected),
            self.misshaped.len(),
            list(&self.misshaped)
        )
    }
}

/// Compares a state dict's keys and shapes with the model's variables.
pub fn compare(vs: &nn::VarStore, named: &[(String, Tensor)]) -> KeyReport {
    let vars = vs.variables();
    let mut report = KeyReport::default();
    let file: BTreeSet<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    for (name, t) in named {
        match vars.get(name) {
            None => report.unexpected.push(name.clone()),
            Some(v) if v.size() != t.size() => report.misshaped.push(format!("{name}: file {:?}, model {:?}", t.size(), v.size())),
            Some(_) => report.matched += 1,
        }
    }
    report.missing = vars.keys().filter(|k| !file.contains(k.as_str())).cloned().collect();
    report.missing.sort();
    report
}

/// Reads `state_dict` (torch.save archive or safetensors) and writes it as `out` if it matches
/// SKD-TSTSAN with `classes` classes exactly.
pub fn import_skd_tstsan(state_dict: &Path, classes: i64, out: &Path) -> Result<KeyReport> {
    mer_shared::atomic_file::check_target(out)?;
    let mut named = if state_dict.extension().is_some_and(|e| e == "safetensors") {
        Tensor::read_safetensors(state_dict).with_context(|| format!("reading {}", state_dict.display()))?
    } else {
        read_state_dict(state_dict)?
    };
    let stripped = !named.is_empty() && named.iter().all(|(n, _)| n.starts_with("module."));
    if stripped {
        for (n, _) in named.iter_mut() {
            *n = n["module.".len()..].to_string();
        }
    }
    let mut vs = nn::VarStore::new(Device::Cpu);
    let _model = SkdTstsan::new(&vs.root(), SkdConfig::new(classes));
    let mut report = compare(&vs, &named);
    report.stripped_prefix = stripped;
    if !report.is_exact() {
        let hint = match named.iter().find(|(n, _)| n == "fc2.weight") {
            Some((_, t)) if t.size().first() != Some(&classes) => {
                format!(" (the file's fc2.weight has {} classes; pass --classes {})", t.size()[0], t.size()[0])
            }
            _ => String::new(),
        };
        bail!("{} does not match SKD-TSTSAN with {classes} classes{hint}: {}", state_dict.display(), report.describe());
    }
    copy_into(&mut vs, &named, |_| true, state_dict)?;
    save_weights(&vs, out)?;
    Ok(report)
}
