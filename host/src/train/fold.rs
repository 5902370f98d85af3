//! One leave-one-subject-out fold: train on every other subject, pick the reported model by the
//! run's protocol, predict the held-out subject. Resumable from epoch-boundary checkpoints, and
//! seeded from (run seed, subject) so a fold gives the same result alone, in a shard, or in a
//! full run.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::ProgressBar;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn};
use tracing::info;

use super::checkpoint::{self, Snapshot, write_json_atomic};
use super::config::{Protocol, TrainConfig};
use super::data::TrainData;
use super::losses::{LossTerms, Targets, class_weights};
use super::optimizer::Adam;
use crate::metrics::{Confusion, Scores};
use crate::model::Network;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub id: String,
    pub truth: usize,
    pub predicted: usize,
    pub probabilities: Vec<f32>,
}

/// What a finished fold reports (`folds/<subject>/fold.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldResult {
    pub subject: String,
    pub train_samples: usize,
    pub test_samples: usize,
    pub val_subjects: Vec<String>,
    pub class_weights: Vec<f64>,
    pub epochs: usize,
    pub iterations: usize,
    /// "last" (fixed budget), "validation" (best validation UF1) or "test" (paper protocol).
    pub selection: String,
    pub selected_epoch: usize,
    pub predictions: Vec<Prediction>,
    /// Paper protocol: the last epoch's predictions, which the official code also scores.
    pub last_predictions: Option<Vec<Prediction>>,
    pub seconds: f64,
    /// Where the fold trained ("cpu", "cuda:0"); absent from records made before it was kept.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device: String,
}

/// One line of `folds/<subject>/epochs.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub iteration: usize,
    pub loss: LossTerms,
    pub train_accuracy: f64,
    pub validation: Option<Scores>,
    pub test: Option<Scores>,
}

/// Resume point, saved with the weights and optimiser state at an epoch boundary.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    epochs_done: usize,
    iteration: usize,
    best: Option<Best>,
    seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Best {
    metric: f64,
    epoch: usize,
    predictions: Option<Vec<Prediction>>,
}

