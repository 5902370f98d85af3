//! Is the synthetic task learnable but not trivial? A deliberately simple probe answers it:
//! leave-one-subject-out nearest-centroid classification of the onset→apex TV-L1 flow (pooled to
//! 8×8, unit-normalised), on the CASME II 5-class set. A real model should beat this probe.

use std::path::Path;

use anyhow::Result;
use mer_shared::flow::tvl1_flow;
use mer_shared::image::{Interpolation, load_gray, resize};
use mer_shared::input::InputSpec;
use mer_shared::labels::{LabelTally, Taxonomy};
use mer_shared::synth::casme2::{Casme2Options, write_casme2};
use rayon::prelude::*;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Learnability {
    pub samples: usize,
    pub subjects: usize,
    pub classes: Vec<String>,
    pub labels: LabelTally,
    pub accuracy: f64,
    pub uf1: f64,
    pub uar: f64,
    /// Accuracy of always answering the most frequent class.
    pub majority_baseline: f64,
}

const POOL: usize = 8;

fn features(dataset: &Path, s: &mer_shared::synth::casme2::Casme2Sample) -> Result<Vec<f32>> {
    let spec = InputSpec::skd_tstsan();
    let read = |f| -> Result<_> {
        let img = load_gray(&s.frame_path(dataset, f))?;
        Ok(resize(&img, spec.face_size, spec.face_size, Interpolation::Bilinear).quantized_u8())
    };
    let flow = tvl1_flow(&read(s.onset_frame)?, &read(s.apex_frame)?, &spec.tvl1, 1)?;
    let mut v: Vec<f32> =
        [flow.u_image(), flow.v_image()].iter().flat_map(|c| resize(c, POOL, POOL, Interpolation::Area).into_data()).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.iter_mut().for_each(|x| *x /= norm);
    Ok(v)
}

pub fn probe(dir: &Path, opts: &Casme2Options) -> Result<Learnability> {
    let samples = write_casme2(dir, opts, &|| {})?;
    let taxonomy = Taxonomy::Casme2Five;
    let mut labels = LabelTally::default();
    let mut kept = Vec::new();
    for s in &samples {
        if let Some(class) = labels.record(taxonomy, s.emotion.name())? {
            kept.push((s, class));
        }
    }
    let feats: Vec<Vec<f32>> = kept.par_iter().map(|(s, _)| features(dir, s)).collect::<Result<_>>()?;
    let k = taxonomy.num_classes();
    let mut predictions = Vec::new();
    let subjects: std::collections::BTreeSet<&str> = kept.iter().map(|(s, _)| s.subject.as_str()).collect();
    for test in &subjects {
        let mut centroid = vec![vec![0f32; feats[0].len()]; k];
        let mut count = vec![0usize; k];
        for (i, (s, c)) in kept.iter().enumerate() {
            if s.subject != *test {
                centroid[*c].iter_mut().zip(&feats[i]).for_each(|(a, b)| *a += b);
                count[*c] += 1;
            }
        }
        for (i, (s, c)) in kept.iter().enumerate() {
            if s.subject == *test {
                let best = (0..k)
                    .filter(|&j| count[j] > 0)
                    .max_by(|&a, &b| {
                        let score = |j: usize| centroid[j].iter().zip(&feats[i]).map(|(x, y)| x * y).sum::<f32>() / count[j] as f32;
                        score(a).total_cmp(&score(b))
                    })
                    .unwrap_or(0);
                predictions.push((*c, best));
            }
        }
    }
    let n = predictions.len() as f64;
    let accuracy = predictions.iter().filter(|(t, p)| t == p).count() as f64 / n;
    let (mut f1s, mut recalls) = (Vec::new(), Vec::new());
    for c in 0..k {
        let tp = predictions.iter().filter(|&&(t, p)| t == c && p == c).count() as f64;
        let fp = predictions.iter().filter(|&&(t, p)| t != c && p == c).count() as f64;
        let fn_ = predictions.iter().filter(|&&(t, p)| t == c && p != c).count() as f64;
        if tp + fp + fn_ > 0.0 {
            f1s.push(2.0 * tp / (2.0 * tp + fp + fn_));
        }
        if tp + fn_ > 0.0 {
            recalls.push(tp / (tp + fn_));
        }
    }
    let majority = (0..k).map(|c| predictions.iter().filter(|(t, _)| *t == c).count()).max().unwrap_or(0) as f64 / n;
    Ok(Learnability {
        samples: predictions.len(),
        subjects: subjects.len(),
        classes: taxonomy.classes().iter().map(|c| c.to_string()).collect(),
        labels,
        accuracy,
        uf1: f1s.iter().sum::<f64>() / f1s.len() as f64,
        uar: recalls.iter().sum::<f64>() / recalls.len() as f64,
        majority_baseline: majority,
    })
}
