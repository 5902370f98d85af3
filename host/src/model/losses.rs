//! Training losses. SKD-TSTSAN's self-distillation objective, as the official training script
//! computes it: weighted focal loss on all three classifiers, KL distillation from the main
//! classifier into the two auxiliary ones at temperature T, and a masked squared feature distance.

use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor};

/// Loss weights and shape parameters (defaults are the official ones).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    /// Focal-loss focusing parameter γ.
    pub gamma: f64,
    /// Distillation temperature T.
    pub temperature: f64,
    /// KD weight λ1 (the auxiliary focal losses get 1 − α).
    pub alpha: f64,
    /// Feature-loss weight λ2.
    pub beta: f64,
    /// AM3F-FlowNet's logit adjustment τ (logits + τ·log prior during training).
    #[serde(default = "default_tau")]
    pub tau: f64,
}

fn default_tau() -> f64 {
    1.0
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig { gamma: 2.0, temperature: 3.0, alpha: 0.1, beta: 1e-6, tau: default_tau() }
    }
}

/// Class weights inversely proportional to the class counts of the training split, normalised
/// to sum to one; classes absent from the split get weight 0 (they never occur as targets).
pub fn class_weights(counts: &[usize]) -> Vec<f64> {
    let inv: Vec<f64> = counts.iter().map(|&n| if n == 0 { 0.0 } else { 1.0 / n as f64 }).collect();
    let total: f64 = inv.iter().sum();
    inv.iter().map(|w| if total > 0.0 { w / total } else { 0.0 }).collect()
}

/// Weighted focal loss with PyTorch's weighted-mean reduction:
/// Σ_i w[y_i]·(−(1−p_i)^γ·log p_i) / Σ_i w[y_i].
pub fn focal_loss(logits: &Tensor, targets: &Tensor, weights: &Tensor, gamma: f64) -> Tensor {
    let logp = logits.log_softmax(-1, Kind::Float);
    let modulated = (-logp.exp() + 1.0).pow_tensor_scalar(gamma) * &logp;
    let weights: Option<&Tensor> = Some(weights);
    modulated.g_nll_loss(targets, weights, Reduction::Mean, -100)
}

/// T²-scaled KL divergence from the (detached) teacher's softened distribution to the student's,
/// averaged over the batch.
pub fn distillation_loss(student: &Tensor, teacher: &Tensor, temperature: f64) -> Tensor {
    let target = (teacher.detach() / temperature).softmax(-1, Kind::Float);
    let log_student = (student / temperature).log_softmax(-1, Kind::Float);
    let batch = student.size()[0] as f64;
    let kl = (&target * (target.log() - log_student)).nan_to_num(0.0, None, None).sum(Kind::Float);
    kl / batch * temperature * temperature
}

/// Squared distance between student and (detached) teacher features, summed over entries where
/// either is positive.
pub fn feature_loss(student: &Tensor, teacher: &Tensor) -> Tensor {
    let teacher = teacher.detach();
    let mask = student.gt(0.0).logical_or(&teacher.gt(0.0)).to_kind(Kind::Float);
    ((student - teacher).square() * mask).sum(Kind::Float)
}

/// What the loss of a batch may depend on besides the batch.
pub struct Targets<'a> {
    /// Class weights of the focal losses (inverse training-fold frequencies).
    pub weights: &'a Tensor,
    /// Training-fold class counts (AM3F-FlowNet's priors).
    pub counts: &'a [usize],
}

/// A loss of one term, with its log entry and the logits it was computed from.
pub fn single_term(loss: Tensor, logits: Tensor) -> (Tensor, LossTerms, Tensor) {
    let v = loss.double_value(&[]);
    (loss, LossTerms { total: v, focal_main: v, ..Default::default() }, logits)
}

/// The per-batch terms, for logging.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct LossTerms {
    pub total: f64,
    pub focal_main: f64,
    pub focal_aux: f64,
    pub distillation: f64,
    pub feature: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(values: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(values).view(shape)
    }

    #[test]
    fn class_weights_are_normalised_inverse_counts() {
        // The official CASME II counts give the official weights.
        let w = class_weights(&[32, 25, 61, 27, 99]);
        for (got, want) in w.iter().zip([0.231857, 0.296777, 0.121630, 0.274793, 0.074944]) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        assert_eq!(class_weights(&[0, 2, 2]), vec![0.0, 0.5, 0.5]);
    }

    #[test]
    fn focal_loss_matches_closed_form() {
        let logits = t(&[2.0, 0.0, -1.0, 0.5, 0.5, 0.0], &[2, 3]);
        let targets = Tensor::from_slice(&[0i64, 2]);
        let weights = Tensor::from_slice(&[0.2f32, 0.3, 0.5]);
        let got = focal_loss(&logits, &targets, &weights, 2.0).double_value(&[]);
        let p = |row: [f64; 3], c: usize| row[c].exp() / row.iter().map(|v| v.exp()).sum::<f64>();
        let term = |p: f64| -(1.0 - p).powi(2) * p.ln();
        let (p0, p1) = (p([2.0, 0.0, -1.0], 0), p([0.5, 0.5, 0.0], 2));
        let want = (0.2 * term(p0) + 0.5 * term(p1)) / (0.2 + 0.5);
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn distillation_is_zero_for_identical_logits_and_positive_otherwise() {
        let a = t(&[1.0, 2.0, 3.0, 0.0, 0.0, 1.0], &[2, 3]);
        assert!(distillation_loss(&a, &a, 3.0).double_value(&[]).abs() < 1e-7);
        let b = t(&[3.0, 2.0, 1.0, 1.0, 0.0, 0.0], &[2, 3]);
        let got = distillation_loss(&a, &b, 3.0).double_value(&[]);
        // Closed form for the batch mean of KL(q_b || p_a) at T = 3, times 9.
        let soft = |row: &[f64]| {
            let e: Vec<f64> = row.iter().map(|v| (v / 3.0).exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(|v| v / s).collect::<Vec<_>>()
        };
        let kl = |q: Vec<f64>, p: Vec<f64>| q.iter().zip(&p).map(|(q, p)| q * (q / p).ln()).sum::<f64>();
        let want = 9.0 * (kl(soft(&[3.0, 2.0, 1.0]), soft(&[1.0, 2.0, 3.0])) + kl(soft(&[1.0, 0.0, 0.0]), soft(&[0.0, 0.0, 1.0]))) / 2.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn feature_loss_ignores_entries_where_both_are_zero() {
        let s = t(&[0.0, 1.0, 0.0, 2.0], &[2, 2]);
        let f = t(&[0.0, 0.0, 3.0, 2.0], &[2, 2]);
        assert_eq!(feature_loss(&s, &f).double_value(&[]), 1.0 + 9.0);
    }
}
