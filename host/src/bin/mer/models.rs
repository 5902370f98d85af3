//! `mer export`, `mer keys`, `mer bundle`, `mer infer`, `mer evaluate` and `mer bench-infer`: trained weights
//! made into a signed model the device runs, and that model run on the host.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use mer_host::evaluate::EvaluateOptions;
use mer_host::export::{ExportOptions, export_to_file};
use mer_host::train::data::DataKind;
use mer_shared::atomic_file::check_target;
use mer_shared::bundle::{Bundle, SecretKey, read_public_key, read_secret_key, write_public_key, write_secret_key};
use mer_shared::classifier::{Classifier, Origin, Trust, classify_file};
use mer_shared::input::InputLayout;
use mer_shared::labels::Taxonomy;
use mer_shared::manifest::WeightsOrigin;
use mer_shared::stdout::end_quietly_when_stdout_closes;

use crate::args::{count, input_layout, taxonomy};

#[derive(clap::Args)]
pub struct ExportArgs {
    /// A model.safetensors written by `mer train` (RUN/model.safetensors or RUN/folds/S/model.safetensors),
    /// or weights trained elsewhere (e.g. by `mer import-pytorch`) with --classes.
    checkpoint: PathBuf,
    /// Further checkpoints to export with the first as one ensemble (the log of their mean
    /// softmax): all-samples models of one architecture, classes and data, e.g. a recipe
    /// trained with several seeds. Describe it with --evaluation, a `mer ensemble` of the recipe.
    #[arg(long, num_args = 1..)]
    ensemble: Vec<PathBuf>,
    #[arg(short, long)]
    out: PathBuf,
    /// Label taxonomy of weights trained elsewhere (e.g. casme2-5): its classes, in order, name
    /// the logits. Inside a run it is the run's and may be left out.
    #[arg(long, value_parser = taxonomy())]
    classes: Option<Taxonomy>,
    /// Input layout of weights trained elsewhere: skd-tstsan (default; the only one imported
    /// SKD-TSTSAN weights read), flow-strain28 or htnet-mosaic28. Inside a run it is the run's.
    #[arg(long, value_parser = input_layout())]
    input: Option<InputLayout>,
    /// The run's prepared data, if it is no longer where the run recorded it; for weights
    /// trained elsewhere, a prepared cache of their input layout to check parity on.
    #[arg(long)]
    data: Option<PathBuf>,
    /// A LOSO run of the same recipe whose results describe this model (e.g. for an --all-samples model).
    #[arg(long)]
    evaluation: Option<PathBuf>,
    /// Model version written into the manifest (default: architecture and a digest of the graph).
    #[arg(long)]
    model_version: Option<String>,
    /// Seed of the probe input stored with its expected logits.
    #[arg(long, default_value_t = 20_261_128)]
    probe_seed: u64,
    /// A device labels a window `uncertain` when its highest calibrated probability is below
    /// this (0 never does). Needs a calibrated evaluating run; default 0.5 when there is one.
    #[arg(long)]
    uncertain_below: Option<f64>,
}

pub fn export(args: ExportArgs) -> Result<()> {
    let ExportArgs { checkpoint, ensemble, out, classes, input, data, evaluation, model_version, probe_seed, uncertain_below } = args;
    let opts = ExportOptions {
        checkpoint,
        ensemble,
        out: out.clone(),
        data,
        evaluation,
        version: model_version,
        probe_seed,
        classes,
        input,
        uncertain_below,
    };
    let exported = export_to_file(&opts)?;
    let m = &exported.manifest;
    println!(
        "{} version {}: {} classes ({}), input {:?}",
        m.model_name(),
        m.version,
        m.classes.len(),
        m.classes.join(", "),
        m.input_shape()
    );
    match &m.calibration {
        Some(c) => println!(
            "calibration: temperature {:.3} (fitted on {}), ECE {:.3} → {:.3}; windows below p {:.2} are labelled uncertain",
            c.temperature, c.fitted_on, c.ece_before, c.ece_after, c.uncertain_below
        ),
        None => println!("no calibration: plain softmax, every window labelled (export from an evaluated run, or pass --evaluation RUN)"),
    }
    for check in &exported.checks {
        println!(
            "parity tch vs tract, {}: max |diff| {:.2e}, arg-max {}",
            check.what,
            check.agreement.max_abs_diff,
            if check.agreement.argmax_mismatches == 0 { "identical" } else { "DIFFERS" }
        );
    }
    if let WeightsOrigin::Imported { sha256, .. } = &m.training.weights {
        println!(
            "imported weights (sha256 {sha256}): the manifest marks the inputs as {}; merd run refuses the model unless \
             [model] allow_foreign_inputs = true",
            m.inputs.name()
        );
        if opts.data.is_none() {
            println!("no --data: parity was checked on random inputs only; pass a prepared cache to compare real samples too");
        }
    }
    println!("wrote {} ({} bytes)", out.display(), exported.onnx.len());
    Ok(())
}

