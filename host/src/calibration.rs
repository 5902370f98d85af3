//! Whether a model's probabilities mean what they say, and making them: temperature scaling
//! (one number dividing the logits, fitted by minimising the negative log-likelihood of held-out
//! predictions; Guo et al. 2017), the expected calibration error over equal-width confidence
//! bins, and the reliability curve behind it.
//!
//! Everything works from stored class probabilities: softmax(ln p / T) equals softmax(z / T) for
//! the logits z that gave p, since the two differ by a constant per row.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::plots::{Series, curves_png};

/// Bins of the expected calibration error (the usual 15).
pub const ECE_BINS: usize = 15;
/// Labels below this calibrated probability are called uncertain unless told otherwise: the
/// model gives its label less than even odds.
pub const DEFAULT_UNCERTAIN_BELOW: f64 = 0.5;
/// The temperatures searched: from much sharper to much flatter than the model's own softmax.
const TEMPERATURES: (f64, f64) = (0.05, 20.0);

/// One held-out prediction: class probabilities and the true class.
#[derive(Debug, Clone, Copy)]
pub struct Scored<'a> {
    pub probabilities: &'a [f32],
    pub truth: usize,
}

fn log_probabilities(p: &[f32]) -> Vec<f64> {
    // A probability rounded to 0 in f32 still ranks below the others.
    p.iter().map(|&v| f64::from(v.max(f32::MIN_POSITIVE)).ln()).collect()
}

/// softmax(ln p / temperature) in f64.
fn rescaled(p: &[f32], temperature: f64) -> Vec<f64> {
    let scaled: Vec<f64> = log_probabilities(p).iter().map(|l| l / temperature).collect();
    let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = scaled.iter().map(|v| (v - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// `p` as a model with this temperature would have given it.
pub fn rescale(p: &[f32], temperature: f64) -> Vec<f32> {
    rescaled(p, temperature).into_iter().map(|v| v as f32).collect()
}

/// Mean negative log-likelihood of the true classes at `temperature`.
pub fn nll(rows: &[Scored], temperature: f64) -> f64 {
    if rows.is_empty() {
        return 0.0;
    }
    let total: f64 = rows
        .iter()
        .map(|r| {
            let scaled: Vec<f64> = log_probabilities(r.probabilities).iter().map(|l| l / temperature).collect();
            let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let log_sum = max + scaled.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            log_sum - scaled[r.truth]
        })
        .sum();
    total / rows.len() as f64
}

/// The temperature minimising [`nll`] on `rows` (1 when there are none). The likelihood is
/// convex in 1/T, so a golden-section search over 1/T finds its minimum.
pub fn fit_temperature(rows: &[Scored]) -> f64 {
    if rows.is_empty() {
        return 1.0;
    }
    let cost = |inverse: f64| nll(rows, 1.0 / inverse);
    let golden = (5f64.sqrt() - 1.0) / 2.0;
    let (mut lo, mut hi) = (1.0 / TEMPERATURES.1, 1.0 / TEMPERATURES.0);
    let (mut a, mut b) = (hi - golden * (hi - lo), lo + golden * (hi - lo));
    let (mut fa, mut fb) = (cost(a), cost(b));
    while hi - lo > 1e-6 {
        if fa <= fb {
            (hi, b, fb) = (b, a, fa);
            a = hi - golden * (hi - lo);
            fa = cost(a);
        } else {
            (lo, a, fa) = (a, b, fb);
            b = lo + golden * (hi - lo);
            fb = cost(b);
        }
    }
    2.0 / (lo + hi)
}

/// One confidence bin of the reliability curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    pub lo: f64,
    pub hi: f64,
    pub count: usize,
    /// Mean highest probability and the share right, over the bin's predictions.
    pub confidence: f64,
    pub accuracy: f64,
}

/// The predictions sorted into [`ECE_BINS`] equal-width bins of their highest probability.
pub fn reliability(rows: &[Scored]) -> Vec<Bin> {
    let mut bins: Vec<Bin> = (0..ECE_BINS)
        .map(|i| Bin { lo: i as f64 / ECE_BINS as f64, hi: (i + 1) as f64 / ECE_BINS as f64, count: 0, confidence: 0.0, accuracy: 0.0 })
        .collect();
    for r in rows {
        let best = mer_shared::manifest::argmax(r.probabilities);
        let confidence = f64::from(r.probabilities[best]);
        // Bins are (lo, hi]; a confidence of exactly 0 goes to the first.
        let i = ((confidence * ECE_BINS as f64).ceil() as usize).clamp(1, ECE_BINS) - 1;
        bins[i].count += 1;
        bins[i].confidence += confidence;
        bins[i].accuracy += f64::from(u8::from(best == r.truth));
    }
    for b in bins.iter_mut().filter(|b| b.count > 0) {
        b.confidence /= b.count as f64;
        b.accuracy /= b.count as f64;
    }
    bins
}

/// Expected calibration error: the mean over bins, weighted by their share of the predictions,
/// of |accuracy − confidence|.
pub fn ece(rows: &[Scored]) -> f64 {
    if rows.is_empty() {
        return 0.0;
    }
    reliability(rows).iter().map(|b| b.count as f64 * (b.accuracy - b.confidence).abs()).sum::<f64>() / rows.len() as f64
}

/// What abstaining below a threshold does to held-out predictions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Abstention {
    pub uncertain_below: f64,
    /// Predictions labelled with a class (not uncertain).
    pub labelled: usize,
    pub uncertain: usize,
    /// Share of the labelled ones that are right.
    pub accuracy_when_labelled: f64,
}

impl Abstention {
    pub fn measure(rows: &[Scored], uncertain_below: f64) -> Abstention {
        let (mut labelled, mut right) = (0usize, 0usize);
        for r in rows {
            let best = mer_shared::manifest::argmax(r.probabilities);
            if f64::from(r.probabilities[best]) >= uncertain_below {
                labelled += 1;
                right += usize::from(best == r.truth);
            }
        }
        Abstention {
            uncertain_below,
            labelled,
            uncertain: rows.len() - labelled,
            accuracy_when_labelled: if labelled == 0 { 0.0 } else { right as f64 / labelled as f64 },
        }
    }
}

/// A leave-one-subject-out run's calibration (`results.json` → `calibration`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunCalibration {
    /// Fitted on every fold's held-out predictions: the temperature for a model trained on all
    /// samples with this recipe (what `mer export` writes into its manifest).
    pub temperature: f64,
    /// Each fold's predictions are scaled by the temperature fitted on the other folds' held-out
    /// predictions, so a test subject's labels never enter its own temperature.
    pub fold_temperatures: BTreeMap<String, f64>,
    pub ece_before: f64,
    pub ece_after: f64,
    pub nll_before: f64,
    pub nll_after: f64,
    /// The default threshold applied to the calibrated held-out predictions.
    pub abstention: Abstention,
    pub bins_before: Vec<Bin>,
    pub bins_after: Vec<Bin>,
}

