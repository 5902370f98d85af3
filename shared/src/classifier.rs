//! Loading a model for classification, the same way on host and device: a bundle's signature is
//! checked before anything inside it is parsed, its manifest must equal the one embedded in the
//! ONNX file, and the probe must reproduce before the model classifies anything.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bundle::keys::PublicKey;
use crate::bundle::{Bundle, MAGIC};
use crate::error::{Error, Result, check_finite};
use crate::inference::OnnxModel;
use crate::manifest::{Calibration, LogitAgreement, Manifest};

/// Whose signature a bundle must carry.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// One of these keys (what a device and `mer infer --pub` use).
    Keys(&'a [PublicKey]),
    /// Any key: the contents match the signature, but the signer is not vouched for.
    IntegrityOnly,
}

/// Where the loaded model came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Origin {
    /// A bundle signed by `signer` (a key id); `trusted` says whether that key was among the trusted ones.
    Bundle { signer: String, trusted: bool },
    /// A bare ONNX file from `mer export` (no signature).
    Onnx,
}

/// Logits, calibrated class probabilities and labels for a batch, in the JSON shape `mer infer`
/// and `merd classify` print.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub classes: Vec<String>,
    pub logits: Vec<Vec<f32>>,
    /// softmax(logits / the manifest's temperature; 1 when it has none).
    pub probabilities: Vec<Vec<f32>>,
    /// Per sample: the most probable class, or `uncertain` below the manifest's threshold.
    #[serde(default)]
    pub labels: Vec<String>,
}

#[derive(Debug)]
pub struct Classifier {
    manifest: Manifest,
    model: OnnxModel,
    origin: Origin,
    probe: LogitAgreement,
}

impl Classifier {
    /// A signed bundle (`.merb`) or a bare ONNX export, told apart by the bundle's magic bytes.
    pub fn from_bytes(bytes: &[u8], trust: Trust) -> Result<Classifier> {
        if bytes.starts_with(MAGIC) { Classifier::from_bundle(bytes, trust) } else { Classifier::from_onnx(bytes) }
    }

    /// Reads a bundle or ONNX file; the file's bytes are let go once decoded, before the graph
    /// is built, so a large model is not held once more than needed.
    pub fn load(path: &Path, trust: Trust) -> Result<Classifier> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let loaded = if bytes.starts_with(MAGIC) {
            Classifier::verified_bundle(&bytes, trust).and_then(|(manifest, origin, proto)| {
                drop(bytes);
                Classifier::with_model(manifest, OnnxModel::from_proto(proto)?, origin)
            })
        } else {
            OnnxModel::decode(&bytes).and_then(|proto| {
                drop(bytes);
                Classifier::from_model(OnnxModel::from_proto(proto)?)
            })
        };
        loaded.map_err(|e| Error::Model(format!("{}: {e}", path.display())))
    }

    pub fn from_bundle(bytes: &[u8], trust: Trust) -> Result<Classifier> {
        let (manifest, origin, proto) = Classifier::verified_bundle(bytes, trust)?;
        Classifier::with_model(manifest, OnnxModel::from_proto(proto)?, origin)
    }

    /// The bundle's manifest, who signed it and its decoded ONNX model, after the signature check.
    fn verified_bundle(bytes: &[u8], trust: Trust) -> Result<(Manifest, Origin, tract_onnx::pb::ModelProto)> {
        let bundle = Bundle::from_bytes(bytes)?;
        let origin = match trust {
            Trust::Keys(keys) => Origin::Bundle { signer: bundle.verify(keys)?.key_id(), trusted: true },
            Trust::IntegrityOnly => Origin::Bundle { signer: bundle.verify_integrity()?.key_id(), trusted: false },
        };
        let manifest = Manifest::from_json(bundle.manifest())?;
        Ok((manifest, origin, OnnxModel::decode(bundle.onnx())?))
    }

    /// Checks the bundle's manifest against the one inside its model, then the probe.
    fn with_model(manifest: Manifest, model: OnnxModel, origin: Origin) -> Result<Classifier> {
        let embedded = embedded_manifest(&model)?;
        if embedded != manifest {
            return Err(Error::Model("the bundle's manifest differs from the one inside its ONNX model".into()));
        }
        Classifier::checked(manifest, model, origin)
    }

    pub fn from_onnx(bytes: &[u8]) -> Result<Classifier> {
        Classifier::from_model(OnnxModel::from_bytes(bytes)?)
    }

    fn from_model(model: OnnxModel) -> Result<Classifier> {
        let manifest = embedded_manifest(&model)?;
        Classifier::checked(manifest, model, Origin::Onnx)
    }

    fn checked(manifest: Manifest, model: OnnxModel, origin: Origin) -> Result<Classifier> {
        let probe = model.check_probe(&manifest)?;
        Ok(Classifier { manifest, model, origin, probe })
    }

    /// Runs inference on `threads` threads from now on.
    pub fn with_threads(mut self, threads: usize) -> Classifier {
        self.model = self.model.with_threads(threads);
        self
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// How closely this runtime reproduced the probe at load time.
    pub fn probe_agreement(&self) -> LogitAgreement {
        self.probe
    }

    /// Classifies `batch` samples laid out (N, C, H, W) as the manifest's input spec describes.
    pub fn classify(&self, input: &[f32], batch: usize) -> Result<Classification> {
        check_finite("model input", input)?;
        let logits = self.model.run(input, batch)?;
        let calibration = self.manifest.calibration.as_ref();
        let probabilities: Vec<Vec<f32>> = logits.iter().map(|row| Calibration::probabilities(calibration, row)).collect();
        let labels = probabilities.iter().map(|p| Calibration::label(calibration, &self.manifest.classes, p)).collect();
        Ok(Classification { classes: self.manifest.classes.clone(), logits, probabilities, labels })
    }
}