/// 64-bit FNV-1a, to derive stable per-fold and per-epoch seeds.
fn mix(seed: u64, text: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in text.bytes().chain(seed.to_le_bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn fold_seed(config: &TrainConfig, subject: &str) -> u64 {
    mix(config.seed, subject)
}

fn epoch_seed(fold: u64, epoch: usize) -> i64 {
    (mix(fold, &format!("epoch {epoch}")) >> 1) as i64
}

pub struct Fold<'a> {
    pub data: &'a TrainData,
    pub config: &'a TrainConfig,
    pub device: Device,
    /// The held-out subject (`holdout`), or a name for a model trained on every sample.
    pub subject: String,
    /// false: train on all samples and predict nothing (pre-training).
    pub holdout: bool,
    pub dir: PathBuf,
}

impl Fold<'_> {
    fn result_path(&self) -> PathBuf {
        self.dir.join("fold.json")
    }

    /// A finished fold's result, if there is one.
    pub fn finished(&self) -> Result<Option<FoldResult>> {
        let path = self.result_path();
        if !path.exists() {
            return Ok(None);
        }
        let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Some(serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?))
    }

    /// Training subjects held out for validation (honest protocol with `val_subjects > 0`).
    fn validation_subjects(&self, seed: u64) -> Vec<String> {
        let mut others: Vec<String> = self.data.subjects().into_iter().filter(|s| !self.holdout || *s != self.subject).collect();
        others.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(seed, "validation")));
        let mut chosen: Vec<String> = others.into_iter().take(self.config.val_subjects).collect();
        chosen.sort();
        chosen
    }

    pub fn run(&self, progress: &ProgressBar) -> Result<FoldResult> {
        if let Some(done) = self.finished()? {
            progress.inc(self.config.iters as u64);
            return Ok(done);
        }
        fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        let config = self.config;
        let seed = fold_seed(config, &self.subject);
        let val_subjects = self.validation_subjects(seed);
        if config.val_subjects > 0 && val_subjects.len() < config.val_subjects {
            bail!("--val-subjects {} leaves no training subject beside the validation ones", config.val_subjects);
        }
        let held_out = |s: &str| self.holdout && s == self.subject;
        let train_idx = self.data.indices(|s| !held_out(s) && !val_subjects.iter().any(|v| v == s));
        let val_idx = self.data.indices(|s| val_subjects.iter().any(|v| v == s));
        let test_idx = self.data.indices(held_out);
        if train_idx.is_empty() || (self.holdout && test_idx.is_empty()) {
            bail!("fold {}: {} training and {} test samples; both must be non-empty", self.subject, train_idx.len(), test_idx.len());
        }
        let train_counts = self.data.class_counts(&train_idx);
        let weights = class_weights(&train_counts);

        tch::manual_seed((seed >> 1) as i64);
        let mut vs = nn::VarStore::new(self.device);
        let model = config.arch.build(&vs.root(), self.data.num_classes() as i64, &config.settings);
        checkpoint::initialise(&mut vs, config)?;
        let mut opt = Adam::new(&vs, config.optimizer);

        let state_path = self.dir.join("state.safetensors");
        let progress_path = self.dir.join("progress.json");
        let log_path = self.dir.join("epochs.jsonl");
        let mut state = Progress { epochs_done: 0, iteration: 0, best: None, seconds: 0.0 };
        if progress_path.exists() && state_path.exists() {
            state = serde_json::from_str(&fs::read_to_string(&progress_path)?)
                .with_context(|| format!("parsing {}", progress_path.display()))?;
            checkpoint::load_training_state(&state_path, &mut vs, &mut opt)?;
            truncate_lines(&log_path, state.epochs_done)?;
            info!("fold {}: resuming from its checkpoint at iteration {} (epoch {})", self.subject, state.iteration, state.epochs_done);
            progress.inc(state.iteration as u64);
        } else if log_path.exists() {
            fs::remove_file(&log_path)?;
        }

        let weight_tensor = Tensor::from_slice(&weights.iter().map(|&w| w as f32).collect::<Vec<_>>()).to_device(self.device);
        let batches_per_epoch = train_idx.len().div_ceil(config.batch);
        let epochs = config.iters / batches_per_epoch + 1;
        let started = Instant::now();
        let seconds_before = state.seconds;
        let mut last_checkpoint = state.iteration;
        let mut last_test: Option<Vec<Prediction>> = None;
        let mut best_weights = self.dir.join("best.safetensors");
        // The best weights so far live in memory; the file is rewritten only with a checkpoint.
        let mut best =
            state.best.as_ref().map(|_| Snapshot::read(&best_weights).context("resuming the fold's best weights")).transpose()?;
        let mut best_unsaved = false;
        for epoch in state.epochs_done..epochs {
            if state.iteration >= config.iters {
                break;
            }
            let es = epoch_seed(seed, epoch);
            tch::manual_seed(es);
            let mut order = train_idx.clone();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(es as u64));
            let mut augmentation = super::augment::epoch_rng(es);
            let (mut sums, mut batches, mut correct) = (LossTerms::default(), 0usize, 0usize);
            for chunk in order.chunks(config.batch) {
                if state.iteration >= config.iters {
                    break;
                }
                let (x, y) = self.data.batch(chunk, self.device);
                let x = config.augment.apply(&x, &mut augmentation);
                let (loss, terms, logits) =
                    model.training_loss(&x, &y, &Targets { weights: &weight_tensor, counts: &train_counts }, &config.loss);
                if !terms.total.is_finite() {
                    bail!(
                        "fold {}: the loss became {} at iteration {}; lower --lr or check the data",
                        self.subject,
                        terms.total,
                        state.iteration + 1
                    );
                }
                opt.zero_grad();
                loss.backward();
                opt.step();
                correct += i64::try_from(logits.argmax(-1, false).eq_tensor(&y).sum(Kind::Int64))? as usize;
                add_terms(&mut sums, &terms);
                batches += 1;
                state.iteration += 1;
                progress.inc(1);
            }
            let mut log = EpochLog {
                epoch: epoch + 1,
                iteration: state.iteration,
                loss: scale_terms(&sums, 1.0 / batches.max(1) as f64),
                train_accuracy: correct as f64 / order.len() as f64,
                validation: None,
                test: None,
            };
            progress.set_message(format!("{} loss {:.3}", self.subject, log.loss.total));
            let mut stop = false;
            match config.protocol {
                Protocol::Paper => {
                    let preds = predict(&*model, self.data, &test_idx, self.device);
                    let scores = score(&preds, self.data.num_classes());
                    // `<=` as the official code: later epochs win ties.
                    if state.best.as_ref().is_none_or(|b| b.metric <= scores.accuracy) {
                        state.best = Some(Best { metric: scores.accuracy, epoch: epoch + 1, predictions: Some(preds.clone()) });
                        (best, best_unsaved) = (Some(Snapshot::of(&vs)), true);
                    }
                    stop = scores.accuracy >= 1.0;
                    log.test = Some(scores);
                    last_test = Some(preds);
                }
                Protocol::Honest if !val_idx.is_empty() => {
                    let scores = score(&predict(&*model, self.data, &val_idx, self.device), self.data.num_classes());
                    if state.best.as_ref().is_none_or(|b| b.metric <= scores.uf1) {
                        state.best = Some(Best { metric: scores.uf1, epoch: epoch + 1, predictions: None });
                        (best, best_unsaved) = (Some(Snapshot::of(&vs)), true);
                    }
                    log.validation = Some(scores);
                }
                Protocol::Honest => {}
            }
            append_line(&log_path, &serde_json::to_string(&log)?)?;
            state.epochs_done = epoch + 1;
            if stop {
                break;
            }
            if state.iteration - last_checkpoint >= config.checkpoint_every && state.iteration < config.iters {
                checkpoint::save_training_state(&state_path, &vs, &opt)?;
                if let Some(weights) = best.as_ref().filter(|_| best_unsaved) {
                    weights.save(&best_weights)?;
                    best_unsaved = false;
                }
                write_json_atomic(
                    &progress_path,
                    &Progress { seconds: seconds_before + started.elapsed().as_secs_f64(), ..state.clone() },
                )?;
                last_checkpoint = state.iteration;
            }
        }

        let (selection, selected_epoch, predictions, last_predictions) = match (config.protocol, &state.best, &best) {
            (Protocol::Paper, Some(chosen), Some(weights)) => {
                let last = match last_test {
                    Some(p) => p,
                    None => predict(&*model, self.data, &test_idx, self.device),
                };
                weights.restore(&mut vs)?;
                ("test", chosen.epoch, chosen.predictions.clone().expect("paper protocol keeps predictions"), Some(last))
            }
            (Protocol::Honest, Some(chosen), Some(weights)) => {
                weights.restore(&mut vs)?;
                ("validation", chosen.epoch, predict(&*model, self.data, &test_idx, self.device), None)
            }
            _ => {
                best_weights = PathBuf::new();
                ("last", state.epochs_done, predict(&*model, self.data, &test_idx, self.device), None)
            }
        };
        crate::weights::save_weights(&vs, &self.dir.join("model.safetensors"))?;
        let result = FoldResult {
            subject: self.subject.clone(),
            train_samples: train_idx.len(),
            test_samples: test_idx.len(),
            val_subjects,
            class_weights: weights,
            epochs: state.epochs_done,
            iterations: state.iteration,
            selection: selection.into(),
            selected_epoch,
            predictions,
            last_predictions,
            seconds: seconds_before + started.elapsed().as_secs_f64(),
            device: device_name(self.device),
        };
        write_json_atomic(&self.result_path(), &result)?;
        for stale in [state_path, progress_path, best_weights] {
            if stale.is_file() {
                fs::remove_file(&stale).with_context(|| format!("removing {}", stale.display()))?;
            }
        }
        Ok(result)
    }
}