impl RunCalibration {
    /// From each fold's held-out predictions (subject → rows); None with fewer than two folds,
    /// which leave no other fold to fit a fold's temperature on.
    pub fn cross_fitted(folds: &BTreeMap<String, Vec<Scored>>) -> Option<RunCalibration> {
        if folds.len() < 2 {
            return None;
        }
        let all: Vec<Scored> = folds.values().flatten().copied().collect();
        let mut fold_temperatures = BTreeMap::new();
        let mut calibrated: Vec<(Vec<f32>, usize)> = Vec::with_capacity(all.len());
        for (subject, rows) in folds {
            let others: Vec<Scored> = folds.iter().filter(|(s, _)| *s != subject).flat_map(|(_, r)| r.iter().copied()).collect();
            let t = fit_temperature(&others);
            fold_temperatures.insert(subject.clone(), t);
            calibrated.extend(rows.iter().map(|r| (rescale(r.probabilities, t), r.truth)));
        }
        let after: Vec<Scored> = calibrated.iter().map(|(p, truth)| Scored { probabilities: p, truth: *truth }).collect();
        Some(RunCalibration {
            temperature: fit_temperature(&all),
            fold_temperatures,
            ece_before: ece(&all),
            ece_after: ece(&after),
            nll_before: nll(&all, 1.0),
            nll_after: nll(&after, 1.0),
            abstention: Abstention::measure(&after, DEFAULT_UNCERTAIN_BELOW),
            bins_before: reliability(&all),
            bins_after: reliability(&after),
        })
    }

    pub fn summary(&self) -> String {
        format!(
            "calibration: ECE {:.3} → {:.3} with temperature {:.2} (each fold's fitted on the other folds); below p {:.2}, {} of {} \
             uncertain, accuracy {:.3} on the rest",
            self.ece_before,
            self.ece_after,
            self.temperature,
            self.abstention.uncertain_below,
            self.abstention.uncertain,
            self.abstention.labelled + self.abstention.uncertain,
            self.abstention.accuracy_when_labelled
        )
    }
}

