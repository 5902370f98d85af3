//! `mer prepare` and `mer spot-eval`: datasets read in their distributed layouts, prepared for
//! training or replayed through the device's spotting.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use mer_host::dataset::DatasetKind;
use mer_host::dataset::long_video::LongVideoKind;
use mer_host::model::Arch;
use mer_host::prepare::pipeline::{PrepareOptions, prepare};
use mer_host::prepare::{CropMode, DetectorSettings};
use mer_host::progress::bar;
use mer_host::spot_eval::{SpotEval, SpotEvalOptions};
use mer_shared::input::InputLayout;
use mer_shared::labels::Taxonomy;
use mer_shared::stdout::end_quietly_when_stdout_closes;

use crate::args::{count, input_layout};

#[derive(clap::Args)]
pub struct PrepareArgs {
    /// The dataset, read in the layout its owners distribute.
    #[arg(long)]
    dataset: DatasetKind,
    /// The dataset's root folder, as distributed.
    #[arg(long)]
    root: PathBuf,
    /// The annotation sheet (default: looked up under --root by its distributed name; interview
    /// takes none).
    #[arg(long)]
    annotations: Option<PathBuf>,
    /// Class set: a count (e.g. 5) or a name (e.g. casme2-5); default: the dataset's first.
    #[arg(long)]
    classes: Option<String>,
    /// Face crop: detect (first frame of each clip), none (frames are faces), or x,y,w,h.
    #[arg(long, default_value = "detect")]
    crop: CropMode,
    /// Model input: skd-tstsan (38×48×48), flow-strain28 (u, v, strain 3×28×28) or
    /// htnet-mosaic28 (HTNet's landmark mosaic of it); default: the input of --arch.
    #[arg(long, value_parser = input_layout())]
    input: Option<InputLayout>,
    /// The architecture the cache is for, which picks the default --input.
    #[arg(long, default_value = "skd-tstsan")]
    arch: Arch,
    #[arg(long)]
    out: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long, value_parser = count(256))]
    threads: Option<usize>,
    /// Exit 0 even when some clips could not be prepared (they are still listed), e.g. the
    /// few where the face detector finds no face.
    #[arg(long)]
    allow_failed: bool,
}

pub fn prepare_dataset(args: PrepareArgs) -> Result<()> {
    let PrepareArgs { dataset, root, annotations, classes, crop, input, arch, out, threads, allow_failed } = args;
    end_quietly_when_stdout_closes();
    if let Some(t) = threads {
        rayon::ThreadPoolBuilder::new().num_threads(t).build_global().context("setting --threads")?;
    }
    let opts = PrepareOptions {
        dataset,
        root,
        annotations,
        taxonomy: class_set(dataset, classes.as_deref())?,
        out: out.clone(),
        crop,
        detector: DetectorSettings::default(),
        spec: input.unwrap_or(arch.input_layout()).spec(),
    };
    let summary = prepare(&opts)?;
    print!("{}", summary.describe());
    if !summary.failed.is_empty() && !allow_failed {
        bail!(
            "{} samples could not be prepared (listed above); the other {} are in {}; rerun after fixing them, stored samples are kept",
            summary.failed.len(),
            summary.samples,
            out.display()
        );
    }
    println!("wrote {}", out.display());
    Ok(())
}

/// `--classes` as a count or a class-set name, checked against the dataset.
fn class_set(dataset: DatasetKind, classes: Option<&str>) -> Result<Taxonomy> {
    let allowed = dataset.taxonomies();
    let names = || allowed.iter().map(|t| format!("{} ({} classes)", t.name(), t.num_classes())).collect::<Vec<_>>().join(", ");
    let Some(text) = classes else { return Ok(dataset.default_taxonomy()) };
    let found = match text.parse::<usize>() {
        Ok(k) => allowed.iter().find(|t| t.num_classes() == k).copied(),
        Err(_) => text.parse::<Taxonomy>().ok().filter(|t| allowed.contains(t)),
    };
    found.ok_or_else(|| anyhow::anyhow!("--classes {text} does not fit {dataset}; choose one of {}", names()))
}

#[derive(clap::Args)]
pub struct SpotEvalArgs {
    /// The long-video dataset, read in the layout its owners distribute.
    #[arg(long)]
    dataset: LongVideoKind,
    /// The dataset's root folder, as distributed (interview: `mer synth interview` or
    /// `mer synth faces` output).
    #[arg(long)]
    root: PathBuf,
    /// The annotation sheet (default: looked up under --root by its distributed name; interview
    /// takes none).
    #[arg(long)]
    annotations: Option<PathBuf>,
    /// A merd.toml whose [spotting] and [face] tables are used (other tables are ignored);
    /// default: merd's defaults, the face detected.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output folder (default: out/spot-eval/<dataset>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Videos evaluated at once (default: all cores).
    #[arg(long, value_parser = count(256))]
    threads: Option<usize>,
    /// Spot-then-recognise: label every true-positive spot with this model (a .merb bundle
    /// or ONNX export) through the device's preprocessing, and report its UF1 and UAR.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Public key the model's bundle must be signed by (repeatable; default: integrity only).
    #[arg(long = "pub")]
    public_keys: Vec<PathBuf>,
}

pub fn spot_eval(args: SpotEvalArgs) -> Result<()> {
    let SpotEvalArgs { dataset, root, annotations, config, out, threads, model, public_keys } = args;
    let out = out.unwrap_or_else(|| PathBuf::from("out/spot-eval").join(dataset.name()));
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let eval = SpotEval::new(SpotEvalOptions { kind: dataset, root, annotations, config, out, threads, model, public_keys })?;
    print!("{}", eval.set().summary());
    let pb = bar(eval.total_frames(), "frames");
    let report = eval.run(&|n| pb.inc(n))?;
    pb.finish();
    print!("{}", report.table());
    if !report.failed.is_empty() {
        let (failed, all) = (report.failed.len(), eval.set().videos.len());
        bail!("{failed} of {all} videos failed (listed above and in {})", report.results_path().display());
    }
    Ok(())
}
