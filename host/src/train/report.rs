//! Run reports: pooled LOSO metrics from the folds of one or more run directories (shards), the
//! confusion matrix and training curves. A complete set of shards gives exactly the results
//! a single run gives, because both are computed here from the same fold files.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use mer_shared::manifest::describe_architectures;

use super::checkpoint::write_json_atomic;
use super::config::{Protocol, Shard, TrainConfig};
use super::ensemble::Member;
use super::fold::{FoldResult, Prediction, read_epoch_log, score};
use super::record::{RunInfo, fold_dir};
use crate::calibration::{RunCalibration, Scored, reliability_png};
use crate::dataset::samples::DataSource;
use crate::metrics::{Confusion, Scores};
use crate::plots::{Series, confusion_png, curves_png};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    pub class: String,
    pub support: usize,
    pub predicted: usize,
    pub recall: f64,
    pub f1: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldSummary {
    pub subject: String,
    pub test_samples: usize,
    pub correct: usize,
    pub selection: String,
    pub selected_epoch: usize,
    pub epochs: usize,
    pub iterations: usize,
}

/// `RUN/results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    pub protocol: Protocol,
    pub protocol_note: String,
    pub arch: String,
    pub classes: Vec<String>,
    /// Pooled over the folds present.
    pub uf1: f64,
    pub uar: f64,
    pub accuracy: f64,
    pub samples: usize,
    pub confusion: Vec<Vec<usize>>,
    pub per_class: Vec<ClassScore>,
    /// Paper protocol: the last epoch's pooled scores (what the official code computes beside
    /// the test-selected ones).
    pub last_epoch: Option<Scores>,
    pub folds: Vec<FoldSummary>,
    /// All folds of the experiment are present; otherwise `missing` lists the absent subjects.
    pub complete: bool,
    pub missing: Vec<String>,
    pub shards: Vec<Shard>,
    pub config: TrainConfig,
    pub data: DataSource,
    /// Composite data: pooled scores per source dataset (casme2, samm, smic), as HTNet reports
    /// them beside the full set's.
    #[serde(default)]
    pub by_source: BTreeMap<String, Scores>,
    /// Temperature scaling cross-fitted over the folds, with the expected calibration error
    /// before and after (absent with fewer than two folds, or in runs reported before it was).
    #[serde(default)]
    pub calibration: Option<RunCalibration>,
    /// An ensemble's member runs (empty for a trained run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ensemble: Vec<Member>,
}

pub fn per_class(confusion: &Confusion, classes: &[String]) -> Vec<ClassScore> {
    let k = classes.len();
    (0..k)
        .map(|c| {
            let tp = confusion.counts[c][c];
            let support: usize = confusion.counts[c].iter().sum();
            let predicted: usize = (0..k).map(|r| confusion.counts[r][c]).sum();
            let denom = support + predicted;
            ClassScore {
                class: classes[c].clone(),
                support,
                predicted,
                recall: if support == 0 { 0.0 } else { tp as f64 / support as f64 },
                f1: if denom == 0 { 0.0 } else { 2.0 * tp as f64 / denom as f64 },
            }
        })
        .collect()
}

/// Pooled scores per source dataset of composite predictions, whose ids are `<source>/<sub>_<clip>`.
pub fn scores_by_source<'a>(predictions: impl IntoIterator<Item = &'a Prediction>, classes: usize) -> BTreeMap<String, Scores> {
    let mut pairs: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
    for p in predictions {
        if let Some((source, _)) = p.id.split_once('/') {
            pairs.entry(source.to_string()).or_default().push((p.truth, p.predicted));
        }
    }
    pairs.into_iter().map(|(source, pairs)| (source, Confusion::from_pairs(classes, pairs).scores())).collect()
}

