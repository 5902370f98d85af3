//! A model's manifest: what the network is, which classes it names, exactly how its input is
//! made, how it was trained, and a probe that proves a runtime computes what the exporter did.
//! It travels inside the ONNX file (as metadata) and inside the signed bundle.

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::input::{InputSpec, f32_digest};

pub const MANIFEST_FORMAT: u32 = 1;
/// Version of mer-shared's preprocessing (face crop, TV-L1, normalisation, input assembly).
/// Raised whenever the same parameters would produce a different tensor, so a device refuses a
/// model trained on inputs it cannot reproduce.
/// Version 2: the face box is resized once, with the spec's `face_resize`, on host and device alike.
pub const PREPROCESSING_VERSION: u32 = 2;
/// Key of the manifest JSON in the ONNX model's `metadata_props`.
pub const ONNX_METADATA_KEY: &str = "mer.manifest";
/// Largest |logit difference| a runtime may show on the probe, and in every parity check.
pub const LOGIT_TOLERANCE: f32 = 1e-4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// e.g. `skd-tstsan`.
    pub architecture: String,
    /// Architecture options that change the graph (ablations, amplification), for people.
    pub architecture_options: String,
    /// Unique name of this model; by default derived from its weights.
    pub version: String,
    /// Class names in logit order.
    pub classes: Vec<String>,
    /// The label taxonomy the classes come from (e.g. `casme2-5`).
    pub taxonomy: String,
    /// The one input, (N, channels, height, width), and every preprocessing parameter.
    pub input: InputSpec,
    pub preprocessing_version: u32,
    /// Where the training inputs came from: whether a device can reproduce them.
    #[serde(default)]
    pub inputs: InputProvenance,
    pub training: TrainingSummary,
    pub probe: Probe,
    /// How to turn logits into probabilities people can read as such, and when to say
    /// `uncertain` instead of a class. Absent: plain softmax, every event labelled.
    #[serde(default)]
    pub calibration: Option<Calibration>,
}

/// The label a window gets when its most probable class is less probable than the model's
/// `uncertain_below`.
pub const UNCERTAIN: &str = "uncertain";

/// Temperature scaling and abstention, fitted by `mer train` on held-out predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Probabilities are softmax(logits / temperature).
    pub temperature: f32,
    /// A window whose highest calibrated probability is below this is labelled [`UNCERTAIN`]
    /// (its probabilities are kept); 0 labels every window.
    pub uncertain_below: f32,
    /// Expected calibration error (15 bins) of the run's held-out predictions before and after
    /// the temperature, and what the temperature was fitted on, for people.
    pub ece_before: f64,
    pub ece_after: f64,
    pub fitted_on: String,
}

impl Calibration {
    /// Calibrated class probabilities of one row of logits.
    pub fn probabilities(calibration: Option<&Calibration>, logits: &[f32]) -> Vec<f32> {
        let t = calibration.map_or(1.0, |c| c.temperature);
        let scaled: Vec<f32> = logits.iter().map(|l| l / t).collect();
        crate::classifier::softmax(&scaled)
    }

    /// The class to report for `probabilities`, or [`UNCERTAIN`] when the best is too unlikely.
    pub fn label(calibration: Option<&Calibration>, classes: &[String], probabilities: &[f32]) -> String {
        let best = argmax(probabilities);
        let p = probabilities.get(best).copied().unwrap_or(0.0);
        match calibration {
            Some(c) if p < c.uncertain_below => UNCERTAIN.to_string(),
            _ => classes.get(best).cloned().unwrap_or_default(),
        }
    }
}

/// Where a model's training inputs came from, so a device knows whether its own preprocessing
/// reproduces them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputProvenance {
    /// Made by mer-shared from video frames (`mer prepare`): a device with the same
    /// preprocessing version computes them bit for bit.
    MerShared,
    /// The STSTNet flow images of the MEGC 2019 composite release. The code that made them is
    /// not public; the device's flows follow the same recipe but are not the same numbers.
    StstnetPng,
    /// Made by another program for weights trained elsewhere (the official Python pipeline, for
    /// imported SKD-TSTSAN weights): mer-shared follows its recipe but not its exact numbers.
    External,
    /// Not recorded (a manifest from before provenance was), so not known to be reproducible.
    #[default]
    Unknown,
}

impl InputProvenance {
    /// Whether a device running this build's preprocessing computes exactly these inputs.
    pub fn device_faithful(self) -> bool {
        self == InputProvenance::MerShared
    }

