//! A leave-one-subject-out run (or one shard of it): every selected subject's fold, then the
//! report. Re-running the same command resumes: finished folds are kept, an interrupted fold
//! continues from its last checkpoint.

use std::fs;
use std::path::{Path, PathBuf};
use tracing::info;

use anyhow::{Context, Result, bail};
use tch::Device;

use super::checkpoint::write_json_atomic;
use super::config::{Shard, TrainConfig};
use super::data::TrainData;
use super::fold::{Fold, FoldResult, score};
use super::record::{RunInfo, fold_dir};
use super::report::{RunResults, summarise};
use crate::progress::bar;

/// Where libtorch trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// CUDA when a GPU is usable, else the CPU.
    Auto,
    Cpu,
    Cuda,
}

pub fn resolve_device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Auto => Ok(Device::cuda_if_available()),
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        DeviceChoice::Cuda => {
            bail!("--device cuda: libtorch sees no usable CUDA GPU here (try --device auto or cpu; `mer info` shows what libtorch finds)")
        }
    }
}

fn prepare_run_dir(out: &Path, info: &RunInfo) -> Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    if out.join("run.json").exists() {
        let existing = RunInfo::read(out)?;
        if let Some(why) = existing.mismatch(info).or_else(|| (existing.shards != info.shards).then(|| "the shards differ".into())) {
            bail!("{} already holds another run ({why}); choose another --out, or delete it to start over", out.display());
        }
    } else {
        write_json_atomic(&out.join("run.json"), info)?;
    }
    Ok(())
}

/// Trains and evaluates the folds of `shard` (all folds when `None`) and writes the report.
pub fn train_loso(data: &TrainData, config: &TrainConfig, shard: Option<Shard>, out: &Path, device: Device) -> Result<RunResults> {
    config.validate()?;
    let subjects = data.subjects();
    if subjects.len() < 2 {
        bail!("leave-one-subject-out needs at least 2 subjects; the data have {}", subjects.len());
    }
    let info = RunInfo {
        config: config.clone(),
        data: data.source.clone(),
        classes: data.classes.clone(),
        subjects: subjects.clone(),
        samples: data.len(),
        shards: shard.into_iter().collect(),
        ensemble: Vec::new(),
    };
    prepare_run_dir(out, &info)?;
    announce_initialisation(config, data.num_classes())?;
    let mine = match shard {
        Some(s) => s.select(&subjects),
        None => subjects.clone(),
    };
    if mine.is_empty() {
        bail!(
            "shard {} of {} subjects is empty; use at most {} shards",
            shard.map(|s| s.to_string()).unwrap_or_default(),
            subjects.len(),
            subjects.len()
        );
    }
    info!(
        "training {} on {} samples, {} classes; {} folds here ({} protocol, {} iterations each, device {:?})",
        config.arch,
        data.len(),
        data.num_classes(),
        mine.len(),
        config.protocol,
        config.iters,
        device
    );
    let progress = bar((mine.len() * config.iters) as u64, "training");
    for subject in &mine {
        let fold = Fold { data, config, device, subject: subject.clone(), holdout: true, dir: fold_dir(out, subject) };
        let result = fold.run(&progress)?;
        let line = fold_line(&result, data.num_classes());
        // A hidden bar (output not a terminal, e.g. a cluster log) swallows println.
        if progress.is_hidden() { eprintln!("{line}") } else { progress.println(line) }
    }
    progress.finish_and_clear();
    summarise(&[out.to_path_buf()], out)
}

/// Trains one model on every sample (e.g. CK+ pre-training) and writes `RUN/model.safetensors`.
pub fn train_all(data: &TrainData, config: &TrainConfig, out: &Path, device: Device) -> Result<PathBuf> {
    config.validate()?;
    if config.val_subjects > 0 || config.protocol != super::config::Protocol::Honest {
        bail!("training on all samples has no held-out subject: use the honest protocol without --val-subjects");
    }
    let info = RunInfo {
        config: config.clone(),
        data: data.source.clone(),
        classes: data.classes.clone(),
        subjects: data.subjects(),
        samples: data.len(),
        shards: Vec::new(),
        ensemble: Vec::new(),
    };
    prepare_run_dir(out, &info)?;
    announce_initialisation(config, data.num_classes())?;
    let progress = bar(config.iters as u64, "training");
    let fold = Fold { data, config, device, subject: "all".into(), holdout: false, dir: out.join("all") };
    fold.run(&progress)?;
    progress.finish_and_clear();
    let model = out.join("model.safetensors");
    mer_shared::atomic_file::copy(out.join("all").join("model.safetensors"), &model)
        .with_context(|| format!("writing {}", model.display()))?;
    Ok(model)
}

/// Says once, before any fold runs, where the starting weights come from (and fails early when
/// they cannot be used).
fn announce_initialisation(config: &TrainConfig, classes: usize) -> Result<()> {
    let Some(skd) = config.skd() else { return Ok(()) };
    if let Some(init) = &skd.init {
        info!("every fold starts from {} (classifier layers re-initialised)", init.display());
    } else if let Some((path, mode)) = &skd.magnet {
        let mut vs = tch::nn::VarStore::new(Device::Cpu);
        let _model = config.arch.build(&vs.root(), classes as i64, &config.settings);
        let report = crate::import::magnet::apply(&mut vs, path, *mode)?;
        info!("{} from {}", report.summary(), path.display());
    }
    Ok(())
}

fn fold_line(r: &FoldResult, classes: usize) -> String {
    let s = score(&r.predictions, classes);
    let correct = r.predictions.iter().filter(|p| p.truth == p.predicted).count();
    format!(
        "{:>10}: {correct}/{} correct, accuracy {:.3} ({} epoch {}, {:.0} s)",
        r.subject, r.test_samples, s.accuracy, r.selection, r.selected_epoch, r.seconds
    )
}