fn read_fold(path: &Path) -> Result<FoldResult> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The finished folds of `runs` (shards of the experiment `info`) by subject, each with the run
/// it was found in; a subject found twice is an error.
pub fn read_folds(runs: &[PathBuf], info: &RunInfo) -> Result<BTreeMap<String, (FoldResult, PathBuf)>> {
    let mut folds: BTreeMap<String, (FoldResult, PathBuf)> = BTreeMap::new();
    for run in runs {
        let entries = match fs::read_dir(run.join("folds")) {
            Ok(e) => e,
            Err(_) => continue,
        };
        for entry in entries {
            let fold_path = entry?.path().join("fold.json");
            if !fold_path.exists() {
                continue;
            }
            let fold = read_fold(&fold_path)?;
            if !info.subjects.contains(&fold.subject) {
                bail!("{} is a fold for subject {}, which the data do not have", fold_path.display(), fold.subject);
            }
            if let Some((_, earlier)) = folds.get(&fold.subject) {
                bail!("subject {} has a fold in both {} and {}; give each shard once", fold.subject, earlier.display(), run.display());
            }
            folds.insert(fold.subject.clone(), (fold, run.clone()));
        }
    }
    Ok(folds)
}

/// Merges the folds found in `runs` into `out` and writes `results.json`, `confusion.png`,
/// `loss.png` and (when epochs were scored) `selection.png`.
pub fn summarise(runs: &[PathBuf], out: &Path) -> Result<RunResults> {
    let Some(first) = runs.first() else { bail!("no run directories given") };
    let info = RunInfo::read(first)?;
    let mut shards = Vec::new();
    for run in runs {
        let other = RunInfo::read(run)?;
        if let Some(why) = info.mismatch(&other) {
            bail!("{} and {} are not parts of one experiment: {why}", first.display(), run.display());
        }
        shards.extend(other.shards.iter().copied());
    }
    let folds = read_folds(runs, &info)?;
    shards.sort_by_key(|s| (s.count, s.index));
    shards.dedup();

    // Gather everything into `out` so a merged directory is a run directory in its own right.
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let merged_info = RunInfo { shards: shards.clone(), ..info.clone() };
    if runs.len() > 1 || first.as_path() != out {
        write_json_atomic(&out.join("run.json"), &merged_info)?;
    }
    for (subject, (_, run)) in &folds {
        let (from, to) = (fold_dir(run, subject), fold_dir(out, subject));
        if from != to {
            fs::create_dir_all(&to)?;
            for name in ["fold.json", "epochs.jsonl", "model.safetensors"] {
                if from.join(name).exists() {
                    mer_shared::atomic_file::copy(from.join(name), to.join(name))
                        .with_context(|| format!("copying {} to {}", from.join(name).display(), to.display()))?;
                }
            }
        }
    }

    let k = info.classes.len();
    let pairs = folds.values().flat_map(|(f, _)| f.predictions.iter().map(|p| (p.truth, p.predicted)));
    let confusion = Confusion::from_pairs(k, pairs);
    let scores = confusion.scores();
    let last_epoch = (info.config.protocol == Protocol::Paper).then(|| {
        let last: Vec<_> = folds.values().flat_map(|(f, _)| f.last_predictions.clone().unwrap_or_default()).collect();
        score(&last, k)
    });
    let missing: Vec<String> = info.subjects.iter().filter(|s| !folds.contains_key(*s)).cloned().collect();
    let by_source = if info.data.taxonomy == mer_shared::labels::Taxonomy::CompositeThree.name() {
        scores_by_source(folds.values().flat_map(|(f, _)| &f.predictions), k)
    } else {
        BTreeMap::new()
    };
    let held_out: BTreeMap<String, Vec<Scored>> = folds
        .iter()
        .map(|(subject, (f, _))| {
            (subject.clone(), f.predictions.iter().map(|p| Scored { probabilities: &p.probabilities, truth: p.truth }).collect())
        })
        .collect();
    let calibration = RunCalibration::cross_fitted(&held_out);
    let results = RunResults {
        calibration,
        protocol: info.config.protocol,
        protocol_note: info.config.protocol.note().to_string(),
        arch: arch_name(&info),
        classes: info.classes.clone(),
        uf1: scores.uf1,
        uar: scores.uar,
        accuracy: scores.accuracy,
        samples: scores.samples,
        per_class: per_class(&confusion, &info.classes),
        confusion: confusion.counts.clone(),
        last_epoch,
        folds: folds
            .values()
            .map(|(f, _)| FoldSummary {
                subject: f.subject.clone(),
                test_samples: f.test_samples,
                correct: f.predictions.iter().filter(|p| p.truth == p.predicted).count(),
                selection: f.selection.clone(),
                selected_epoch: f.selected_epoch,
                epochs: f.epochs,
                iterations: f.iterations,
            })
            .collect(),
        complete: missing.is_empty(),
        missing,
        shards,
        config: info.config.clone(),
        data: info.data.clone(),
        by_source,
        ensemble: info.ensemble.clone(),
    };
    write_json_atomic(&out.join("results.json"), &results)?;
    draw(out, &results)?;
    Ok(results)
}