    pub fn name(self) -> &'static str {
        match self {
            InputProvenance::MerShared => "mer-shared",
            InputProvenance::StstnetPng => "ststnet-png",
            InputProvenance::External => "external",
            InputProvenance::Unknown => "unknown",
        }
    }

    /// Why a device cannot reproduce these inputs; None when it can.
    pub fn foreign_reason(self) -> Option<&'static str> {
        match self {
            InputProvenance::MerShared => None,
            InputProvenance::StstnetPng => Some(
                "it was trained on the published STSTNet flow images (ststnet-png), which this device cannot reproduce: \
                 retrain it from raw frames with `mer prepare --input …` and `mer train --data CACHE`",
            ),
            InputProvenance::External => Some(
                "its weights were trained elsewhere (imported), on inputs made by another program (external), which this device's \
                 preprocessing follows but cannot reproduce bit for bit: train a model from raw frames with `mer prepare` and \
                 `mer train` for device-faithful inputs",
            ),
            InputProvenance::Unknown => Some(
                "its manifest does not say where its training inputs came from (a model exported before this was recorded): export it again",
            ),
        }
    }
}

/// Where the weights came from, enough to find and repeat the run. For imported weights no run
/// is known: `run`, `dataset` and `scope` say `imported`, `data_digest` is `unknown`, `samples`
/// 0, and `weights` names the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// The run directory's name and the checkpoint inside it.
    pub run: String,
    pub checkpoint: String,
    /// Dataset name, prepared-data digest and sample count.
    pub dataset: String,
    pub data_digest: String,
    pub samples: usize,
    /// What the checkpoint is: `all samples` or `LOSO fold <subject>`.
    pub scope: String,
    /// The training configuration as recorded by the trainer (null for imported weights).
    pub config: serde_json::Value,
    /// The run's evaluation, when it has one (protocol note included).
    pub evaluation: Option<Evaluation>,
    /// Who trained the weights; manifests from before this was recorded were all `mer train`'s.
    #[serde(default)]
    pub weights: WeightsOrigin,
    /// An ensemble's members, each a run's checkpoint (empty for a single model, whose run and
    /// configuration are the fields above; in an ensemble those are its first member's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ensemble: Vec<EnsembleMember>,
}

/// One member of an exported ensemble: its output is the log of the members' mean softmax.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleMember {
    pub run: String,
    pub checkpoint: String,
    pub config: serde_json::Value,
}

/// An ensemble's members by architecture, in order of first appearance: "3 skd-tstsan-flow
/// models", or "4 models: 3 skd-tstsan-flow + 1 am3f-flownet" when they mix architectures.
pub fn describe_members(members: &[EnsembleMember]) -> String {
    describe_architectures(
        members.iter().map(|member| member.config.get("arch").and_then(|a| a.as_str()).unwrap_or("unknown architecture")),
    )
}

/// Models counted by architecture, in order of first appearance (the wording of
/// [`describe_members`]); also names an ensemble's LOSO run in `mer ensemble`'s report.
pub fn describe_architectures<'a>(archs: impl IntoIterator<Item = &'a str>) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for arch in archs {
        match counts.iter_mut().find(|(a, _)| *a == arch) {
            Some((_, n)) => *n += 1,
            None => counts.push((arch, 1)),
        }
    }
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    match counts.as_slice() {
        [(arch, n)] => format!("{n} {arch} models"),
        _ => format!("{total} models: {}", counts.iter().map(|(arch, n)| format!("{n} {arch}")).collect::<Vec<_>>().join(" + ")),
    }
}

/// Who made a model's weights.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "origin")]
pub enum WeightsOrigin {
    /// `mer train`, in the run the summary names.
    #[default]
    MerTrain,
    /// Trained elsewhere and brought in as a checkpoint file (e.g. by `mer import-pytorch`); the
    /// digest identifies the exact weights, since no run records them.
    Imported {
        /// The checkpoint's file name.
        checkpoint: String,
        /// Hex SHA-256 of the checkpoint file's bytes.
        sha256: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub protocol: String,
    pub uf1: f64,
    pub uar: f64,
    pub accuracy: f64,
    pub note: String,
}

/// A deterministic input, named by its seed, with the logits the exporter's own forward pass gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub seed: u64,
    pub batch: usize,
    /// SHA-256 of the input's little-endian f32 bytes: proves the generator still makes the same input.
    pub input_sha256: String,
    pub logits: Vec<Vec<f32>>,
}

