//! `mer export`: a trained checkpoint becomes one self-describing ONNX file. The graph is built
//! from the tch model's own layers, the manifest is embedded as ONNX metadata, and the file is
//! only written after tract has reproduced the tch logits on random and on real samples.
//! A checkpoint outside a `mer train` run (weights trained elsewhere, brought in by
//! `mer import-pytorch`) exports too, once told its classes: its manifest says so.

pub mod bench;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use mer_shared::inference::OnnxModel;
use mer_shared::input::InputLayout;
use mer_shared::labels::Taxonomy;
use mer_shared::manifest::{
    Calibration, EnsembleMember, Evaluation, InputProvenance, LogitAgreement, MANIFEST_FORMAT, Manifest, ONNX_METADATA_KEY,
    PREPROCESSING_VERSION, Probe, TrainingSummary, WeightsOrigin, describe_members,
};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor, nn};

use crate::calibration::DEFAULT_UNCERTAIN_BELOW;
use crate::model::ensemble::Ensemble;
use crate::model::ops::onnx::{self, Dim, OnnxGraph};
use crate::model::skd_tstsan::{SKD_TSTSAN, SkdSettings};
use crate::model::{Arch, ArchSettings, Logits, Network};
use crate::prepare::cache::read_key;
use crate::train::data::{DataKind, TrainData};
use crate::train::record::RunInfo;
use crate::train::report::RunResults;
use crate::weights::{copy_into, read_tensors};
use mer_shared::input::InputSpec;

pub const INPUT_NAME: &str = "input";
pub const OUTPUT_NAME: &str = "logits";
/// Samples of the prepared data compared at every export.
const REAL_SAMPLES: usize = 8;
const PROBE_BATCH: usize = 4;

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub checkpoint: PathBuf,
    /// Further checkpoints exported with `checkpoint` as one ensemble (the log of their mean
    /// softmax): all-samples models of one architecture, classes and data, e.g. one recipe
    /// trained with several seeds.
    pub ensemble: Vec<PathBuf>,
    pub out: PathBuf,
    /// Prepared data to take the input spec and real samples from (default: the run's).
    pub data: Option<PathBuf>,
    /// A LOSO run whose results describe this model's recipe (default: the checkpoint's own run, if evaluated).
    pub evaluation: Option<PathBuf>,
    /// Model version (default: derived from the weights).
    pub version: Option<String>,
    pub probe_seed: u64,
    /// The label taxonomy of weights trained elsewhere (a checkpoint outside any run): its class
    /// names, in order, are the logits'. Inside a run it must be the run's.
    pub classes: Option<Taxonomy>,
    /// The input layout of weights trained elsewhere (default: SKD-TSTSAN's). Inside a run it
    /// must be the run's.
    pub input: Option<InputLayout>,
    /// Calibrated probability below which a device labels a window `uncertain` (default
    /// [`DEFAULT_UNCERTAIN_BELOW`] when the evaluating run has a calibration).
    pub uncertain_below: Option<f64>,
}

/// One parity comparison made before writing.
#[derive(Debug, Clone)]
pub struct ParityCheck {
    pub what: String,
    pub agreement: LogitAgreement,
}

#[derive(Debug)]
pub struct Exported {
    pub manifest: Manifest,
    pub onnx: Vec<u8>,
    pub checks: Vec<ParityCheck>,
}

/// The run directory a checkpoint belongs to: `RUN/model.safetensors`, `RUN/all/…` or
/// `RUN/folds/SUBJECT/…`; None when there is no `run.json` there.
fn find_run(checkpoint: &Path) -> Result<Option<(PathBuf, RunInfo, String)>> {
    let scope = |dir: &Path, run: &Path| -> String {
        match dir.strip_prefix(run).ok().and_then(|rel| rel.to_str()) {
            Some(rel) if rel.starts_with("folds/") => format!("LOSO fold {}", &rel["folds/".len()..]),
            _ => "all samples".to_string(),
        }
    };
    let dir = checkpoint.parent().unwrap_or(Path::new("."));
    for run in dir.ancestors().take(3) {
        let run = if run.as_os_str().is_empty() { Path::new(".") } else { run };
        if run.join("run.json").is_file() {
            return Ok(Some((run.to_path_buf(), RunInfo::read(run)?, scope(dir, run))));
        }
    }
    Ok(None)
}

