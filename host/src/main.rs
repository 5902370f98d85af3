//! `mer`: the host command line.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use mer_host::dataset::DatasetKind;
use mer_host::dataset::long_video::LongVideoKind;
use mer_host::export::{ExportOptions, export_to_file};
use mer_host::import::official::import_skd_tstsan;
use mer_host::model::skd_tstsan::{Ablation, SKD_TSTSAN, SkdSettings};
use mer_host::model::{Arch, ArchSettings};
use mer_host::photo_clips::write_photo_clips;
use mer_host::prepare::pipeline::{PrepareOptions, prepare};
use mer_host::prepare::{CropMode, DetectorSettings};
use mer_host::spot_eval::{SpotEval, SpotEvalOptions};
use mer_host::train::config::{MagnetMode, Protocol, Shard, TrainConfig};
use mer_host::train::data::{DataKind, TrainData};
use mer_host::train::losses::LossConfig;
use mer_host::train::optimizer::{AdamConfig, Cosine};
use mer_host::train::report::summarise;
use mer_host::train::run::{DeviceChoice, resolve_device, train_all, train_loso};
use mer_host::{demo, fleet, flow_bench, progress::bar, torch_info};
use mer_shared::atomic_file::{AtomicFile, check_target};
use mer_shared::bundle::{Bundle, SecretKey, read_public_key, read_secret_key, write_public_key, write_secret_key};
use mer_shared::classifier::{Classifier, Origin, Trust, classify_file};
use mer_shared::flow::{Tvl1Params, colour_png, encode_flo, read_flo, save_colour_png, tvl1_flow};
use mer_shared::image::load_gray;
use mer_shared::input::InputLayout;
use mer_shared::labels::Taxonomy;
use mer_shared::manifest::WeightsOrigin;
use mer_shared::stdout::end_quietly_when_stdout_closes;
use mer_shared::synth::casme2::{Casme2Options, write_casme2};
use mer_shared::synth::interview::{InterviewOptions, write_interview};
use mer_shared::synth::photo::PhotoClipOptions;

