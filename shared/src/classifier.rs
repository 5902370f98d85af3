//! Loading a model for classification, the same way on host and device: a bundle's signature is
//! checked before anything inside it is parsed, its manifest must equal the one embedded in the
//! ONNX file, and the probe must reproduce before the model classifies anything.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bundle::keys::PublicKey;
use crate::bundle::{Bundle, BundleFile, FileSection, MAGIC, find_trusted};
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

impl<'a> Trust<'a> {
    /// The given keys; with none given, integrity only (what `--pub`-style options mean).
    pub fn of(keys: &'a [PublicKey]) -> Trust<'a> {
        if keys.is_empty() { Trust::IntegrityOnly } else { Trust::Keys(keys) }
    }

    /// Where a bundle came from, given who its integrity check says signed it; an error when
    /// that signer is not among the trusted keys.
    fn origin(self, signer: Result<PublicKey>) -> Result<Origin> {
        let signer = signer?;
        Ok(match self {
            Trust::Keys(keys) => Origin::Bundle { signer: find_trusted(signer, keys)?.key_id(), trusted: true },
            Trust::IntegrityOnly => Origin::Bundle { signer: signer.key_id(), trusted: false },
        })
    }
}

/// Whether the file starts as a bundle does (a shorter file does not).
fn starts_with_magic(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut start = Vec::with_capacity(MAGIC.len());
    std::fs::File::open(path).and_then(|f| f.take(MAGIC.len() as u64).read_to_end(&mut start)).map_err(|e| Error::io(path, e))?;
    Ok(start == MAGIC)
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

    /// Reads a bundle or ONNX file. The file is streamed, never held in memory: a bundle's
    /// signature is checked in a first pass over it, and the model is decoded from it in a
    /// second (see [`BundleFile`]), so a large model is held once, decoded.
    pub fn load(path: &Path, trust: Trust) -> Result<Classifier> {
        let loaded = if starts_with_magic(path)? {
            BundleFile::open(path).and_then(|file| Classifier::from_bundle_file(&file, trust))
        } else {
            let mut file = FileSection::whole(path)?;
            OnnxModel::decode(&mut file).and_then(|proto| {
                file.finish()?;
                Classifier::from_model(OnnxModel::from_proto(proto)?)
            })
        };
        loaded.map_err(|e| Error::Model(format!("{}: {e}", path.display())))
    }

    /// A bundle file opened with [`BundleFile::open`]: signature, manifest, then the model.
    pub fn from_bundle_file(file: &BundleFile, trust: Trust) -> Result<Classifier> {
        let origin = trust.origin(file.verify_integrity())?;
        let manifest = Manifest::from_json(file.head().manifest())?;
        let proto = file.decode_onnx(|section| OnnxModel::decode(section))?;
        Classifier::with_model(manifest, OnnxModel::from_proto(proto)?, origin)
    }

    /// A bundle in memory; its model is decoded from the bytes in place.
    pub fn from_bundle(bytes: &[u8], trust: Trust) -> Result<Classifier> {
        let bundle = Bundle::from_bytes(bytes)?;
        let origin = trust.origin(bundle.verify_integrity())?;
        let manifest = Manifest::from_json(bundle.manifest())?;
        let proto = OnnxModel::decode(bundle.onnx())?;
        Classifier::with_model(manifest, OnnxModel::from_proto(proto)?, origin)
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
    let classifier = Classifier::load(model, Trust::of(&keys))?.with_threads(threads);
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
    fn a_file_loads_as_its_bytes_do() {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
        let key = crate::bundle::read_public_key(&models.join("demo-key.pub")).unwrap();
        let path = models.join("skd-tstsan-synthetic.merb");
        let bytes = std::fs::read(&path).unwrap();
        let (from_file, from_bytes) =
            (Classifier::load(&path, Trust::Keys(&[key])).unwrap(), Classifier::from_bytes(&bytes, Trust::Keys(&[key])).unwrap());
        assert_eq!(from_file.manifest(), from_bytes.manifest());
        assert_eq!(from_file.origin(), &Origin::Bundle { signer: key.key_id(), trusted: true });
        let input = from_file.manifest().probe.regenerate(from_file.model.input_shape()).unwrap();
        assert_eq!(from_file.classify(&input, 4).unwrap(), from_bytes.classify(&input, 4).unwrap());

        // A bare ONNX file, streamed the same way.
        let dir = tempfile::tempdir().unwrap();
        let onnx = dir.path().join("m.onnx");
        std::fs::write(&onnx, Bundle::from_bytes(&bytes).unwrap().onnx()).unwrap();
        let bare = Classifier::load(&onnx, Trust::IntegrityOnly).unwrap();
        assert_eq!(bare.origin(), &Origin::Onnx);
        assert_eq!(bare.classify(&input, 4).unwrap(), from_file.classify(&input, 4).unwrap());
        let other = crate::bundle::SecretKey::from_seed(&[9; 32]).public();
        let e = Classifier::load(&path, Trust::Keys(&[other])).unwrap_err().to_string();
        assert!(e.contains("skd-tstsan-synthetic.merb") && e.contains("not among the trusted keys"), "{e}");
    }

    #[test]
    fn foreign_and_truncated_files_are_refused_without_panic() {
        assert!(Classifier::from_bytes(b"GIF89a not a model", Trust::IntegrityOnly).is_err());
        assert!(Classifier::from_bytes(b"", Trust::IntegrityOnly).is_err());
        let e = Classifier::from_bytes(b"MERB\x01garbage", Trust::IntegrityOnly).unwrap_err();
        assert!(!e.to_string().is_empty());
    }
}