/// The results of an evaluated run (None when it has no `results.json`).
fn run_results(run: &Path) -> Result<Option<RunResults>> {
    let path = run.join("results.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?))
}

fn no_results(run: &Path) -> String {
    if run.join("run.json").is_file() {
        format!("{} has no results.json: `mer report {}` computes it from the fold records", run.display(), run.display())
    } else {
        format!("{} is not a training run (no run.json, no results.json)", run.display())
    }
}

/// What the manifest says of the evaluating run: its figures, and its calibration. A fold's
/// checkpoint takes the temperature fitted without its subject; any other model the one fitted
/// on every fold's held-out predictions.
fn describe_evaluation(
    results: Option<&RunResults>,
    evaluated_by: &Path,
    scope: &str,
    uncertain_below: Option<f64>,
) -> Result<(Option<Evaluation>, Option<Calibration>)> {
    let Some(r) = results else {
        if uncertain_below.is_some() {
            bail!("--uncertain-below needs a calibrated evaluation: pass --evaluation RUN, a LOSO run of the same recipe");
        }
        return Ok((None, None));
    };
    let evaluation =
        Evaluation { protocol: r.protocol.to_string(), uf1: r.uf1, uar: r.uar, accuracy: r.accuracy, note: r.protocol_note.clone() };
    let Some(c) = &r.calibration else {
        if uncertain_below.is_some() {
            bail!(
                "--uncertain-below: {} has no calibration (fewer than two folds, or reported by an older mer: `mer report {}` adds it)",
                evaluated_by.display(),
                evaluated_by.display()
            );
        }
        return Ok((Some(evaluation), None));
    };
    let threshold = uncertain_below.unwrap_or(DEFAULT_UNCERTAIN_BELOW);
    if !(0.0..=1.0).contains(&threshold) {
        bail!("--uncertain-below {threshold}: it is a probability, 0 to 1 (0 labels every window)");
    }
    let run_name = run_name(evaluated_by);
    let own_fold = scope.strip_prefix("LOSO fold ").and_then(|subject| c.fold_temperatures.get(subject).map(|t| (subject, *t)));
    let (temperature, fitted_on) = match own_fold {
        Some((subject, t)) => (t, format!("the held-out predictions of the other folds of {run_name} (not {subject})")),
        None => {
            (c.temperature, format!("the held-out predictions of all {} folds of {run_name} ({})", c.fold_temperatures.len(), r.protocol))
        }
    };
    let calibration = Calibration {
        temperature: temperature as f32,
        uncertain_below: threshold as f32,
        ece_before: c.ece_before,
        ece_after: c.ece_after,
        fitted_on,
    };
    Ok((Some(evaluation), Some(calibration)))
}

pub fn tch_logits(model: &dyn Logits, input: &[f32], batch: usize, shape: [usize; 3]) -> Vec<Vec<f32>> {
    let [c, h, w] = shape.map(|d| d as i64);
    let x = Tensor::from_slice(input).view([batch as i64, c, h, w]);
    let logits = tch::no_grad(|| model.logits_t(&x, false)).to_kind(Kind::Float);
    let classes = logits.size()[1] as usize;
    let flat = Vec::<f32>::try_from(logits.flatten(0, -1)).expect("float logits");
    flat.chunks(classes).map(<[f32]>::to_vec).collect()
}

/// Up to `n` sample indices, taken round-robin over the classes so every class is compared.
fn spread_over_classes(classes_of: &[usize], n: usize) -> Vec<usize> {
    let classes = classes_of.iter().max().map_or(0, |m| m + 1);
    let by_class: Vec<Vec<usize>> = (0..classes).map(|c| (0..classes_of.len()).filter(|&i| classes_of[i] == c).collect()).collect();
    let mut picked = Vec::new();
    for round in 0.. {
        let before = picked.len();
        for members in &by_class {
            if let Some(&i) = members.get(round)
                && picked.len() < n
            {
                picked.push(i);
            }
        }
        if picked.len() == before || picked.len() == n {
            break;
        }
    }
    picked
}

/// What an export takes from the run's data: the input spec, provenance, and a few real
/// samples for the parity check.
struct ExportData {
    spec: InputSpec,
    inputs: InputProvenance,
    shape: [usize; 3],
    taxonomy: String,
    dataset: String,
    digest: String,
    /// (id, input) of samples spread over the classes.
    samples: Vec<(String, Vec<f32>)>,
    /// Where the samples come from, for the parity report.
    samples_from: String,
}

/// (id, input) of up to [`REAL_SAMPLES`] samples of `data`, spread over its classes.
fn spread_samples(data: &TrainData) -> Vec<(String, Vec<f32>)> {
    let classes: Vec<usize> = data.labels.iter().map(|&l| l as usize).collect();
    spread_over_classes(&classes, REAL_SAMPLES)
        .into_iter()
        .map(|i| (data.ids[i].clone(), Vec::<f32>::try_from(data.x.get(i as i64).flatten(0, -1)).expect("float samples")))
        .collect()
}

impl ExportData {
    fn load(arch: Arch, info: &RunInfo, data_dir: &Path) -> Result<ExportData> {
        let inputs = match info.data.inputs {
            // Runs recorded before provenance was: SKD-TSTSAN read caches, the others composite images.
            InputProvenance::Unknown if arch.input_layout() == InputLayout::SkdTstsan38 => InputProvenance::MerShared,
            InputProvenance::Unknown => InputProvenance::StstnetPng,
            known => known,
        };
        let (kind, what) = match inputs {
            InputProvenance::StstnetPng => (DataKind::Composite, "composite data"),
            _ => (DataKind::Prepared, "prepared data (its input spec comes from there)"),
        };
        let mut data = TrainData::load_for(arch, kind, data_dir)
            .with_context(|| format!("the export needs the run's {what} for parity checks; pass --data DIR if it moved"))?;
        if !info.data.sources.is_empty() {
            data = data.of_sources(&info.data.sources)?;
        }
        let (spec, dataset) = match kind {
            DataKind::Composite if info.data.sources.is_empty() => (arch.input_layout().spec(), "composite (MEGC 2019 flow images)".into()),
            DataKind::Composite => {
                (arch.input_layout().spec(), format!("composite (MEGC 2019 flow images), sources {}", info.data.sources.join(", ")))
            }
            DataKind::Prepared => {
                let key = read_key(data_dir)?;
                // HTNet may have read flow images and tiled its mosaic from them: the same
                // preprocessing, with the mosaic as the last step.
                (InputSpec { layout: arch.input_layout(), ..key.spec }, key.dataset)
            }
        };
        let samples = spread_samples(&data);
        if data.source.digest != info.data.digest {
            bail!(
                "{} holds other data (digest {}) than the run was trained on ({}); pass the right --data",
                data_dir.display(),
                data.source.digest,
                info.data.digest
            );
        }
        Ok(ExportData {
            spec,
            inputs,
            shape: arch.input_shape(),
            taxonomy: data.source.taxonomy.clone(),
            dataset,
            digest: data.source.digest.clone(),
            samples,
            samples_from: "the run's data".into(),
        })
    }

    /// For weights trained elsewhere: the project's spec of `layout`, inputs marked external, and
    /// samples of `data_dir` when given, which must hold exactly that spec's inputs.
    fn imported(arch: Arch, layout: InputLayout, taxonomy: Taxonomy, data_dir: Option<&Path>) -> Result<ExportData> {
        let spec = layout.spec();
        let mut samples = Vec::new();
        let mut samples_from = String::new();
        if let Some(dir) = data_dir {
            let key = read_key(dir).context("--data must be a directory written by `mer prepare`")?;
            if key.spec != spec {
                bail!(
                    "{} holds inputs prepared with another input spec than the model's ({} differ: {}): prepare the parity data \
                     with `mer prepare --input {}`, or pass the --input the weights were trained on",
                    dir.display(),
                    if key.spec.layout == layout { "its parameters" } else { "its layout and parameters" },
                    spec_differences(&key.spec, &spec),
                    layout.name()
                );
            }
            let data = TrainData::load_for(arch, DataKind::Prepared, dir)?;
            samples = spread_samples(&data);
            samples_from = format!("the prepared {} data in {}", key.dataset, dir.display());
        }
        Ok(ExportData {
            spec,
            inputs: InputProvenance::External,
            shape: arch.input_shape(),
            taxonomy: taxonomy.name().to_string(),
            dataset: "imported (trained elsewhere; not recorded)".into(),
            digest: "unknown".into(),
            samples,
            samples_from,
        })
    }
}

/// The fields in which two input specs differ, as `field: a ≠ b`.
pub(crate) fn spec_differences(a: &InputSpec, b: &InputSpec) -> String {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) = (serde_json::to_value(a), serde_json::to_value(b)) else {
        return format!("{a:?} ≠ {b:?}");
    };
    let fields: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}: {v} ≠ {}", b.get(k).map_or("absent".to_string(), |w| w.to_string())))
        .collect();
    fields.join(", ")
}

