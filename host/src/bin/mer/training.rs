//! `mer train`, `mer report`, `mer import-pytorch`, `mer bench-train` and `mer info`: training
//! with libtorch and what it needs.

use std::path::PathBuf;

use anyhow::{Result, bail};
use mer_host::import::official::import_skd_tstsan;
use mer_host::model::skd_tstsan::{Ablation, MagnetMode, SKD_TSTSAN, SkdSettings};
use mer_host::model::{Arch, ArchSettings};
use mer_host::torch_info;
use mer_host::train::augment::Augment;
use mer_host::train::config::{Protocol, Shard, TrainConfig};
use mer_host::train::data::{DataKind, TrainData};
use mer_host::train::losses::LossConfig;
use mer_host::train::optimizer::{AdamConfig, Cosine};
use mer_host::train::report::summarise;
use mer_host::train::run::{DeviceChoice, resolve_device, train_all, train_loso};

use crate::args::count;

#[derive(clap::Args)]
pub struct TrainArgs {
    #[arg(long, default_value = "skd-tstsan")]
    arch: Arch,
    /// What --data holds (composite: the labels CSV and STSNet_whole_norm_u_v_os/).
    #[arg(long, default_value = "prepared")]
    dataset: DataKind,
    #[arg(long)]
    data: PathBuf,
    /// Composite data: train on the samples of these source datasets only (e.g. casme2), to
    /// test on the others with `mer evaluate --sources samm,smic`.
    #[arg(long, value_delimiter = ',')]
    sources: Vec<String>,
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
    /// Training-time augmentation: flip mirrors flow images left-right with the horizontal flow
    /// negated (flow-strain28 architectures).
    #[arg(long, default_value = "none")]
    augment: Augment,
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
            augment: self.augment,
            settings,
        })
    }
}

pub fn train(args: TrainArgs) -> Result<()> {
    let device = resolve_device(args.device)?;
    let config = args.config()?;
    config.validate()?;
    let mut data = TrainData::load_for(config.arch, args.dataset, &args.data)?;
    if !args.sources.is_empty() {
        data = data.of_sources(&args.sources)?;
    }
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
    Ok(())
}

#[derive(clap::Args)]
pub struct ReportArgs {
    /// Run directories written by `mer train`.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Where the merged run goes (default: the single run given).
    #[arg(short, long)]
    out: Option<PathBuf>,
}

pub fn report(ReportArgs { runs, out }: ReportArgs) -> Result<()> {
    mer_shared::stdout::end_quietly_when_stdout_closes();
    let out = match out {
        Some(o) => o,
        None if runs.len() == 1 => runs[0].clone(),
        None => bail!("several runs are merged into a new directory: give --out"),
    };
    let results = summarise(&runs, &out)?;
    println!("{}", results.headline());
    println!("{}", results.protocol_note);
    println!("wrote {}", out.join("results.json").display());
    Ok(())
}

#[derive(clap::Args)]
pub struct EnsembleArgs {
    /// Complete honest LOSO runs on the same data (`mer report` merges a run's shards first).
    #[arg(required = true, num_args = 2..)]
    runs: Vec<PathBuf>,
    /// The ensemble's run directory (its folds hold the averaged predictions).
    #[arg(short, long)]
    out: PathBuf,
}

pub fn ensemble(EnsembleArgs { runs, out }: EnsembleArgs) -> Result<()> {
    mer_shared::stdout::end_quietly_when_stdout_closes();
    let results = mer_host::train::ensemble::combine(&runs, &out)?;
    println!("{}", results.headline());
    println!("{}", results.protocol_note);
    println!("wrote {}", out.join("results.json").display());
    Ok(())
}

#[derive(clap::Args)]
pub struct ImportArgs {
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
}

pub fn import_pytorch(ImportArgs { arch, classes, state_dict, out }: ImportArgs) -> Result<()> {
    if arch != SKD_TSTSAN {
        bail!("import-pytorch knows skd-tstsan; got {arch}");
    }
    let report = import_skd_tstsan(&state_dict, classes, &out)?;
    if report.stripped_prefix {
        println!("removed the DataParallel prefix `module.` from every key");
    }
    println!("{}", report.describe());
    println!("wrote {} (deploy it with `mer export {} --classes TAXONOMY -o MODEL.onnx`)", out.display(), out.display());
    Ok(())
}

#[derive(clap::Args)]
pub struct BenchTrainArgs {
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
}

pub fn bench_train(BenchTrainArgs { arch, weight_decay, batch, iters, warmup, device }: BenchTrainArgs) -> Result<()> {
    let device = resolve_device(device)?;
    let mut config = TrainConfig { batch, ..TrainConfig::new(arch) };
    config.optimizer.weight_decay = weight_decay;
    config.validate()?;
    let r = mer_host::train::bench::measure(device, &config, iters, warmup)?;
    println!("{}", serde_json::to_string_pretty(&r)?);
    Ok(())
}

pub fn info() -> Result<()> {
    let info = torch_info::torch_info();
    println!("{}", serde_json::to_string_pretty(&info)?);
    println!("libtorch smoke test on {}: {}", info.device, torch_info::smoke_test()?);
    Ok(())
}
