//! `mer evaluate`: an exported model (ONNX or signed bundle) scored on data it was not trained
//! on — another dataset, other people, other cameras — through tract, the device's runtime, on
//! the inputs `mer train` would read from the same directory. Reports what a LOSO run reports:
//! UF1, UAR, accuracy, per source and class, the confusion matrix, and the calibration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use mer_shared::classifier::{Classifier, Trust, softmax};
use mer_shared::manifest::{Calibration, Manifest, argmax};
use serde::{Deserialize, Serialize};

use crate::calibration::{Abstention, Bin, Scored, ece, reliability, reliability_png};
use crate::dataset::samples::DataSource;
use crate::metrics::{Confusion, Scores};
use crate::model::Arch;
use crate::plots::confusion_png;
use crate::train::data::{DataKind, TrainData};
use crate::train::fold::Prediction;
use crate::train::report::{ClassScore, per_class, scores_by_source};

/// Samples per inference call.
const BATCH: usize = 16;

#[derive(Debug, Clone)]
pub struct EvaluateOptions {
    /// `mer export`'s ONNX file or a bundle made from it.
    pub model: PathBuf,
    pub kind: DataKind,
    pub data: PathBuf,
    /// Composite data: only these source datasets (empty: all).
    pub sources: Vec<String>,
    /// A bundle must be signed by one of these; with none, only its integrity is checked.
    pub public_keys: Vec<PathBuf>,
    pub threads: usize,
}

/// `OUT/evaluation.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationResults {
    pub model_version: String,
    pub architecture: String,
    /// What the model's manifest says it was trained on.
    pub trained_on: String,
    pub data: DataSource,
    pub sources: Vec<String>,
    pub classes: Vec<String>,
    pub uf1: f64,
    pub uar: f64,
    pub accuracy: f64,
    pub samples: usize,
    pub confusion: Vec<Vec<usize>>,
    pub per_class: Vec<ClassScore>,
    /// Composite data: the scores per source dataset.
    pub by_source: BTreeMap<String, Scores>,
    /// Expected calibration error of the plain softmax, and of the probabilities the model
    /// reports (its manifest's temperature; the same when it has none).
    pub ece_softmax: f64,
    pub ece: f64,
    /// The model's calibration (from its manifest), and its threshold applied to these samples
    /// (None: it labels every window).
    pub calibration: Option<Calibration>,
    pub abstention: Option<Abstention>,
    pub bins_softmax: Vec<Bin>,
    pub bins: Vec<Bin>,
    /// The data are (some of) the model's own training samples: the figures say how well it fits
    /// them, not how it does on data it never saw.
    pub training_samples: bool,
    /// Where the data's inputs were made differently from the model's training inputs, field by
    /// field (empty when they were made alike).
    pub input_differences: String,
    /// The model's probabilities (calibrated) for every sample.
    pub predictions: Vec<Prediction>,
}

/// Whether composite `data` holds samples the model was trained on: the same images (their
/// digest is of the pixels) unless the two selections of sources are disjoint. A prepared
/// cache's digest names its preparation parameters, not its samples, so there it cannot tell.
fn shares_training_samples(manifest: &Manifest, data: &DataSource) -> bool {
    if data.inputs != mer_shared::manifest::InputProvenance::StstnetPng {
        return false;
    }
    let split = |digest: &str| -> (String, Vec<String>) {
        match digest.split_once("+sources=") {
            Some((base, sources)) => (base.to_string(), sources.split(',').map(str::to_string).collect()),
            None => (digest.to_string(), Vec::new()),
        }
    };
    let (trained, trained_sources) = split(&manifest.training.data_digest);
    let (evaluated, _) = split(&data.digest);
    trained == evaluated
        && (trained_sources.is_empty() || data.sources.is_empty() || trained_sources.iter().any(|s| data.sources.contains(s)))
}