impl Classifier {
    /// Classifies the samples of a float32 `.npy` file of shape (N, C, H, W), or (C, H, W) for
    /// one sample; `name` is how errors refer to the file.
    pub fn classify_npy(&self, npy_bytes: &[u8], name: &str) -> Result<Classification> {
        let (shape, values) = crate::npy::decode(npy_bytes).map_err(|e| Error::Model(format!("{name}: {e}")))?;
        let [c, h, w] = self.manifest.input_shape();
        let batch = match shape[..] {
            [n, sc, sh, sw] if [sc, sh, sw] == [c, h, w] && n > 0 => n,
            [sc, sh, sw] if [sc, sh, sw] == [c, h, w] => 1,
            _ => {
                return Err(Error::Model(format!(
                    "{name} has shape {shape:?}; this model ({}) takes float32 [N, {c}, {h}, {w}] laid out as {:?}",
                    self.manifest.version, self.manifest.input.layout
                )));
            }
        };
        self.classify(&values, batch).map_err(|e| Error::Model(format!("{name}: {e}")))
    }
}

/// What `mer infer` and `merd classify` do: load `model` (a bundle must be signed by one of
/// the keys in `public_keys`; with none, only its integrity is checked) and classify a float32
/// `.npy` file.
pub fn classify_file(model: &Path, input: &Path, public_keys: &[PathBuf], threads: usize) -> Result<(Classification, Origin)> {
    let keys = public_keys.iter().map(|p| crate::bundle::read_public_key(p)).collect::<Result<Vec<_>>>()?;
    let trust = if keys.is_empty() { Trust::IntegrityOnly } else { Trust::Keys(&keys) };
    let classifier = Classifier::load(model, trust)?.with_threads(threads);
    let bytes = std::fs::read(input).map_err(|e| Error::io(input, e))?;
    let result = classifier.classify_npy(&bytes, &input.display().to_string())?;
    Ok((result, classifier.origin().clone()))
}

fn embedded_manifest(model: &OnnxModel) -> Result<Manifest> {
    model.manifest().ok_or_else(|| Error::Model("the ONNX model has no mer manifest (was it written by `mer export`?)".into()))?
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_a_distribution_and_keeps_order() {
        let p = softmax(&[1000.0, 1001.0, 999.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[1] > p[0] && p[0] > p[2]);
    }

    #[test]
    fn foreign_and_truncated_files_are_refused_without_panic() {
        assert!(Classifier::from_bytes(b"GIF89a not a model", Trust::IntegrityOnly).is_err());
        assert!(Classifier::from_bytes(b"", Trust::IntegrityOnly).is_err());
        let e = Classifier::from_bytes(b"MERB\x01garbage", Trust::IntegrityOnly).unwrap_err();
        assert!(!e.to_string().is_empty());
    }
}
