//! Ensembles of LOSO runs: for each test subject, the held-out probabilities of every member
//! run's fold are averaged, so an ensemble is scored by the same protocol as its members and no
//! member ever saw the subject it is scored on. The directory written is a run directory in its
//! own right (`run.json` naming the members, `folds/SUBJECT/fold.json`): `mer report` recomputes
//! it, `mer export --evaluation` describes an exported ensemble by it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::checkpoint::write_json_atomic;
use super::config::{Protocol, TrainConfig};
use super::fold::{FoldResult, Prediction};
use super::record::{RunInfo, fold_dir};
use super::report::{RunResults, read_folds, summarise};

/// One run of an ensemble, as `run.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The member's run directory, as given.
    pub run: String,
    /// The member's training configuration.
    pub config: TrainConfig,
}

/// Scores the ensemble of the complete honest LOSO runs `runs` into the run directory `out`.
pub fn combine(runs: &[PathBuf], out: &Path) -> Result<RunResults> {
    if runs.len() < 2 {
        bail!("an ensemble needs at least two runs; got {}", runs.len());
    }
    let mut members = Vec::with_capacity(runs.len());
    let mut folds_of_members = Vec::with_capacity(runs.len());
    let first = RunInfo::read(&runs[0])?;
    for run in runs {
        let info = RunInfo::read(run)?;
        if info.config.protocol != Protocol::Honest {
            bail!(
                "{} is a {} protocol run: an ensemble is scored honestly, from runs whose folds never looked at their test subject",
                run.display(),
                info.config.protocol
            );
        }
        if !info.ensemble.is_empty() {
            bail!("{} is itself an ensemble: give its member runs", run.display());
        }
        if info.classes != first.classes || info.subjects != first.subjects || info.samples != first.samples {
            bail!(
                "{} and {} are not runs on the same data: classes [{}] vs [{}], {} vs {} subjects, {} vs {} samples",
                runs[0].display(),
                run.display(),
                first.classes.join(", "),
                info.classes.join(", "),
                first.subjects.len(),
                info.subjects.len(),
                first.samples,
                info.samples
            );
        }
        let folds = read_folds(std::slice::from_ref(run), &info)?;
        let missing: Vec<&str> = info.subjects.iter().filter(|s| !folds.contains_key(*s)).map(String::as_str).collect();
        if !missing.is_empty() {
            bail!(
                "{} is not complete: no fold for {} (finish it, or merge its shards with `mer report`)",
                run.display(),
                missing.join(", ")
            );
        }
        members.push(Member { run: run.display().to_string(), config: info.config.clone() });
        folds_of_members.push(folds.into_iter().map(|(subject, (fold, _))| (subject, fold)).collect::<BTreeMap<_, _>>());
    }

    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for subject in &first.subjects {
        let folds: Vec<&FoldResult> = folds_of_members.iter().map(|m| &m[subject]).collect();
        let fold = mean_fold(&folds, runs)?;
        let dir = fold_dir(out, subject);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write_json_atomic(&dir.join("fold.json"), &fold)?;
    }
    // The first member's record stands for the data; the members say what was combined.
    let info = RunInfo { shards: vec![], ensemble: members, ..first };
    write_json_atomic(&out.join("run.json"), &info)?;
    summarise(&[out.to_path_buf()], out)
}

/// One subject's fold of the ensemble: each sample's probabilities averaged over the members.
fn mean_fold(folds: &[&FoldResult], runs: &[PathBuf]) -> Result<FoldResult> {
    let first = folds[0];
    let mut sums: Vec<(String, usize, Vec<f64>)> =
        first.predictions.iter().map(|p| (p.id.clone(), p.truth, vec![0.0; p.probabilities.len()])).collect();
    for (fold, run) in folds.iter().zip(runs) {
        let by_id: BTreeMap<&str, &Prediction> = fold.predictions.iter().map(|p| (p.id.as_str(), p)).collect();
        if by_id.len() != sums.len() {
            bail!(
                "{}: fold {} holds {} test samples, {} holds {}",
                run.display(),
                fold.subject,
                by_id.len(),
                runs[0].display(),
                sums.len()
            );
        }
        for (id, truth, sum) in &mut sums {
            let Some(p) = by_id.get(id.as_str()) else {
                bail!("{}: fold {} has no prediction for {id}, which {} has", run.display(), fold.subject, runs[0].display());
            };
            if p.truth != *truth || p.probabilities.len() != sum.len() {
                bail!("{}: {id} is labelled or classified differently than in {}", run.display(), runs[0].display());
            }
            for (s, &q) in sum.iter_mut().zip(&p.probabilities) {
                *s += f64::from(q);
            }
        }
    }
    let n = folds.len() as f64;
    let predictions = sums
        .into_iter()
        .map(|(id, truth, sum)| {
            let probabilities: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
            let predicted = mer_shared::manifest::argmax(&probabilities);
            Prediction { id, truth, predicted, probabilities }
        })
        .collect();
    Ok(FoldResult {
        subject: first.subject.clone(),
        train_samples: first.train_samples,
        test_samples: first.test_samples,
        val_subjects: vec![],
        class_weights: first.class_weights.clone(),
        epochs: first.epochs,
        iterations: first.iterations,
        selection: format!("mean of {} members' probabilities", folds.len()),
        selected_epoch: first.selected_epoch,
        predictions,
        last_predictions: None,
        seconds: folds.iter().map(|f| f.seconds).sum(),
        device: String::new(),
    })
}