/// The class names of the model and the data, which must be the same list.
fn check_classes(manifest: &Manifest, model: &Path, data: &TrainData, dir: &Path) -> Result<()> {
    if manifest.classes != data.classes {
        bail!(
            "{} names the classes {} (taxonomy {}); {} is labelled {} (taxonomy {}): a model is evaluated on data of its own \
             class set (prepare the data with `mer prepare --classes {}`)",
            model.display(),
            manifest.classes.join(", "),
            manifest.taxonomy,
            dir.display(),
            data.classes.join(", "),
            data.source.taxonomy,
            manifest.taxonomy
        );
    }
    Ok(())
}

/// How the data's input spec differs from the model's; an error when the layout does.
fn input_differences(manifest: &Manifest, arch: Arch, kind: DataKind, dir: &Path) -> Result<String> {
    let (layout, spec) = match kind {
        DataKind::Composite => (mer_shared::input::InputLayout::FlowStrain28, None),
        DataKind::Prepared => {
            let key = crate::prepare::cache::read_key(dir).with_context(|| format!("{} is not a prepared cache", dir.display()))?;
            (key.spec.layout, Some(key.spec))
        }
    };
    let reads = manifest.input.layout;
    if layout != reads && arch.derive_input(layout).is_none() {
        bail!(
            "{} ({}) reads {} inputs; {} holds {} inputs: evaluate it on data of its own input layout (`mer prepare --input {}`)",
            manifest.version,
            manifest.architecture,
            reads.name(),
            dir.display(),
            layout.name(),
            reads.name()
        );
    }
    Ok(match spec {
        // The composite images were made by STSTNet's code, whatever the model was trained on.
        None if manifest.inputs != mer_shared::manifest::InputProvenance::StstnetPng => {
            "the data are the composite release's flow images; the model was trained on inputs made otherwise".into()
        }
        None => String::new(),
        Some(spec) => {
            let spec = mer_shared::input::InputSpec { layout: reads, ..spec };
            if spec == manifest.input { String::new() } else { crate::export::spec_differences(&spec, &manifest.input) }
        }
    })
}

/// Scores `opts.model` on `opts.data`; `progress` is told of every sample classified.
pub fn evaluate(opts: &EvaluateOptions, progress: &indicatif::ProgressBar) -> Result<EvaluationResults> {
    let keys = opts.public_keys.iter().map(|p| mer_shared::bundle::read_public_key(p)).collect::<mer_shared::error::Result<Vec<_>>>()?;
    let classifier = Classifier::load(&opts.model, Trust::of(&keys))?.with_threads(opts.threads);
    let manifest = classifier.manifest().clone();
    let arch: Arch =
        manifest.architecture.parse().with_context(|| format!("{} names an architecture this mer lacks", opts.model.display()))?;
    let input_differences = input_differences(&manifest, arch, opts.kind, &opts.data)?;
    let mut data = TrainData::load_for(arch, opts.kind, &opts.data)?;
    if !opts.sources.is_empty() {
        data = data.of_sources(&opts.sources)?;
    }
    check_classes(&manifest, &opts.model, &data, &opts.data)?;

    progress.set_length(data.len() as u64);
    let mut predictions = Vec::with_capacity(data.len());
    let mut softmax_rows = Vec::with_capacity(data.len());
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(BATCH) {
        let (x, _) = data.batch(chunk, tch::Device::Cpu);
        let values = Vec::<f32>::try_from(x.flatten(0, -1))?;
        let result = classifier.classify(&values, chunk.len())?;
        for ((&i, logits), probabilities) in chunk.iter().zip(&result.logits).zip(result.probabilities) {
            softmax_rows.push(softmax(logits));
            predictions.push(Prediction {
                id: data.ids[i].clone(),
                truth: data.labels[i] as usize,
                predicted: argmax(&probabilities),
                probabilities,
            });
        }
        progress.inc(chunk.len() as u64);
    }

    let k = data.num_classes();
    let confusion = Confusion::from_pairs(k, predictions.iter().map(|p| (p.truth, p.predicted)));
    let scores = confusion.scores();
    let by_source = if data.sample_sources().is_some() { scores_by_source(&predictions, k) } else { BTreeMap::new() };
    let reported: Vec<Scored> = predictions.iter().map(|p| Scored { probabilities: &p.probabilities, truth: p.truth }).collect();
    let plain: Vec<Scored> = softmax_rows.iter().zip(&predictions).map(|(p, q)| Scored { probabilities: p, truth: q.truth }).collect();
    let mut sources: Vec<String> = by_source.keys().cloned().collect();
    if sources.is_empty() {
        sources.push(crate::prepare::cache::read_key(&opts.data).map(|key| key.dataset).unwrap_or_default());
    }
    Ok(EvaluationResults {
        model_version: manifest.version.clone(),
        architecture: manifest.architecture.clone(),
        trained_on: format!("{} ({} samples)", manifest.training.dataset, manifest.training.samples),
        data: data.source.clone(),
        sources,
        classes: data.classes.clone(),
        uf1: scores.uf1,
        uar: scores.uar,
        accuracy: scores.accuracy,
        samples: scores.samples,
        per_class: per_class(&confusion, &data.classes),
        confusion: confusion.counts,
        by_source,
        ece_softmax: ece(&plain),
        ece: ece(&reported),
        calibration: manifest.calibration.clone(),
        abstention: manifest.calibration.as_ref().map(|c| Abstention::measure(&reported, f64::from(c.uncertain_below))),
        bins_softmax: reliability(&plain),
        bins: reliability(&reported),
        training_samples: shares_training_samples(&manifest, &data.source),
        input_differences,
        predictions,
    })
}