/// The ONNX file of `model`'s inference graph: input [`INPUT_NAME`] (N, C, H, W) with a
/// symbolic batch, output [`OUTPUT_NAME`] (N, classes).
pub fn inference_graph(model: &dyn Logits, shape: [usize; 3], classes: usize, metadata: Vec<(String, String)>) -> Vec<u8> {
    graph_bytes(|g, input| model.logits_graph(g, input), shape, classes, metadata)
}

/// The ONNX file of the graph `build` adds between the input and the logits.
pub fn graph_bytes(
    build: impl FnOnce(&mut OnnxGraph, &str) -> String,
    shape: [usize; 3],
    classes: usize,
    metadata: Vec<(String, String)>,
) -> Vec<u8> {
    let mut graph = OnnxGraph::new();
    let logits = build(&mut graph, INPUT_NAME);
    let logits = graph.name_output(&logits, OUTPUT_NAME);
    let [c, h, w] = shape.map(|d| d as i64);
    let input_dims = [Dim::Batch, Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)];
    let output_dims = [Dim::Batch, Dim::Fixed(classes as i64)];
    onnx::encode(&graph.into_model((INPUT_NAME, &input_dims), (&logits, &output_dims), metadata))
}

/// What the manifest says about where the weights came from, and how to rebuild their model.
struct Source {
    arch: Arch,
    /// The architecture's name as the manifest and the default version spell it.
    settings: ArchSettings,
    architecture_options: String,
    classes: Vec<String>,
    data: ExportData,
    training: TrainingSummary,
    calibration: Option<Calibration>,
}