impl Probe {
    /// Uniform [0, 1) values (the range of every input channel) from ChaCha8 seeded by `seed`.
    pub fn input(seed: u64, batch: usize, shape: [usize; 3]) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..batch * shape.iter().product::<usize>()).map(|_| rng.random::<f32>()).collect()
    }

    pub fn new(seed: u64, batch: usize, shape: [usize; 3], logits: Vec<Vec<f32>>) -> Probe {
        Probe { seed, batch, input_sha256: f32_digest(&Probe::input(seed, batch, shape)), logits }
    }

    /// Regenerates the input and checks it is the one the logits belong to.
    pub fn regenerate(&self, shape: [usize; 3]) -> Result<Vec<f32>> {
        let input = Probe::input(self.seed, self.batch, shape);
        let digest = f32_digest(&input);
        if digest != self.input_sha256 {
            return Err(Error::Model(format!(
                "the probe input for seed {} has digest {digest}, the manifest says {}: this runtime generates a different probe",
                self.seed, self.input_sha256
            )));
        }
        Ok(input)
    }
}

impl Manifest {
    /// What runs: the architecture, or for an ensemble "ensemble of 4 models: 3 skd-tstsan-flow
    /// + 1 am3f-flownet".
    pub fn model_name(&self) -> String {
        if self.training.ensemble.is_empty() {
            self.architecture.clone()
        } else {
            format!("ensemble of {}", describe_members(&self.training.ensemble))
        }
    }

    /// (channels, height, width) of one sample.
    pub fn input_shape(&self) -> [usize; 3] {
        [self.input.channels, self.input.height, self.input.width]
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest always serialises")
    }

    pub fn from_json(text: &str) -> Result<Manifest> {
        let manifest: Manifest = serde_json::from_str(text)
            .map_err(|e| Error::Model(format!("the model manifest is not valid ({e}); was it written by an incompatible mer version?")))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Internal consistency: a manifest that fails this cannot describe a usable model.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::Model(format!("invalid model manifest: {why}")));
        if self.format != MANIFEST_FORMAT {
            return bad(format!("format {} (this build reads format {MANIFEST_FORMAT})", self.format));
        }
        if self.classes.len() < 2 {
            return bad(format!("{} classes; a classifier needs at least two", self.classes.len()));
        }
        self.input.validate().or_else(|e| bad(format!("input spec: {e}")))?;
        let p = &self.probe;
        if p.batch == 0 || p.logits.len() != p.batch || p.logits.iter().any(|row| row.len() != self.classes.len()) {
            return bad(format!(
                "the probe has {} rows of logits for batch {} and {} classes",
                p.logits.len(),
                p.batch,
                self.classes.len()
            ));
        }
        if p.logits.iter().flatten().any(|v| !v.is_finite()) {
            return bad("the probe's expected logits are not finite".into());
        }
        if let Some(c) = &self.calibration {
            if !(c.temperature.is_finite() && c.temperature > 0.0) {
                return bad(format!("calibration temperature {}; it must be a positive number", c.temperature));
            }
            if !(0.0..=1.0).contains(&c.uncertain_below) {
                return bad(format!("uncertain_below {}; it is a probability, 0 to 1", c.uncertain_below));
            }
        }
        Ok(())
    }
}

/// How far two sets of logits are apart.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LogitAgreement {
    pub max_abs_diff: f32,
    /// Rows whose arg-max differ.
    pub argmax_mismatches: usize,
}

impl LogitAgreement {
    pub fn between(expected: &[Vec<f32>], got: &[Vec<f32>]) -> LogitAgreement {
        let mut agreement = LogitAgreement { max_abs_diff: 0.0, argmax_mismatches: 0 };
        if expected.len() != got.len() {
            return LogitAgreement { max_abs_diff: f32::INFINITY, argmax_mismatches: expected.len().max(got.len()) };
        }
        for (e, g) in expected.iter().zip(got) {
            if e.len() != g.len() {
                return LogitAgreement { max_abs_diff: f32::INFINITY, argmax_mismatches: expected.len() };
            }
            for (a, b) in e.iter().zip(g) {
                let d = (a - b).abs();
                // NaN anywhere must fail the check, so it counts as infinitely far.
                agreement.max_abs_diff = agreement.max_abs_diff.max(if d.is_nan() { f32::INFINITY } else { d });
            }
            if argmax(e) != argmax(g) {
                agreement.argmax_mismatches += 1;
            }
        }
        agreement
    }

    pub fn within_tolerance(&self) -> bool {
        self.max_abs_diff <= LOGIT_TOLERANCE && self.argmax_mismatches == 0
    }
}