/// The reliability diagram: accuracy against confidence per bin, before and after, beside the
/// diagonal a calibrated model follows.
pub fn reliability_png(path: &Path, title: &str, curves: &[(&str, &[Bin])]) -> Result<()> {
    let mut series = vec![Series { name: "perfectly calibrated".into(), points: vec![(0.0, 0.0), (1.0, 1.0)] }];
    for (name, bins) in curves {
        series.push(Series {
            name: (*name).to_string(),
            points: bins.iter().filter(|b| b.count > 0).map(|b| (b.confidence, b.accuracy)).collect(),
        });
    }
    curves_png(path, title, "confidence (highest probability)", "accuracy", &series)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Predictions whose true classes are drawn from softmax(z / t_true) while the stored
    /// probabilities are softmax(z): a model over- (t_true > 1) or under-confident by t_true.
    fn miscalibrated(t_true: f64, n: usize, seed: u64) -> Vec<(Vec<f32>, usize)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let z: Vec<f32> = (0..3).map(|_| rng.random_range(-4.0..4.0f32)).collect();
                let truth_p = rescale(&mer_shared::classifier::softmax(&z), t_true);
                let u: f32 = rng.random();
                let mut acc = 0.0;
                let truth = truth_p.iter().position(|p| {
                    acc += p;
                    u < acc
                });
                (mer_shared::classifier::softmax(&z), truth.unwrap_or(2))
            })
            .collect()
    }

    fn scored(rows: &[(Vec<f32>, usize)]) -> Vec<Scored<'_>> {
        rows.iter().map(|(p, t)| Scored { probabilities: p, truth: *t }).collect()
    }

    #[test]
    fn the_fitted_temperature_recovers_the_true_one_and_lowers_ece() {
        for t_true in [0.5, 2.5] {
            let rows = miscalibrated(t_true, 4000, 7);
            let rows = scored(&rows);
            let t = fit_temperature(&rows);
            assert!((t - t_true).abs() < 0.15 * t_true, "fitted {t}, true {t_true}");
            assert!(nll(&rows, t) <= nll(&rows, 1.0));
            let after: Vec<(Vec<f32>, usize)> = rows.iter().map(|r| (rescale(r.probabilities, t), r.truth)).collect();
            let (before, after) = (ece(&rows), ece(&scored(&after)));
            assert!(after < 0.03 && before > 2.0 * after, "ECE {before} → {after} at T {t_true}");
        }
        // Calibrated already: the temperature stays near 1.
        let rows = miscalibrated(1.0, 4000, 8);
        assert!((fit_temperature(&scored(&rows)) - 1.0).abs() < 0.1);
        assert_eq!(fit_temperature(&[]), 1.0);
    }

    #[test]
    fn ece_and_bins_by_hand() {
        // Confidences 0.9 (right), 0.9 (wrong), 0.5 (right), 0.4 (wrong: class 2 is true).
        let rows = [(vec![0.9, 0.05, 0.05], 0), (vec![0.05, 0.9, 0.05], 0), (vec![0.5, 0.25, 0.25], 0), (vec![0.4, 0.3, 0.3], 2)];
        let rows = scored(&rows);
        let bins = reliability(&rows);
        assert_eq!(bins.len(), ECE_BINS);
        assert_eq!(bins.iter().map(|b| b.count).sum::<usize>(), 4);
        // 0.9 lies in (13/15, 14/15]: two predictions, one right.
        let b = bins[13];
        assert_eq!(b.count, 2);
        assert!((b.confidence - 0.9).abs() < 1e-6 && (b.accuracy - 0.5).abs() < 1e-12);
        // |0.5−0.9|·2 + |1−0.5| + |0−0.4|, over 4.
        let expected = (2.0 * 0.4 + 0.5 + 0.4) / 4.0;
        assert!((ece(&rows) - expected).abs() < 1e-6, "{}", ece(&rows));
        let a = Abstention::measure(&rows, 0.5);
        assert_eq!((a.labelled, a.uncertain), (3, 1));
        assert!((a.accuracy_when_labelled - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn rescaling_keeps_the_order_and_undoes_a_softmax_temperature() {
        let z = [1.0f32, -0.5, 2.0];
        let p = mer_shared::classifier::softmax(&z);
        let flat = rescale(&p, 2.0);
        let direct = mer_shared::classifier::softmax(&z.map(|v| v / 2.0));
        for (a, b) in flat.iter().zip(&direct) {
            assert!((a - b).abs() < 1e-6);
        }
        assert_eq!(mer_shared::manifest::argmax(&flat), mer_shared::manifest::argmax(&p));
    }

    #[test]
    fn cross_fitting_never_uses_a_folds_own_labels() {
        let rows = miscalibrated(2.0, 600, 9);
        let mut folds: BTreeMap<String, Vec<Scored>> = BTreeMap::new();
        for (i, (p, t)) in rows.iter().enumerate() {
            folds.entry(format!("s{}", i % 3)).or_default().push(Scored { probabilities: p, truth: *t });
        }
        let run = RunCalibration::cross_fitted(&folds).unwrap();
        // Flipping the labels of fold s0 changes the temperatures of the others, never its own.
        let flipped: Vec<(Vec<f32>, usize)> =
            rows.iter().enumerate().map(|(i, (p, t))| (p.clone(), if i % 3 == 0 { (t + 1) % 3 } else { *t })).collect();
        let mut other: BTreeMap<String, Vec<Scored>> = BTreeMap::new();
        for (i, (p, t)) in flipped.iter().enumerate() {
            other.entry(format!("s{}", i % 3)).or_default().push(Scored { probabilities: p, truth: *t });
        }
        let changed = RunCalibration::cross_fitted(&other).unwrap();
        assert_eq!(run.fold_temperatures["s0"], changed.fold_temperatures["s0"]);
        assert_ne!(run.fold_temperatures["s1"], changed.fold_temperatures["s1"]);
        assert!(run.ece_after < run.ece_before, "{} → {}", run.ece_before, run.ece_after);
        assert!((run.temperature - 2.0).abs() < 0.5, "{}", run.temperature);
        let one: BTreeMap<String, Vec<Scored>> = folds.into_iter().take(1).collect();
        assert!(RunCalibration::cross_fitted(&one).is_none());
    }
}