impl Source {
    /// A checkpoint of a `mer train` run: everything comes from the run; `--classes` and
    /// `--input`, when given, must be the run's.
    fn run(opts: &ExportOptions, run: &Path, info: &RunInfo, scope: String) -> Result<Source> {
        let arch = info.config.arch;
        let here = || format!("{} belongs to the training run {}", opts.checkpoint.display(), run.display());
        if let Some(taxonomy) = opts.classes
            && taxonomy.name() != info.data.taxonomy
        {
            bail!(
                "--classes {taxonomy}: {}, whose classes are {} ({}); leave --classes out inside a run (it takes the run's)",
                here(),
                info.data.taxonomy,
                info.classes.join(", ")
            );
        }
        if let Some(layout) = opts.input
            && layout != arch.input_layout()
        {
            bail!(
                "--input {}: {}, whose {arch} model reads {} inputs; leave --input out inside a run (it takes the run's)",
                layout.name(),
                here(),
                arch.input_layout().name()
            );
        }
        let data_dir = opts.data.clone().unwrap_or_else(|| PathBuf::from(&info.data.path));
        let data = ExportData::load(arch, info, &data_dir)?;
        // An ensemble is described only by the `mer ensemble` run it is named with, never by
        // the run of its first member alone.
        let evaluated_by = match &opts.evaluation {
            Some(dir) => Some(dir.as_path()),
            None if opts.ensemble.is_empty() => Some(run),
            None => None,
        };
        let results = match evaluated_by {
            Some(dir) => run_results(dir)?,
            None => None,
        };
        if let Some(dir) = &opts.evaluation {
            let Some(r) = &results else { bail!("{}", no_results(dir)) };
            let models = opts.ensemble.len() + 1;
            if r.ensemble.len().max(1) != models {
                bail!(
                    "--evaluation {}: it scores {}, and this export is {}; describe a model by the LOSO of its own recipe \
                     (an ensemble by `mer ensemble` over as many runs)",
                    dir.display(),
                    if r.ensemble.is_empty() { "a single model".to_string() } else { format!("an ensemble of {}", r.ensemble.len()) },
                    if models == 1 { "a single model".to_string() } else { format!("an ensemble of {models}") }
                );
            }
        }
        let evaluated_by = evaluated_by.unwrap_or(run);
        let (evaluation, calibration) = describe_evaluation(results.as_ref(), evaluated_by, &scope, opts.uncertain_below)?;
        let training = TrainingSummary {
            run: run_name(run),
            checkpoint: file_name(&opts.checkpoint),
            dataset: data.dataset.clone(),
            data_digest: data.digest.clone(),
            samples: info.samples,
            scope,
            config: serde_json::to_value(&info.config)?,
            evaluation,
            weights: WeightsOrigin::MerTrain,
            ensemble: vec![],
        };
        Ok(Source {
            arch,
            settings: info.config.settings.clone(),
            architecture_options: arch.describe(&info.config.settings, &info.config.loss),
            classes: info.classes.clone(),
            data,
            training,
            calibration,
        })
    }