#[derive(Subcommand)]
pub enum Keys {
    /// Make a new ed25519 key pair: KEY (secret, mode 0600) and KEY.pub.
    Generate {
        #[arg(short, long)]
        out: PathBuf,
    },
}

pub fn keys(command: Keys) -> Result<()> {
    let Keys::Generate { out } = command;
    let key = SecretKey::generate()?;
    let public = out.with_file_name(format!("{}.pub", out.file_name().and_then(|n| n.to_str()).unwrap_or("key")));
    check_target(&public)?;
    write_secret_key(&out, &key)?;
    write_public_key(&public, &key.public())?;
    println!("key {}: secret {} (keep it private), public {}", key.public().key_id(), out.display(), public.display());
    Ok(())
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BundleArgs {
    #[command(subcommand)]
    action: Option<BundleAction>,
    /// The ONNX model written by `mer export`.
    #[arg(required = true)]
    model: Option<PathBuf>,
    /// Secret key to sign with (`mer keys generate`).
    #[arg(long, required = true)]
    key: Option<PathBuf>,
    #[arg(short, long, required = true)]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
enum BundleAction {
    /// Check a bundle's signature against trusted keys, its manifest and its probe in tract.
    Verify {
        bundle: PathBuf,
        /// Trusted public keys (at least one).
        #[arg(long = "pub", required = true)]
        public_keys: Vec<PathBuf>,
        /// Print the whole manifest as JSON instead of a summary.
        #[arg(long)]
        manifest: bool,
    },
}

pub fn bundle(args: BundleArgs) -> Result<()> {
    match args {
        BundleArgs { action: Some(BundleAction::Verify { bundle, public_keys, manifest }), .. } => verify(bundle, &public_keys, manifest),
        BundleArgs { model, key, out, .. } => sign(model.expect("required"), key.expect("required"), out.expect("required")),
    }
}

/// Only a model that loads, carries a manifest and passes its probe is worth signing.
fn sign(model: PathBuf, key: PathBuf, out: PathBuf) -> Result<()> {
    check_target(&out)?;
    let onnx = std::fs::read(&model).with_context(|| format!("reading {}", model.display()))?;
    let classifier = Classifier::from_onnx(&onnx).with_context(|| format!("{} cannot be bundled", model.display()))?;
    let secret = read_secret_key(&key)?;
    let bundle = Bundle::sign(classifier.manifest().to_json(), onnx, &secret);
    mer_shared::atomic_file::write(&out, &bundle.to_bytes())?;
    let m = classifier.manifest();
    println!("signed {} version {} with key {}", m.model_name(), m.version, secret.public().key_id());
    println!("wrote {}", out.display());
    Ok(())
}

fn verify(bundle: PathBuf, public_keys: &[PathBuf], manifest: bool) -> Result<()> {
    let keys = public_keys.iter().map(|p| read_public_key(p)).collect::<Result<Vec<_>, _>>()?;
    let classifier = Classifier::load(&bundle, Trust::Keys(&keys))?;
    let m = classifier.manifest();
    if manifest {
        println!("{}", m.to_json());
        return Ok(());
    }
    if let Origin::Bundle { signer, .. } = classifier.origin() {
        println!("signature: valid, by trusted key {signer}");
    } else {
        bail!("{} is not a bundle (no MERB header); sign it with `mer bundle`", bundle.display());
    }
    println!("model: {} version {}, classes {}", m.model_name(), m.version, m.classes.join(", "));
    println!("input: {:?} {:?}, preprocessing version {}", m.input.layout, m.input_shape(), m.preprocessing_version);
    println!("probe: max |logit difference| {:.2e} in tract", classifier.probe_agreement().max_abs_diff);
    println!("OK");
    Ok(())
}

#[derive(clap::Args)]
pub struct InferArgs {
    /// An ONNX model from `mer export` or a signed bundle.
    model: PathBuf,
    input: PathBuf,
    /// Public keys a bundle must be signed by (without one, only its integrity is checked).
    #[arg(long = "pub")]
    public_keys: Vec<PathBuf>,
    #[arg(long, default_value_t = 1, value_parser = count(256))]
    threads: usize,
}

pub fn infer(InferArgs { model, input, public_keys, threads }: InferArgs) -> Result<()> {
    end_quietly_when_stdout_closes();
    let (result, origin) = classify_file(&model, &input, &public_keys, threads)?;
    if let Origin::Bundle { signer, trusted: false } = origin {
        tracing::warn!("bundle signed by key {signer}; pass --pub KEY.pub to require a trusted signer");
    }
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// An ONNX model from `mer export` or a signed bundle.
    model: PathBuf,
    /// The data: a preparation cache (`mer prepare`) or, with --dataset composite, a composite
    /// directory; read as `mer train` reads it.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "prepared")]
    dataset: DataKind,
    /// Composite data: only the samples of these source datasets (e.g. samm,smic).
    #[arg(long, value_delimiter = ',')]
    sources: Vec<String>,
    /// Where evaluation.json, confusion.png and reliability.png go (default: print only).
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Public keys a bundle must be signed by (without one, only its integrity is checked).
    #[arg(long = "pub")]
    public_keys: Vec<PathBuf>,
    #[arg(long, default_value_t = 1, value_parser = count(256))]
    threads: usize,
}

pub fn evaluate(EvaluateArgs { model, data, dataset, sources, out, public_keys, threads }: EvaluateArgs) -> Result<()> {
    end_quietly_when_stdout_closes();
    let opts = EvaluateOptions { model, kind: dataset, data, sources, public_keys, threads };
    let progress = mer_host::progress::bar(0, "classifying");
    let results = mer_host::evaluate::evaluate(&opts, &progress)?;
    progress.finish_and_clear();
    println!("{}", results.headline());
    if let Some(out) = out {
        results.write(&out)?;
        println!("wrote {}", out.join("evaluation.json").display());
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct BenchInferArgs {
    /// An exported .onnx file or a .merb bundle.
    model: PathBuf,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16", value_parser = count(4096))]
    batches: Vec<usize>,
    #[arg(long, default_value_t = 1, value_parser = count(256))]
    threads: usize,
    #[arg(long, default_value_t = 20, value_parser = count(1_000_000))]
    iters: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Also print where tract's time goes, per kind of node (one sample, one thread).
    #[arg(long)]
    profile: bool,
}

pub fn bench_infer(BenchInferArgs { model, batches, threads, iters, warmup, profile }: BenchInferArgs) -> Result<()> {
    let rows = mer_host::export::bench::measure(&model, &batches, threads, iters, warmup)?;
    println!("{:<28} {:>5} {:>7} {:>12} {:>14}", "runtime", "batch", "threads", "median ms", "ms per sample");
    for r in &rows {
        println!("{:<28} {:>5} {:>7} {:>12.2} {:>14.2}", r.runtime, r.batch, r.threads, r.median_ms, r.per_sample_ms);
    }
    println!("{}", serde_json::to_string(&rows)?);
    if profile {
        let kinds = mer_host::export::bench::profile(&model, iters)?;
        let total: f64 = kinds.iter().map(|k| k.ms_per_run).sum();
        println!("\ntract, one sample, one thread: {total:.2} ms in nodes; the 15 largest kinds:");
        for k in kinds.iter().take(15) {
            println!("{:>8.2} ms {:>5.1} % {:>4} × {}", k.ms_per_run, 100.0 * k.ms_per_run / total, k.nodes, k.kind);
        }
    }
    Ok(())
}