/// Eval-mode predictions of the main classifier for `indices`.
pub fn predict(model: &dyn Network, data: &TrainData, indices: &[usize], device: Device) -> Vec<Prediction> {
    let mut out = Vec::with_capacity(indices.len());
    tch::no_grad(|| {
        for chunk in indices.chunks(64) {
            let (x, _) = data.batch(chunk, device);
            let probs = model.logits_t(&x, false).softmax(-1, Kind::Float).to_device(Device::Cpu);
            let probs: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(probs).expect("2-D float tensor");
            for (&i, p) in chunk.iter().zip(probs) {
                let predicted = p.iter().enumerate().fold(0, |best, (c, v)| if *v > p[best] { c } else { best });
                out.push(Prediction { id: data.ids[i].clone(), truth: data.labels[i] as usize, predicted, probabilities: p });
            }
        }
    });
    out
}

pub fn score(preds: &[Prediction], classes: usize) -> Scores {
    Confusion::from_pairs(classes, preds.iter().map(|p| (p.truth, p.predicted))).scores()
}

fn add_terms(sum: &mut LossTerms, t: &LossTerms) {
    sum.total += t.total;
    sum.focal_main += t.focal_main;
    sum.focal_aux += t.focal_aux;
    sum.distillation += t.distillation;
    sum.feature += t.feature;
}

fn scale_terms(t: &LossTerms, f: f64) -> LossTerms {
    LossTerms {
        total: t.total * f,
        focal_main: t.focal_main * f,
        focal_aux: t.focal_aux * f,
        distillation: t.distillation * f,
        feature: t.feature * f,
    }
}

fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))
}

/// Keeps the first `n` lines (the epochs covered by the checkpoint being resumed).
fn truncate_lines(path: &Path, n: usize) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = fs::read_to_string(path)?;
    let kept: String = text.lines().take(n).map(|l| format!("{l}\n")).collect();
    // Atomic: a crash while rewriting must not lose the epochs being kept.
    mer_shared::atomic_file::write(path, kept.as_bytes()).with_context(|| format!("rewriting {}", path.display()))
}

/// Per-epoch logs of a fold, for curves.
pub fn read_epoch_log(dir: &Path) -> Result<Vec<EpochLog>> {
    let path = dir.join("epochs.jsonl");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines().enumerate().map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{} line {}", path.display(), i + 1))).collect()
}

/// Class counts per subject, for summaries.
pub fn counts_by_subject(data: &TrainData) -> BTreeMap<String, Vec<usize>> {
    let mut out = BTreeMap::new();
    for s in data.subjects() {
        out.insert(s.clone(), data.class_counts(&data.indices(|x| x == s)));
    }
    out
}

/// A device as fold records name it.
fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}