#[derive(Parser)]
#[command(name = "mer", version, about = "Micro-expression recognition: data, flow, training and export on the host")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the end-to-end demo on synthetic data and write pictures and figures to --out.
    Demo {
        #[arg(long, default_value = "out/demo")]
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Generate synthetic micro-expression data.
    #[command(subcommand)]
    Synth(Synth),
    /// TV-L1 optical flow between two frames, written as a Middlebury .flo file.
    Flow {
        from: PathBuf,
        to: PathBuf,
        #[arg(short, long)]
        out: PathBuf,
        /// Worker threads (1 = single-threaded).
        #[arg(long, default_value_t = 1, value_parser = count(256))]
        threads: usize,
        /// Also write a colour-wheel picture of the flow.
        #[arg(long)]
        png: Option<PathBuf>,
    },
    /// Colour-wheel picture (PNG) of a .flo file: hue is direction, saturation is magnitude.
    FlowImage {
        flo: PathBuf,
        #[arg(short, long)]
        out: PathBuf,
        /// Magnitude shown fully saturated, in pixels (default: the largest in the field).
        #[arg(long)]
        max: Option<f32>,
    },
    /// Compare TV-L1 with OpenCV's DualTVL1 (accuracy and single-thread speed).
    BenchFlow {
        #[arg(long, default_value_t = 20, value_parser = count(100_000))]
        pairs: usize,
        #[arg(long, default_value = "out/bench-flow")]
        dir: PathBuf,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Prepare a dataset for training: face crops, key frames, flows and model inputs, cached.
    Prepare {
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
    },
    /// Spotting evaluation on long videos (MEGC protocol) with the device's own spotting: each
    /// video replayed through merd's frame source, face box and spotter; scores overall, micro
    /// and macro, OUT/results.json and a timeline picture per video.
    SpotEval {
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
    },
    /// Train and evaluate with leave-one-subject-out (or one shard of it with --fold i/n).
    Train(TrainArgs),
    /// Merge the fold results of run directories (e.g. `--fold i/n` shards) into one report.
    Report {
        /// Run directories written by `mer train`.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Where the merged run goes (default: the single run given).
        #[arg(short, long)]
        out: Option<PathBuf>,
    },
    /// Convert a state dict saved by the official PyTorch code into a checkpoint for --init or
    /// for `mer export --classes`.
    ImportPytorch {
        /// The architecture of the state dict (the official code's: skd-tstsan).
        #[arg(long, default_value = "skd-tstsan")]
        arch: Arch,
        /// Number of classes the state dict was trained with.
        #[arg(long)]
        classes: i64,
        /// A torch.save'd state dict (.pth/.pt) or a .safetensors file.
        state_dict: PathBuf,
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Training throughput (forward, backward and Adam update apart) and inference throughput
    /// of an architecture on random inputs.
    BenchTrain {
        #[arg(long, default_value = "skd-tstsan")]
        arch: Arch,
        /// Adam L2 weight decay (0 skips its term, as HTNet's recipe does).
        #[arg(long, default_value_t = 5e-4)]
        weight_decay: f64,
        #[arg(long, default_value_t = 16, value_parser = count(4096))]
        batch: usize,
        #[arg(long, default_value_t = 10, value_parser = count(1_000_000))]
        iters: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long, default_value = "auto")]
        device: DeviceChoice,
    },
    /// Show the libtorch build and whether a CUDA GPU is usable.
    Info,
    /// Signing keys for model bundles.
    #[command(subcommand)]
    Keys(Keys),
    /// Sign an exported model into a bundle (`mer bundle MODEL.onnx --key KEY -o MODEL.merb`),
    /// or check one (`mer bundle verify MODEL.merb --pub KEY.pub`).
    Bundle(BundleArgs),
    /// Send a signed bundle to devices and activate it there (each device checks the signature,
    /// the manifest and the probe first); prints one line per device.
    Push {
        /// The bundle (`mer bundle`).
        bundle: PathBuf,
        #[command(flatten)]
        devices: Targets,
        /// Secret key the devices trust, to sign the activation.
        #[arg(long)]
        key: PathBuf,
    },
    /// Return devices to the model they ran before the last activation.
    Rollback {
        #[command(flatten)]
        devices: Targets,
        /// Secret key the devices trust, to sign the rollback.
        #[arg(long)]
        key: PathBuf,
    },
    /// The model, kept models and health of each device.
    Devices {
        #[command(flatten)]
        devices: Targets,
        /// One JSON object per device instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Classify the samples of a float32 .npy file (N, C, H, W) with a model or bundle; prints JSON.
    Infer {
        /// An ONNX model from `mer export` or a signed bundle.
        model: PathBuf,
        input: PathBuf,
        /// Public keys a bundle must be signed by (without one, only its integrity is checked).
        #[arg(long = "pub")]
        public_keys: Vec<PathBuf>,
        #[arg(long, default_value_t = 1, value_parser = count(256))]
        threads: usize,
    },
    /// Latency of an exported model in tract, onnxruntime and tch at the same thread count.
    BenchInfer {
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
    },
    /// Write a trained checkpoint as an ONNX model with its manifest, after checking that tract
    /// reproduces the checkpoint's logits.
    Export {
        /// A model.safetensors written by `mer train` (RUN/model.safetensors or RUN/folds/S/model.safetensors),
        /// or weights trained elsewhere (e.g. by `mer import-pytorch`) with --classes.
        checkpoint: PathBuf,
        #[arg(short, long)]
        out: PathBuf,
        /// Label taxonomy of weights trained elsewhere (e.g. casme2-5): its classes, in order, name
        /// the logits. Inside a run it is the run's and may be left out.
        #[arg(long)]
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
    },
}

#[derive(clap::Args)]
struct TrainArgs {
    #[arg(long, default_value = "skd-tstsan")]
    arch: Arch,
    /// What --data holds (composite: the labels CSV and STSNet_whole_norm_u_v_os/).
    #[arg(long, default_value = "prepared")]
    dataset: DataKind,
    #[arg(long)]
    data: PathBuf,
    /// Run directory: results, plots and per-fold checkpoints; the same command again resumes.
    #[arg(long)]
    out: PathBuf,
    /// How each fold chooses the model it reports.
    #[arg(long, default_value = "honest")]
    protocol: Protocol,
    /// Iterations (batches) per fold.
    #[arg(long, default_value_t = 20_000)]
    iters: usize,
    /// Samples per batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Run only shard i of n of the LOSO folds (merge shards with `mer report`).
    #[arg(long)]
    fold: Option<Shard>,
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// SKD-TSTSAN: start every fold from these weights (classifier layers are dropped), e.g. a CK+ model.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Seeds initialisation, shuffling and dropout (each fold from the seed and its subject).
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// SKD-TSTSAN: components to switch off, any of mag,eca,tsm,skd.
    #[arg(long, default_value = "none")]
    ablate: Ablation,
    /// SKD-TSTSAN: magnification factor α.
    #[arg(long, default_value_t = 2.0)]
    amp: f64,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Decay the rate along a cosine from --lr to this value over the --iters of a fold
    /// (default: a constant rate).
    #[arg(long)]
    lr_final: Option<f64>,
    /// Adam's second-moment decay β2 (SKD-TSTSAN's 0.99; PyTorch's default, used by HTNet, is 0.999).
    #[arg(long, default_value_t = 0.99)]
    adam_beta2: f64,
    /// Adam L2 weight decay (added to the gradient, as torch.optim.Adam).
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f64,
    /// KD weight λ1.
    #[arg(long, default_value_t = 0.1)]
    alpha: f64,
    /// Feature-loss weight λ2.
    #[arg(long, default_value_t = 1e-6)]
    beta: f64,
    /// Distillation temperature T.
    #[arg(long, default_value_t = 3.0)]
    temperature: f64,
    /// AM3F-FlowNet's logit adjustment τ (training logits + τ·log class prior).
    #[arg(long, default_value_t = 1.0)]
    tau: f64,
    /// Honest protocol: hold out this many training subjects per fold to pick the epoch.
    #[arg(long, default_value_t = 0)]
    val_subjects: usize,
    /// SKD-TSTSAN: motion-magnification weights (e.g. magnet.pth) for the magnification front ends.
    #[arg(long)]
    magnet: Option<PathBuf>,
    #[arg(long, default_value = "transfer")]
    magnet_mode: MagnetMode,
    /// Iterations between resumable checkpoints.
    #[arg(long, default_value_t = 1000)]
    checkpoint_every: usize,
    /// Train one model on every sample instead of LOSO (e.g. CK+ pre-training for --init).
    #[arg(long)]
    all_samples: bool,
}

impl TrainArgs {
    /// The configuration; SKD-TSTSAN's settings are refused for the architectures without them.
    fn config(&self) -> Result<TrainConfig> {
        let arch = self.arch;
        let settings = match arch.default_settings() {
            ArchSettings::Skd(_) => ArchSettings::Skd(SkdSettings {
                amp: self.amp,
                ablation: self.ablate,
                init: self.init.clone(),
                magnet: self.magnet.clone().map(|p| (p, self.magnet_mode)),
            }),
            none => {
                if self.init.is_some() || self.magnet.is_some() {
                    bail!("--init and --magnet start SKD-TSTSAN's layers; {arch} trains from its own initialisation");
                }
                if !self.ablate.is_empty() {
                    bail!("--ablate switches off SKD-TSTSAN components; {arch} has none of them");
                }
                none
            }
        };
        Ok(TrainConfig {
            arch,
            protocol: self.protocol,
            iters: self.iters,
            batch: self.batch,
            seed: self.seed,
            optimizer: AdamConfig {
                lr: self.lr,
                weight_decay: self.weight_decay,
                beta2: self.adam_beta2,
                cosine: self.lr_final.map(|final_lr| Cosine { final_lr, steps: self.iters }),
                ..AdamConfig::default()
            },
            loss: LossConfig { alpha: self.alpha, beta: self.beta, temperature: self.temperature, tau: self.tau, ..LossConfig::default() },
            val_subjects: self.val_subjects,
            checkpoint_every: self.checkpoint_every,
            settings,
        })
    }
}

/// `--input`: the layout names, listed in `--help`.
fn input_layout() -> impl clap::builder::TypedValueParser<Value = InputLayout> {
    use clap::builder::TypedValueParser;
    let names = InputLayout::NAMES.map(|(name, _)| name);
    clap::builder::PossibleValuesParser::new(names).map(|name| name.parse::<InputLayout>().expect("one of the names"))
}

/// A count argument from 1 to `max`: 0 is refused rather than read as "all" or "none".
fn count(max: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..=max)
}