/// The run's architecture; an ensemble's members', e.g. `ensemble of 3 skd-tstsan-flow models`
/// (worded as the manifest of its exported model names it).
fn arch_name(info: &RunInfo) -> String {
    if info.ensemble.is_empty() {
        return info.config.arch.name().to_string();
    }
    format!("ensemble of {}", describe_architectures(info.ensemble.iter().map(|m| m.config.arch.name())))
}

fn draw(out: &Path, results: &RunResults) -> Result<()> {
    let title = format!(
        "{} — {} LOSO, UF1 {:.3}, UAR {:.3}{}",
        results.arch,
        results.protocol,
        results.uf1,
        results.uar,
        if results.complete { String::new() } else { format!(" ({} folds missing)", results.missing.len()) }
    );
    confusion_png(&out.join("confusion.png"), &title, &results.classes, &results.confusion)?;
    if let Some(c) = &results.calibration {
        let title = format!("{} — reliability of the held-out predictions, ECE {:.3} → {:.3}", results.arch, c.ece_before, c.ece_after);
        let after = format!("temperature {:.2} (other folds)", c.temperature);
        reliability_png(&out.join("reliability.png"), &title, &[("softmax as trained", &c.bins_before), (&after, &c.bins_after)])?;
    }
    let mut loss = Vec::new();
    let mut chosen = Vec::new();
    for fold in &results.folds {
        let logs = read_epoch_log(&fold_dir(out, &fold.subject)).unwrap_or_default();
        loss.push(Series { name: fold.subject.clone(), points: logs.iter().map(|l| (l.iteration as f64, l.loss.total)).collect() });
        let metric: Vec<(f64, f64)> = logs.iter().filter_map(|l| l.test.or(l.validation).map(|s| (l.epoch as f64, s.accuracy))).collect();
        if !metric.is_empty() {
            chosen.push(Series { name: fold.subject.clone(), points: metric });
        }
    }
    loss.retain(|s| !s.points.is_empty());
    if !loss.is_empty() {
        curves_png(&out.join("loss.png"), "training loss per fold (epoch means)", "iteration", "loss", &loss)?;
    }
    if !chosen.is_empty() {
        let what = if results.protocol == Protocol::Paper {
            "test-subject accuracy per epoch (paper protocol)"
        } else {
            "validation accuracy per epoch"
        };
        curves_png(&out.join("selection.png"), what, "epoch", "accuracy", &chosen)?;
    }
    Ok(())
}

impl RunResults {
    pub fn headline(&self) -> String {
        let mut line = format!(
            "{} {} LOSO over {} samples{}: UF1 {:.4}, UAR {:.4}, accuracy {:.4}",
            self.arch,
            self.protocol,
            self.samples,
            if self.complete { String::new() } else { format!(" (INCOMPLETE: {} folds missing)", self.missing.len()) },
            self.uf1,
            self.uar,
            self.accuracy
        );
        for m in &self.ensemble {
            line.push_str(&format!("\n  member: {} (seed {}), {}", m.config.arch, m.config.seed, m.run));
        }
        for (source, s) in &self.by_source {
            line.push_str(&format!("\n  {source}: {} samples, UF1 {:.4}, UAR {:.4}, accuracy {:.4}", s.samples, s.uf1, s.uar, s.accuracy));
        }
        match &self.calibration {
            Some(c) => line.push_str(&format!("\n  {}", c.summary())),
            None => line.push_str("\n  calibration: needs the held-out predictions of at least two folds"),
        }
        line
    }
}
