//! Transfer of pretrained motion-magnification weights (`magnet.pth`: `encoder.*`,
//! `manipulator.*`, `decoder.*`) into SKD-TSTSAN's three magnification front ends.
//!
//! The official code's load matches no key (its submodules expect un-prefixed names), so it
//! changes nothing; `MagnetMode::Official` reproduces exactly that. `MagnetMode::Transfer` does
//! what the paper describes:
//! - encoder convs `cba_2`, `resblks.*`, `motion_resblks.*` and all four manipulator convs are
//!   copied unchanged into every stream (same shapes);
//! - the first encoder conv was trained on RGB (16, 3, 7, 7). Our streams read gray faces, gray
//!   blocks or flow components. Summing the weights over RGB gives exactly the response the
//!   pretrained conv has to a gray image replicated into R, G and B; that sum divided by the
//!   stream's channel count (L 16, S 1, T 2) and repeated per channel gives the same response
//!   to a stack of identical channels, so activations start at the pretrained scale;
//! - `motion_cba` has no counterpart (the pretrained encoder was built without it) and keeps its
//!   fresh initialisation.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tch::{Kind, Tensor, nn};

use crate::model::skd_tstsan::MagnetMode;
use torch_archive::read_state_dict;

const STREAMS: [(&str, i64); 3] = [("L", 16), ("S", 1), ("T", 2)];

/// What a transfer did, tensor by tensor.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TransferReport {
    pub mode: String,
    /// (model variable, source key) copied unchanged.
    pub copied: Vec<(String, String)>,
    /// Model variables derived from a source tensor by the first-conv rule.
    pub adapted: Vec<(String, String)>,
    /// Model magnification variables left at their fresh initialisation.
    pub fresh: Vec<String>,
    /// Source keys nothing used (the decoder, the texture branch).
    pub unused: Vec<String>,
}

impl TransferReport {
    pub fn summary(&self) -> String {
        format!(
            "magnification weights ({}): {} copied, {} adapted, {} left fresh, {} source tensors unused",
            self.mode,
            self.copied.len(),
            self.adapted.len(),
            self.fresh.len(),
            self.unused.len()
        )
    }
}

/// The first-conv rule: (O, 3, k, k) RGB filters → (O, n, k, k).
pub fn adapt_first_conv(rgb: &Tensor, channels: i64) -> Tensor {
    let gray = rgb.sum_dim_intlist(&[1i64][..], true, Kind::Float) / channels as f64;
    gray.repeat([1, channels, 1, 1])
}

/// Source key for a model variable, and whether it needs the first-conv rule.
fn source_of(var: &str) -> Option<(String, bool)> {
    let (module, rest) = var.split_once('.')?;
    let stream = STREAMS.iter().find(|(s, _)| module.ends_with(&format!("_{s}")))?.0;
    if module == format!("Aug_Encoder_{stream}") {
        if rest.starts_with("motion_cba.") {
            return None;
        }
        return Some((format!("encoder.{rest}"), rest == "cba_1.conv2d.weight"));
    }
    (module == format!("Aug_Manipulator_{stream}")).then(|| (format!("manipulator.{rest}"), false))
}

/// Copies what `named` provides into the magnification variables of `vs`.
pub fn transfer(vs: &mut nn::VarStore, named: &[(String, Tensor)], mode: MagnetMode, source: &Path) -> Result<TransferReport> {
    let vars = vs.variables();
    let mut mag_vars: Vec<&String> = vars.keys().filter(|k| k.starts_with("Aug_")).collect();
    mag_vars.sort();
    if mag_vars.is_empty() {
        bail!("magnification weights were given, but this model has no magnification front ends (--ablate mag)");
    }
    let mut report = TransferReport { mode: format!("{mode:?}").to_lowercase(), ..Default::default() };
    if mode == MagnetMode::Official {
        report.fresh = mag_vars.iter().map(|s| s.to_string()).collect();
        report.unused = named.iter().map(|(n, _)| n.clone()).collect();
        return Ok(report);
    }
    let mut used = std::collections::BTreeSet::new();
    tch::no_grad(|| -> Result<()> {
        for name in mag_vars {
            let Some((key, adapt)) = source_of(name) else {
                report.fresh.push(name.clone());
                continue;
            };
            let Some((_, src)) = named.iter().find(|(n, _)| *n == key) else {
                report.fresh.push(name.clone());
                continue;
            };
            let mut var = vars[name].shallow_clone();
            let value = if adapt {
                let channels = var.size()[1];
                if src.size().len() != 4 || src.size()[0] != var.size()[0] || src.size()[2..] != var.size()[2..] {
                    bail!("{}: {key} has shape {:?}, cannot adapt it to {name} {:?}", source.display(), src.size(), var.size());
                }
                adapt_first_conv(&src.to_kind(Kind::Float), channels)
            } else {
                if src.size() != var.size() {
                    bail!("{}: {key} has shape {:?}, {name} needs {:?}", source.display(), src.size(), var.size());
                }
                src.to_kind(Kind::Float)
            };
            var.copy_(&value);
            used.insert(key.clone());
            if adapt { report.adapted.push((name.clone(), key)) } else { report.copied.push((name.clone(), key)) }
        }
        Ok(())
    })?;
    report.unused = named.iter().map(|(n, _)| n.clone()).filter(|n| !used.contains(n)).collect();
    if report.copied.is_empty() {
        bail!("{} holds no encoder./manipulator. tensors; is it a motion-magnification checkpoint?", source.display());
    }
    Ok(report)
}