    /// Weights trained elsewhere: only SKD-TSTSAN's can be imported (`mer import-pytorch`), in
    /// the official configuration, so those are what the checkpoint must hold.
    fn imported(opts: &ExportOptions, taxonomy: Taxonomy, weights: &[(String, Tensor)]) -> Result<Source> {
        let arch = SKD_TSTSAN;
        let reads = arch.input_layout();
        let layout = opts.input.unwrap_or(reads);
        if layout != reads {
            bail!(
                "--input {}: {} is not inside a training run, so it is read as imported {arch} weights (the only architecture \
                 `mer import-pytorch` reads), and {arch} reads {} inputs; pass --input {} or leave --input out",
                layout.name(),
                opts.checkpoint.display(),
                reads.name(),
                reads.name()
            );
        }
        let classes = taxonomy.classes();
        match weights.iter().find(|(name, _)| name == CLASSIFIER_WEIGHT) {
            Some((_, t)) if t.size().first() != Some(&(classes.len() as i64)) => bail!(
                "--classes {taxonomy} names {} classes, but the classifier of {} ({CLASSIFIER_WEIGHT} {:?}) has {}: pass the \
                 taxonomy the weights were trained with",
                classes.len(),
                opts.checkpoint.display(),
                t.size(),
                t.size().first().map_or("none".to_string(), |k| k.to_string())
            ),
            Some(_) => {}
            None => bail!(
                "{} has no {CLASSIFIER_WEIGHT}: a checkpoint outside a training run must hold {arch} weights as \
                 `mer import-pytorch` writes them",
                opts.checkpoint.display()
            ),
        }
        let bytes = std::fs::read(&opts.checkpoint).with_context(|| format!("reading {}", opts.checkpoint.display()))?;
        let data = ExportData::imported(arch, layout, taxonomy, opts.data.as_deref())?;
        let results = match &opts.evaluation {
            Some(dir) => Some(run_results(dir)?.with_context(|| no_results(dir))?),
            None => None,
        };
        let evaluated_by = opts.evaluation.as_deref().unwrap_or(Path::new("."));
        let (evaluation, calibration) = describe_evaluation(results.as_ref(), evaluated_by, "imported", opts.uncertain_below)?;
        let training = TrainingSummary {
            run: "imported".into(),
            checkpoint: file_name(&opts.checkpoint),
            dataset: data.dataset.clone(),
            data_digest: data.digest.clone(),
            samples: 0,
            scope: "imported".into(),
            config: serde_json::Value::Null,
            evaluation,
            weights: WeightsOrigin::Imported { checkpoint: file_name(&opts.checkpoint), sha256: hex::encode(Sha256::digest(&bytes)) },
            ensemble: vec![],
        };
        Ok(Source {
            arch,
            settings: ArchSettings::Skd(SkdSettings::default()),
            architecture_options: "official configuration (amp 2, no ablation); weights imported".into(),
            classes: classes.iter().map(|c| c.to_string()).collect(),
            data,
            training,
            calibration,
        })
    }
}