/// Index of the largest value (the first on ties).
pub fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().fold(0, |best, (i, v)| if *v > values[best] { i } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let shape = [38, 48, 48];
        Manifest {
            format: MANIFEST_FORMAT,
            architecture: "skd-tstsan".into(),
            architecture_options: "amp 2".into(),
            version: "test".into(),
            classes: vec!["a".into(), "b".into(), "c".into()],
            taxonomy: "casme2-3".into(),
            input: InputSpec::skd_tstsan(),
            preprocessing_version: PREPROCESSING_VERSION,
            inputs: InputProvenance::MerShared,
            training: TrainingSummary {
                run: "run".into(),
                checkpoint: "model.safetensors".into(),
                dataset: "casme2".into(),
                data_digest: "d".into(),
                samples: 3,
                scope: "all samples".into(),
                config: serde_json::json!({"iters": 1}),
                evaluation: None,
                weights: WeightsOrigin::MerTrain,
                ensemble: vec![],
            },
            probe: Probe::new(7, 2, shape, vec![vec![0.1, -0.2, 0.3]; 2]),
            calibration: None,
        }
    }

    fn calibration(temperature: f32, uncertain_below: f32) -> Calibration {
        Calibration { temperature, uncertain_below, ece_before: 0.2, ece_after: 0.05, fitted_on: "test".into() }
    }

    #[test]
    fn calibration_scales_logits_and_abstains_below_its_threshold() {
        let classes: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let logits = [2.0, 1.0, 0.0];
        let plain = Calibration::probabilities(None, &logits);
        assert_eq!(plain, crate::classifier::softmax(&logits));
        // A temperature above 1 flattens, keeps the order and the sum.
        let c = calibration(2.0, 0.5);
        let soft = Calibration::probabilities(Some(&c), &logits);
        assert_eq!(soft, crate::classifier::softmax(&[1.0, 0.5, 0.0]));
        assert!(soft[0] < plain[0] && soft[0] > soft[1] && (soft.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // 0.665 plain, 0.506 at T = 2: above 0.5 both times, below 0.6 once scaled.
        assert_eq!(Calibration::label(Some(&c), &classes, &soft), "a");
        assert_eq!(Calibration::label(Some(&calibration(2.0, 0.6)), &classes, &soft), UNCERTAIN);
        assert_eq!(Calibration::label(None, &classes, &[0.34, 0.33, 0.33]), "a");
        assert_eq!(Calibration::label(Some(&calibration(1.0, 0.0)), &classes, &[0.2, 0.5, 0.3]), "b");
    }

    #[test]
    fn an_ensemble_is_named_by_its_members_architectures() {
        let mut m = manifest();
        assert_eq!(m.model_name(), "skd-tstsan");
        let member = |arch: &str| EnsembleMember {
            run: "run".into(),
            checkpoint: "model.safetensors".into(),
            config: serde_json::json!({ "arch": arch }),
        };
        m.training.ensemble = vec![member("skd-tstsan-flow"), member("skd-tstsan-flow")];
        assert_eq!(m.model_name(), "ensemble of 2 skd-tstsan-flow models");
        m.training.ensemble.insert(1, member("am3f-flownet"));
        m.training.ensemble.push(member("skd-tstsan-flow"));
        assert_eq!(m.model_name(), "ensemble of 4 models: 3 skd-tstsan-flow + 1 am3f-flownet");
    }

    #[test]
    fn calibration_round_trips_and_bad_values_are_refused() {
        let mut m = manifest();
        m.calibration = Some(calibration(1.7, 0.5));
        assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
        m.calibration = Some(calibration(0.0, 0.5));
        assert!(m.validate().unwrap_err().to_string().contains("temperature 0"));
        m.calibration = Some(calibration(f32::NAN, 0.5));
        assert!(m.validate().is_err());
        m.calibration = Some(calibration(1.0, 1.5));
        assert!(m.validate().unwrap_err().to_string().contains("uncertain_below 1.5"));
        // Manifests from before calibration read as uncalibrated.
        let mut value: serde_json::Value = serde_json::from_str(&manifest().to_json()).unwrap();
        value.as_object_mut().unwrap().remove("calibration");
        assert_eq!(Manifest::from_json(&value.to_string()).unwrap().calibration, None);
    }

    #[test]
    fn manifest_round_trips_through_json_exactly() {
        let mut m = manifest();
        m.probe.logits[0][1] = 0.123_456_79;
        let back = Manifest::from_json(&m.to_json()).unwrap();
        assert_eq!(back, m);
    }

    /// A manifest written before provenance and the face-resize fields existed still reads, as
    /// inputs of unknown origin, so a device can refuse it with a reason instead of a parse error.
    #[test]
    fn older_manifests_read_with_unknown_provenance() {
        let mut value: serde_json::Value = serde_json::from_str(&manifest().to_json()).unwrap();
        value.as_object_mut().unwrap().remove("inputs");
        value["input"].as_object_mut().unwrap().remove("face_resize");
        value["input"].as_object_mut().unwrap().remove("face_quantisation");
        let old = Manifest::from_json(&value.to_string()).unwrap();
        assert_eq!(old.inputs, InputProvenance::Unknown);
        assert_eq!(old.input, InputSpec::skd_tstsan());
        assert!(old.inputs.foreign_reason().unwrap().contains("export it again"));
        assert!(InputProvenance::StstnetPng.foreign_reason().unwrap().contains("ststnet-png"));
        assert_eq!(serde_json::to_string(&InputProvenance::MerShared).unwrap(), "\"mer-shared\"");
        assert!(InputProvenance::MerShared.device_faithful() && InputProvenance::MerShared.foreign_reason().is_none());
    }

    /// A manifest from before the weights' origin was recorded reads as `mer train`'s; an
    /// imported model's origin and external inputs round-trip with their wire names.
    #[test]
    fn weights_origin_defaults_to_mer_train_and_imported_round_trips() {
        let mut value: serde_json::Value = serde_json::from_str(&manifest().to_json()).unwrap();
        assert_eq!(value["training"]["weights"], serde_json::json!({"origin": "mer-train"}));
        value["training"].as_object_mut().unwrap().remove("weights");
        assert_eq!(Manifest::from_json(&value.to_string()).unwrap().training.weights, WeightsOrigin::MerTrain);

        let mut m = manifest();
        m.inputs = InputProvenance::External;
        m.training.weights = WeightsOrigin::Imported { checkpoint: "official.safetensors".into(), sha256: "ab".repeat(32) };
        let value: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
        assert_eq!(value["inputs"], "external");
        assert_eq!(value["training"]["weights"]["origin"], "imported");
        assert_eq!(value["training"]["weights"]["checkpoint"], "official.safetensors");
        assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
        assert!(!InputProvenance::External.device_faithful());
        assert_eq!(InputProvenance::External.name(), "external");
        assert!(InputProvenance::External.foreign_reason().unwrap().contains("trained elsewhere"));
    }

    #[test]
    fn probe_input_is_deterministic_and_checked() {
        let shape = [38, 48, 48];
        let a = Probe::input(7, 2, shape);
        assert_eq!(a, Probe::input(7, 2, shape));
        assert_ne!(a, Probe::input(8, 2, shape));
        assert!(a.iter().all(|v| (0.0..1.0).contains(v)));
        let mut probe = manifest().probe;
        assert_eq!(probe.regenerate(shape).unwrap(), a);
        probe.input_sha256 = "00".into();
        assert!(probe.regenerate(shape).unwrap_err().to_string().contains("different probe"));
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        let mut m = manifest();
        m.probe.logits.pop();
        assert!(m.validate().unwrap_err().to_string().contains("rows of logits"));
        let mut m = manifest();
        m.classes.truncate(1);
        assert!(m.validate().is_err());
        let mut m = manifest();
        m.format = 99;
        assert!(Manifest::from_json(&m.to_json()).unwrap_err().to_string().contains("format 99"));
        assert!(Manifest::from_json("{}").unwrap_err().to_string().contains("not valid"));
    }

    #[test]
    fn agreement_measures_difference_and_argmax() {
        let a = vec![vec![1.0, 2.0], vec![3.0, 0.0]];
        let b = vec![vec![1.0, 2.00005], vec![3.0, 0.0]];
        let agree = LogitAgreement::between(&a, &b);
        assert!(agree.within_tolerance() && agree.max_abs_diff > 0.0);
        let flipped = vec![vec![2.5, 2.0], vec![3.0, 0.0]];
        let disagree = LogitAgreement::between(&a, &flipped);
        assert_eq!(disagree.argmax_mismatches, 1);
        assert!(!disagree.within_tolerance());
        assert!(!LogitAgreement::between(&a, &[vec![f32::NAN, 2.0], vec![3.0, 0.0]]).within_tolerance());
        assert!(!LogitAgreement::between(&a, &a[..1]).within_tolerance());
    }
}