/// Reads a `torch.save` checkpoint (or safetensors) and transfers it.
pub fn apply(vs: &mut nn::VarStore, path: &Path, mode: MagnetMode) -> Result<TransferReport> {
    let named = if path.extension().is_some_and(|e| e == "safetensors") {
        Tensor::read_safetensors(path).with_context(|| format!("reading {}", path.display()))?
    } else {
        read_state_dict(path)?
    };
    transfer(vs, &named, mode, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::skd_tstsan::{SkdConfig, SkdTstsan};
    use tch::Device;

    #[test]
    fn adapted_first_conv_answers_gray_like_the_rgb_conv() {
        tch::manual_seed(0);
        let rgb = Tensor::randn([16, 3, 7, 7], (Kind::Float, Device::Cpu));
        let gray = Tensor::rand([1, 1, 20, 20], (Kind::Float, Device::Cpu));
        let want = gray.repeat([1, 3, 1, 1]).conv2d(&rgb, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1);
        for n in [1, 2, 16] {
            let got = gray.repeat([1, n, 1, 1]).conv2d(&adapt_first_conv(&rgb, n), None::<Tensor>, [1, 1], [0, 0], [1, 1], 1);
            // Float sums in another order: compare relative to the response's scale.
            let scale = f64::try_from(want.abs().max()).unwrap();
            let diff = f64::try_from((got - &want).abs().max()).unwrap();
            assert!(diff < 1e-5 * scale, "n={n}: {diff} against a scale of {scale}");
        }
    }

    #[test]
    fn maps_encoder_and_manipulator_into_every_stream() {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let _ = SkdTstsan::new(&vs.root(), SkdConfig::new(5));
        // A source laid out like magnet.pth (a few tensors suffice).
        let named = vec![
            ("encoder.cba_1.conv2d.weight".to_string(), Tensor::ones([16, 3, 7, 7], (Kind::Float, Device::Cpu))),
            ("encoder.resblks.1.cba_2.conv2d.weight".to_string(), Tensor::full([32, 32, 3, 3], 0.5, (Kind::Float, Device::Cpu))),
            ("manipulator.g.conv2d.weight".to_string(), Tensor::full([32, 32, 7, 7], 0.25, (Kind::Float, Device::Cpu))),
            ("decoder.cba_2.conv2d.weight".to_string(), Tensor::zeros([3, 32, 7, 7], (Kind::Float, Device::Cpu))),
        ];
        let report = transfer(&mut vs, &named, MagnetMode::Transfer, Path::new("test")).unwrap();
        assert_eq!(report.copied.len(), 6);
        assert_eq!(report.adapted.len(), 3);
        assert_eq!(report.unused, vec!["decoder.cba_2.conv2d.weight".to_string()]);
        let vars = vs.variables();
        assert_eq!(vars["Aug_Encoder_L.cba_1.conv2d.weight"].double_value(&[0, 5, 0, 0]), 3.0 / 16.0);
        assert_eq!(vars["Aug_Encoder_S.cba_1.conv2d.weight"].double_value(&[0, 0, 0, 0]), 3.0);
        assert_eq!(vars["Aug_Manipulator_T.g.conv2d.weight"].double_value(&[1, 2, 3, 4]), 0.25);
        assert!(report.fresh.contains(&"Aug_Encoder_T.motion_cba.conv2d.weight".to_string()));

        let before = vars["Aug_Encoder_S.cba_2.conv2d.weight"].copy();
        let official = transfer(&mut vs, &named, MagnetMode::Official, Path::new("test")).unwrap();
        assert!(official.copied.is_empty() && official.adapted.is_empty());
        assert!(before.equal(&vs.variables()["Aug_Encoder_S.cba_2.conv2d.weight"]));
    }
}