/// The main classifier's weight in SKD-TSTSAN's state dict: its rows are the classes.
const CLASSIFIER_WEIGHT: &str = "fc2.weight";

/// A run directory's own name (as the manifest records it), or the path as given.
fn run_name(run: &Path) -> String {
    let name = run.canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    name.unwrap_or_else(|| run.display().to_string())
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Builds, checks and returns the export of `opts.checkpoint` (nothing is written).
pub fn export(opts: &ExportOptions) -> Result<Exported> {
    let (source, weights) = match find_run(&opts.checkpoint)? {
        Some((run, info, scope)) => (Source::run(opts, &run, &info, scope)?, read_tensors(&opts.checkpoint)?),
        None => {
            let Some(taxonomy) = opts.classes else {
                bail!(
                    "{} is not inside a training run (no run.json beside it or up to two levels above): export a model.safetensors \
                     written by `mer train` from its run, or, for weights trained elsewhere (e.g. written by `mer import-pytorch`), \
                     pass --classes TAXONOMY (e.g. casme2-5)",
                    opts.checkpoint.display()
                )
            };
            let weights = read_tensors(&opts.checkpoint).context(
                "a checkpoint outside a training run must be a safetensors file: convert a PyTorch state dict with \
                 `mer import-pytorch --classes K STATE_DICT -o CKPT.safetensors` first",
            )?;
            (Source::imported(opts, taxonomy, &weights)?, weights)
        }
    };
    let Source { arch, settings, mut architecture_options, classes, data, mut training, calibration } = source;
    let arch_name = arch.name().to_string();

    let mut vs = nn::VarStore::new(Device::Cpu);
    let first = arch.build(&vs.root(), classes.len() as i64, &settings);
    let loaded = copy_into(&mut vs, &weights, |_| true, &opts.checkpoint);
    if matches!(training.weights, WeightsOrigin::Imported { .. }) {
        loaded.with_context(|| {
            format!(
                "{} is not inside a training run, so it is read as {arch} weights in the official configuration, as \
                 `mer import-pytorch` writes them",
                opts.checkpoint.display()
            )
        })?;
    } else {
        loaded?;
    }
    let model: Box<dyn Logits> = if opts.ensemble.is_empty() {
        Box::new(first)
    } else {
        let mut members = vec![first];
        training.ensemble.push(EnsembleMember {
            run: training.run.clone(),
            checkpoint: training.checkpoint.clone(),
            config: training.config.clone(),
        });
        for checkpoint in &opts.ensemble {
            let (member, record) = ensemble_member(checkpoint, arch, &classes, &data.digest, &training.scope)?;
            members.push(member);
            training.ensemble.push(record);
        }
        let runs: Vec<&str> = training.ensemble.iter().map(|m| m.run.as_str()).collect();
        architecture_options = format!(
            "ensemble of {} (log of their mean softmax); first member: {architecture_options}",
            describe_members(&training.ensemble)
        );
        training.run = runs.join(" + ");
        Box::new(Ensemble::new(members))
    };
    let model = &*model;

    let shape = data.shape;
    let bare = inference_graph(model, shape, classes.len(), vec![]);
    let version = opts.version.clone().unwrap_or_else(|| {
        let digest = Sha256::digest(&bare);
        format!("{arch_name}-{}", hex::encode(&digest[..6]))
    });

    let probe_input = Probe::input(opts.probe_seed, PROBE_BATCH, shape);
    let probe = Probe::new(opts.probe_seed, PROBE_BATCH, shape, tch_logits(model, &probe_input, PROBE_BATCH, shape));
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        architecture: arch_name,
        architecture_options,
        version,
        classes,
        taxonomy: data.taxonomy.clone(),
        input: data.spec.clone(),
        preprocessing_version: PREPROCESSING_VERSION,
        inputs: data.inputs,
        training,
        probe,
        calibration,
    };
    manifest.validate()?;
    let onnx = inference_graph(model, shape, manifest.classes.len(), vec![(ONNX_METADATA_KEY.to_string(), manifest.to_json())]);
    let checks = check_parity(model, &onnx, &manifest, &data)?;
    Ok(Exported { manifest, onnx, checks })
}