impl EvaluationResults {
    pub fn headline(&self) -> String {
        let mut line = format!(
            "{} on {} samples of {}: UF1 {:.4}, UAR {:.4}, accuracy {:.4}",
            self.model_version,
            self.samples,
            self.sources.join(", "),
            self.uf1,
            self.uar,
            self.accuracy
        );
        if self.by_source.len() > 1 {
            for (source, s) in &self.by_source {
                line.push_str(&format!(
                    "\n  {source}: {} samples, UF1 {:.4}, UAR {:.4}, accuracy {:.4}",
                    s.samples, s.uf1, s.uar, s.accuracy
                ));
            }
        }
        match (&self.calibration, &self.abstention) {
            (Some(c), Some(a)) => line.push_str(&format!(
                "\n  calibration: ECE {:.3} with the model's temperature {:.2} ({:.3} plain softmax); below p {:.2}, {} of {} uncertain, \
                 accuracy {:.3} on the rest",
                self.ece,
                c.temperature,
                self.ece_softmax,
                a.uncertain_below,
                a.uncertain,
                a.uncertain + a.labelled,
                a.accuracy_when_labelled
            )),
            _ => line.push_str(&format!("\n  calibration: ECE {:.3} (the model has no temperature or threshold)", self.ece)),
        }
        if self.training_samples {
            line.push_str(
                "\n  note: these are the model's own training samples: the figures say how well it fits them, not how it generalises",
            );
        }
        if !self.input_differences.is_empty() {
            line.push_str(&format!(
                "\n  note: these inputs were made otherwise than the model's training inputs ({})",
                self.input_differences
            ));
        }
        line
    }

    /// `evaluation.json`, `confusion.png` and `reliability.png` in `out`.
    pub fn write(&self, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        crate::train::checkpoint::write_json_atomic(&out.join("evaluation.json"), self)?;
        let title = format!("{} on {} — UF1 {:.3}, UAR {:.3}", self.model_version, self.sources.join(", "), self.uf1, self.uar);
        confusion_png(&out.join("confusion.png"), &title, &self.classes, &self.confusion)?;
        let title = format!("{} on {} — reliability, ECE {:.3}", self.model_version, self.sources.join(", "), self.ece);
        reliability_png(
            &out.join("reliability.png"),
            &title,
            &[("plain softmax", &self.bins_softmax), ("as the model reports", &self.bins)],
        )
    }
}
