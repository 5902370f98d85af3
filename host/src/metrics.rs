//! Recognition metrics as the micro-expression literature reports them: unweighted F1 (UF1) and
//! unweighted average recall (UAR) over predictions pooled across all LOSO folds.

use serde::{Deserialize, Serialize};

/// Counts of (true class, predicted class); rows are the truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    pub counts: Vec<Vec<usize>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub uf1: f64,
    pub uar: f64,
    pub accuracy: f64,
    pub samples: usize,
}

impl Confusion {
    pub fn new(classes: usize) -> Confusion {
        Confusion { counts: vec![vec![0; classes]; classes] }
    }

    pub fn from_pairs(classes: usize, pairs: impl IntoIterator<Item = (usize, usize)>) -> Confusion {
        let mut c = Confusion::new(classes);
        for (truth, pred) in pairs {
            c.counts[truth][pred] += 1;
        }
        c
    }

    pub fn total(&self) -> usize {
        self.counts.iter().flatten().sum()
    }

    /// UF1 = mean over classes of 2TP/(2TP+FP+FN); UAR = mean over classes of TP/#truth.
    /// A class that occurs neither in the truth nor in the predictions is left out of both
    /// means (the official evaluation skips it too); a class that was never true but was
    /// predicted counts with F1 = 0 and recall left out.
    pub fn scores(&self) -> Scores {
        let k = self.counts.len();
        let (mut f1s, mut recalls) = (Vec::new(), Vec::new());
        for c in 0..k {
            let tp = self.counts[c][c] as f64;
            let truth: usize = self.counts[c].iter().sum();
            let predicted: usize = (0..k).map(|r| self.counts[r][c]).sum();
            if truth == 0 && predicted == 0 {
                continue;
            }
            let (fn_, fp) = (truth as f64 - tp, predicted as f64 - tp);
            f1s.push(2.0 * tp / (2.0 * tp + fp + fn_));
            if truth > 0 {
                recalls.push(tp / truth as f64);
            }
        }
        let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
        let total = self.total();
        let correct: usize = (0..k).map(|c| self.counts[c][c]).sum();
        Scores {
            uf1: mean(&f1s),
            uar: mean(&recalls),
            accuracy: if total == 0 { 0.0 } else { correct as f64 / total as f64 },
            samples: total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_hand_computed_cases() {
        let perfect = Confusion::from_pairs(3, [(0, 0), (1, 1), (2, 2), (2, 2)]);
        let s = perfect.scores();
        assert_eq!((s.uf1, s.uar, s.accuracy), (1.0, 1.0, 1.0));

        // truth 0,0,1,1,2 ; pred 0,1,1,1,0
        let c = Confusion::from_pairs(3, [(0, 0), (0, 1), (1, 1), (1, 1), (2, 0)]);
        let s = c.scores();
        // F1: class0 2·1/(2+1+1)=0.5, class1 2·2/(4+1+0)=0.8, class2 0 → mean 0.4333
        assert!((s.uf1 - (0.5 + 0.8 + 0.0) / 3.0).abs() < 1e-12);
        // recall: 0.5, 1, 0 → 0.5
        assert!((s.uar - 0.5).abs() < 1e-12);
        assert!((s.accuracy - 0.6).abs() < 1e-12);
    }

    #[test]
    fn absent_classes_are_skipped() {
        let c = Confusion::from_pairs(5, [(0, 0), (1, 1)]);
        let s = c.scores();
        assert_eq!((s.uf1, s.uar), (1.0, 1.0));
    }
}