/// Whether two output paths name one file (by folder and name: neither need exist yet).
fn same_file(a: &Path, b: &Path) -> bool {
    let key = |p: &Path| {
        let folder = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Some(folder.canonicalize().ok()?.join(p.file_name()?))
    };
    key(a).is_some() && key(a) == key(b)
}

fn seconds(value: f64) -> Result<std::time::Duration> {
    if !(value > 0.0 && value < 1e6) {
        bail!("--timeout-s must be a positive number of seconds, got {value}");
    }
    Ok(std::time::Duration::from_secs_f64(value))
}

/// Prints one line per device; fails when any device failed, after printing them all.
fn report_outcomes(outcomes: &[fleet::Outcome<mer_shared::push::DeviceStatus>], done: &str) -> Result<()> {
    for outcome in outcomes {
        println!("{}", fleet::describe_outcome(outcome));
    }
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    if failed > 0 {
        bail!("{failed} of {} devices were not {done}", outcomes.len());
    }
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

/// Which devices a fleet command talks to.
#[derive(clap::Args)]
struct Targets {
    /// Device addresses, host or host:port (default port 7878), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    to: Vec<String>,
    /// Seconds to wait for any one reply before giving up on a device.
    #[arg(long, default_value_t = 30.0)]
    timeout_s: f64,
}

#[derive(Subcommand)]
enum Keys {
    /// Make a new ed25519 key pair: KEY (secret, mode 0600) and KEY.pub.
    Generate {
        #[arg(short, long)]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct BundleArgs {
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

#[derive(Subcommand)]
enum Synth {
    /// A dataset in CASME II's native layout (frames + coding sheet).
    Casme2 {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 8, value_parser = count(1000))]
        subjects: usize,
        #[arg(long, default_value_t = 5, value_parser = count(1000))]
        per_subject: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write the true onset→apex and apex→offset flows (.flo) per sample.
        #[arg(long)]
        with_flow: bool,
    },
    /// Measure how learnable a synthetic CASME II set is (LOSO nearest-centroid probe on flow).
    Check {
        #[arg(long, default_value = "out/synth-check")]
        out: PathBuf,
        #[arg(long, default_value_t = 8, value_parser = count(1000))]
        subjects: usize,
        #[arg(long, default_value_t = 10, value_parser = count(1000))]
        per_subject: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Interview clips made from real face photographs (one per photo, people in turn), with
    /// micro-expressions, blinks, head motion, changing light and noise at known times: each
    /// clip a folder of frames + truth.json, read by `--dataset interview`.
    Faces {
        /// Folder of tight face crops, e.g. ../shared/data/faces-casme2 (person = file name up to the first '_').
        #[arg(long)]
        photos: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 24, value_parser = count(10_000))]
        clips: usize,
        #[arg(long, default_value_t = 12.0)]
        seconds: f32,
        #[arg(long, default_value_t = 100.0)]
        fps: f32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// A long interview clip with micro-expressions at known times (frames + truth.json).
    Interview {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 20.0)]
        seconds: f32,
        #[arg(long, default_value_t = 60.0)]
        fps: f32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { out, seed } => {
            let report = demo::run_demo(&out, seed)?;
            println!("synthetic CASME II data: {}", report.dataset.display());
            println!("{:<22} {:<11} {:>10} {:>12}", "sample", "emotion", "peak (px)", "TV-L1 EPE");
            for s in &report.samples {
                println!("{:<22} {:<11} {:>10.2} {:>12.3}", s.id, s.emotion, s.true_peak_px, s.tvl1_epe_px);
            }
            println!("flow pictures (onset | apex | 10x difference | true flow | TV-L1 flow | strain): {}", out.join("flows").display());
            println!("model input (38 channels, 48x48): {}", report.input_picture.display());
        }
        Command::Synth(Synth::Casme2 { out, subjects, per_subject, seed, with_flow }) => {
            let opts = Casme2Options { subjects, per_subject, seed, with_flow, ..Casme2Options::default() };
            let pb = bar((subjects * per_subject) as u64, "samples");
            let samples = write_casme2(&out, &opts, &|| pb.inc(1))?;
            pb.finish();
            println!("wrote {} samples of {subjects} subjects to {}", samples.len(), out.display());
        }
        Command::Synth(Synth::Check { out, subjects, per_subject, seed }) => {
            let opts = Casme2Options { subjects, per_subject, seed, ..Casme2Options::default() };
            let report = mer_host::learnability::probe(&out, &opts)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Synth(Synth::Interview { out, seconds, fps, seed }) => {
            let opts = InterviewOptions { seconds, fps, seed, ..InterviewOptions::default() };
            let pb = bar((seconds * fps).round() as u64, "frames");
            let truth = write_interview(&out, &opts, &|| pb.inc(1))?;
            pb.finish();
            println!(
                "wrote {} frames with {} micro-expressions and {} blinks to {}",
                truth.frames,
                truth.events.len(),
                truth.blinks.len(),
                out.display()
            );
        }
        Command::Synth(Synth::Faces { photos, out, clips, seconds, fps, seed }) => {
            let opts = PhotoClipOptions { seconds, fps, seed, ..PhotoClipOptions::default() };
            let pb = bar(clips as u64 * (seconds * fps).round() as u64, "frames");
            let set = write_photo_clips(&photos, &out, clips, &opts, &|| pb.inc(1))?;
            pb.finish();
            let events: usize = set.clips.iter().map(|c| c.clip.events.len()).sum();
            println!("wrote {} clips of {} people with {events} micro-expressions to {}", set.clips.len(), set.people, out.display());
        }
        Command::Flow { from, to, out, threads, png } => {
            // Every argument is checked before the first write, so a bad one leaves the old files or nothing.
            check_target(&out)?;
            if let Some(png) = &png {
                check_target(png)?;
                if same_file(png, &out) {
                    bail!("--png and -o name the same file {}; give them different paths", out.display());
                }
            }
            let (a, b) = (load_gray(&from)?, load_gray(&to)?);
            let flow = tvl1_flow(&a, &b, &Tvl1Params::default(), threads)
                .with_context(|| format!("flow from {} to {}", from.display(), to.display()))?;
            // Both files are complete under their temporary names before either is renamed into place.
            let mut files = vec![(AtomicFile::create(&out)?, encode_flo(&flow))];
            if let Some(png) = &png {
                files.push((AtomicFile::create(png)?, colour_png(&flow, None, png)?));
            }
            for (file, bytes) in &mut files {
                file.write_all(bytes).map_err(|e| mer_shared::Error::io(file.target(), e))?;
            }
            for (file, _) in files {
                file.commit()?;
            }
            println!("wrote {}", out.display());
        }
        Command::FlowImage { flo, out, max } => {
            check_target(&out)?;
            save_colour_png(&read_flo(&flo)?, max, &out)?;
            println!("wrote {}", out.display());
        }
        Command::BenchFlow { pairs, dir, seed } => {
            let r = flow_bench::run(&dir, pairs, seed)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        Command::Prepare { dataset, root, annotations, classes, crop, input, arch, out, threads, allow_failed } => {
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
        }
        Command::SpotEval { dataset, root, annotations, config, out, threads, model, public_keys } => {
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
        }
        Command::Train(args) => {
            let device = resolve_device(args.device)?;
            let config = args.config()?;
            config.validate()?;
            let data = TrainData::load_for(config.arch, args.dataset, &args.data)?;
            if args.all_samples {
                if args.fold.is_some() {
                    bail!("--all-samples trains one model; it has no folds to shard");
                }
                let model = train_all(&data, &config, &args.out, device)?;
                println!("wrote {}", model.display());
            } else {
                let results = train_loso(&data, &config, args.fold, &args.out, device)?;
                println!("{}", results.headline());
                println!("{}", results.protocol_note);
                println!("wrote {}", args.out.join("results.json").display());
            }
        }
        Command::Report { runs, out } => {
            let out = match out {
                Some(o) => o,
                None if runs.len() == 1 => runs[0].clone(),
                None => bail!("several runs are merged into a new directory: give --out"),
            };
            let results = summarise(&runs, &out)?;
            println!("{}", results.headline());
            println!("{}", results.protocol_note);
            println!("wrote {}", out.join("results.json").display());
        }
        Command::ImportPytorch { arch, classes, state_dict, out } => {
            if arch != SKD_TSTSAN {
                bail!("import-pytorch knows skd-tstsan; got {arch}");
            }
            let report = import_skd_tstsan(&state_dict, classes, &out)?;
            if report.stripped_prefix {
                println!("removed the DataParallel prefix `module.` from every key");
            }
            println!("{}", report.describe());
            println!("wrote {} (deploy it with `mer export {} --classes TAXONOMY -o MODEL.onnx`)", out.display(), out.display());
        }
        Command::BenchTrain { arch, weight_decay, batch, iters, warmup, device } => {
            let device = resolve_device(device)?;
            let mut config = TrainConfig { batch, ..TrainConfig::new(arch) };
            config.optimizer.weight_decay = weight_decay;
            config.validate()?;
            let r = mer_host::train::bench::measure(device, &config, iters, warmup)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        Command::Export { checkpoint, out, classes, input, data, evaluation, model_version, probe_seed } => {
            let opts = ExportOptions { checkpoint, out: out.clone(), data, evaluation, version: model_version, probe_seed, classes, input };
            let exported = export_to_file(&opts)?;
            let m = &exported.manifest;
            println!(
                "{} version {}: {} classes ({}), input {:?}",
                m.architecture,
                m.version,
                m.classes.len(),
                m.classes.join(", "),
                m.input_shape()
            );
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
        }
        Command::Keys(Keys::Generate { out }) => {
            let key = SecretKey::generate()?;
            let public = out.with_file_name(format!("{}.pub", out.file_name().and_then(|n| n.to_str()).unwrap_or("key")));
            check_target(&public)?;
            write_secret_key(&out, &key)?;
            write_public_key(&public, &key.public())?;
            println!("key {}: secret {} (keep it private), public {}", key.public().key_id(), out.display(), public.display());
        }
        Command::Bundle(BundleArgs { action: Some(BundleAction::Verify { bundle, public_keys, manifest }), .. }) => {
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
            println!("model: {} version {}, classes {}", m.architecture, m.version, m.classes.join(", "));
            println!("input: {:?} {:?}, preprocessing version {}", m.input.layout, m.input_shape(), m.preprocessing_version);
            println!("probe: max |logit difference| {:.2e} in tract", classifier.probe_agreement().max_abs_diff);
            println!("OK");
        }
        Command::Bundle(BundleArgs { model, key, out, .. }) => {
            let (model, key, out) = (model.expect("required"), key.expect("required"), out.expect("required"));
            check_target(&out)?;
            let onnx = std::fs::read(&model).with_context(|| format!("reading {}", model.display()))?;
            // Only a model that loads, carries a manifest and passes its probe is worth signing.
            let classifier = Classifier::from_onnx(&onnx).with_context(|| format!("{} cannot be bundled", model.display()))?;
            let secret = read_secret_key(&key)?;
            let bundle = Bundle::sign(classifier.manifest().to_json(), onnx, &secret);
            mer_shared::atomic_file::write(&out, &bundle.to_bytes())?;
            println!(
                "signed {} version {} with key {}",
                classifier.manifest().architecture,
                classifier.manifest().version,
                secret.public().key_id()
            );
            println!("wrote {}", out.display());
        }
        Command::Push { bundle, devices: Targets { to, timeout_s }, key } => {
            let bytes = std::fs::read(&bundle).with_context(|| format!("reading {}", bundle.display()))?;
            let outcomes = fleet::push_all(&to, &bytes, &read_secret_key(&key)?, seconds(timeout_s)?)
                .with_context(|| format!("{} is not a bundle that can be pushed", bundle.display()))?;
            report_outcomes(&outcomes, "pushed")?;
        }
        Command::Rollback { devices: Targets { to, timeout_s }, key } => {
            let outcomes = fleet::rollback_all(&to, &read_secret_key(&key)?, seconds(timeout_s)?);
            report_outcomes(&outcomes, "rolled back")?;
        }
        Command::Devices { devices: Targets { to, timeout_s }, json } => {
            let outcomes = fleet::status_all(&to, seconds(timeout_s)?);
            for outcome in &outcomes {
                if json {
                    let value = match &outcome.result {
                        Ok(status) => serde_json::json!({ "address": outcome.address, "status": status }),
                        Err(e) => serde_json::json!({ "address": outcome.address, "error": e.to_string() }),
                    };
                    println!("{value}");
                } else {
                    println!("{}", fleet::describe_status(outcome));
                }
            }
            let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
            if failed > 0 {
                bail!("{failed} of {} devices did not answer", outcomes.len());
            }
        }
        Command::Infer { model, input, public_keys, threads } => {
            end_quietly_when_stdout_closes();
            let (result, origin) = classify_file(&model, &input, &public_keys, threads)?;
            if let Origin::Bundle { signer, trusted: false } = origin {
                eprintln!("note: bundle signed by key {signer}; pass --pub KEY.pub to require a trusted signer");
            }
            println!("{}", serde_json::to_string(&result)?);
        }
        Command::BenchInfer { model, batches, threads, iters, warmup, profile } => {
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
        }
        Command::Info => {
            let info = torch_info::torch_info();
            println!("{}", serde_json::to_string_pretty(&info)?);
            println!("libtorch smoke test on {}: {}", info.device, torch_info::smoke_test()?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks (duplicate names, groups, defaults), which otherwise only
    /// fire when the faulty subcommand is run.
    #[test]
    fn the_command_line_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