/// A further member of an exported ensemble: a checkpoint of a training run whose architecture
/// reads the input of the first member's `arch`, with the first member's classes, data and scope.
fn ensemble_member(
    checkpoint: &Path,
    arch: Arch,
    classes: &[String],
    data_digest: &str,
    scope: &str,
) -> Result<(Box<dyn Network>, EnsembleMember)> {
    let Some((run, info, member_scope)) = find_run(checkpoint)? else {
        bail!("{}: an ensemble's members are checkpoints of `mer train` runs (no run.json beside it)", checkpoint.display());
    };
    let differs = |what: String| anyhow::anyhow!("{} cannot join the ensemble: {what}", checkpoint.display());
    let member_arch = info.config.arch;
    if member_arch.input_layout() != arch.input_layout() {
        return Err(differs(format!(
            "its run trained {member_arch}, which reads {} inputs, the first member {arch}, which reads {}; an ensemble's \
             members read one input",
            member_arch.input_layout().name(),
            arch.input_layout().name()
        )));
    }
    if info.classes != classes {
        return Err(differs(format!("its classes are {}, the first member's {}", info.classes.join(", "), classes.join(", "))));
    }
    if info.data.digest != data_digest {
        return Err(differs(format!("it was trained on other data (digest {}, the first member {data_digest})", info.data.digest)));
    }
    if member_scope != scope {
        return Err(differs(format!("it is a model of {member_scope}, the first member of {scope}")));
    }
    let mut vs = nn::VarStore::new(Device::Cpu);
    let network = member_arch.build(&vs.root(), classes.len() as i64, &info.config.settings);
    copy_into(&mut vs, &read_tensors(checkpoint)?, |_| true, checkpoint)?;
    let record = EnsembleMember { run: run_name(&run), checkpoint: file_name(checkpoint), config: serde_json::to_value(&info.config)? };
    Ok((network, record))
}

/// tch against tract: the probe (batch 4), one random sample alone (another batch size) and
/// real prepared samples. Any disagreement beyond the tolerance is an error.
fn check_parity(model: &dyn Logits, onnx: &[u8], manifest: &Manifest, data: &ExportData) -> Result<Vec<ParityCheck>> {
    let tract = OnnxModel::from_bytes(onnx).context("tract cannot load the exported graph")?;
    let shape = data.shape;
    let mut checks = vec![ParityCheck {
        what: format!("probe: {} random inputs, seed {}", manifest.probe.batch, manifest.probe.seed),
        agreement: tract.check_probe(manifest)?,
    }];
    let per_sample: usize = shape.iter().product();
    let single = &Probe::input(manifest.probe.seed, 1, shape)[..per_sample];
    let got = tract.run(single, 1)?;
    checks.push(ParityCheck {
        what: "1 random input (batch of one)".into(),
        agreement: LogitAgreement::between(&manifest.probe.logits[..1], &got),
    });
    if let Some((first, _)) = data.samples.first() {
        let input: Vec<f32> = data.samples.iter().flat_map(|(_, v)| v.iter().copied()).collect();
        let expected = tch_logits(model, &input, data.samples.len(), shape);
        let got = tract.run(&input, data.samples.len())?;
        checks.push(ParityCheck {
            what: format!("{} samples of {} ({first} …)", data.samples.len(), data.samples_from),
            agreement: LogitAgreement::between(&expected, &got),
        });
    }
    if let Some(bad) = checks.iter().find(|c| !c.agreement.within_tolerance()) {
        bail!(
            "the exported graph disagrees with the trained model on {}: max |logit difference| {:.3e}, {} arg-max differ; nothing was written",
            bad.what,
            bad.agreement.max_abs_diff,
            bad.agreement.argmax_mismatches
        );
    }
    Ok(checks)
}

/// [`export`], then writes the file atomically. A path that cannot become the file is refused
/// before the (long) export starts.
pub fn export_to_file(opts: &ExportOptions) -> Result<Exported> {
    mer_shared::atomic_file::check_target(&opts.out)?;
    let exported = export(opts)?;
    mer_shared::atomic_file::write(&opts.out, &exported.onnx)?;
    Ok(exported)
}
