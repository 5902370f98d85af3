//! Spot-then-recognise (`mer spot-eval --model`, the MEGC 2025 task): each true-positive spot is
//! classified from the spotted onset, apex and offset frames and the face box the device had at
//! the apex, through `mer_shared::input::model_input` — the one preprocessing function of `mer
//! prepare` and `merd` — and scored against the label of the true interval it matched.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use mer_device::face::Roi;
use mer_shared::bundle::read_public_key;
use mer_shared::classifier::{Classifier, Trust};
use mer_shared::face::FaceBox;
use mer_shared::frames::FrameFolder;
use mer_shared::input::{KeyFrames, model_input};
use mer_shared::labels::{LabelMapping, Taxonomy};
use serde::Serialize;

use crate::metrics::{Confusion, Scores};

/// A model ready to label spots, with the class set its labels are mapped by.
#[derive(Debug)]
pub struct Recogniser {
    path: PathBuf,
    classifier: Classifier,
    taxonomy: Taxonomy,
}

/// What the model said about one true-positive spot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpotRecognition {
    /// The matched true interval's label, as a class of the model; none when the model's class
    /// set leaves that label out (the spot is then not scored).
    pub truth: Option<String>,
    pub predicted: String,
    pub probabilities: Vec<f32>,
}

/// Recognition over every true-positive spot whose label is one of the model's classes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecognitionScores {
    pub model: PathBuf,
    pub taxonomy: String,
    pub classes: Vec<String>,
    #[serde(flatten)]
    pub scores: Scores,
    /// Rows: true class; columns: predicted.
    pub confusion: Confusion,
    /// True-positive spots whose label the class set leaves out.
    pub excluded: usize,
}

impl Recogniser {
    /// Loads a bundle (or ONNX export); with `keys`, the bundle must be signed by one of them.
    pub fn load(path: &Path, keys: &[PathBuf]) -> Result<Recogniser> {
        let keys =
            keys.iter().map(|k| read_public_key(k).with_context(|| format!("public key {}", k.display()))).collect::<Result<Vec<_>>>()?;
        let classifier = Classifier::load(path, Trust::of(&keys))?;
        let taxonomy: Taxonomy = classifier.manifest().taxonomy.parse().map_err(|e| anyhow!("{}: {e}", path.display()))?;
        Ok(Recogniser { path: path.to_path_buf(), classifier, taxonomy })
    }

    /// The model's class of a dataset label; None when its class set leaves the label out.
    fn class_of(&self, label: &str) -> Result<Option<usize>> {
        match self.taxonomy.map(label).map_err(|e| anyhow!("label {label:?}: {e}"))? {
            LabelMapping::Class(c) => Ok(Some(c)),
            LabelMapping::Excluded => Ok(None),
        }
    }

    /// Classifies the window (onset, apex, offset) of the video's frames, cut at `face`, and
    /// compares it with `label`.
    pub fn recognise(&self, frames: &FrameFolder, keys: KeyFrames, face: Roi, label: &str) -> Result<SpotRecognition> {
        let face = FaceBox::from(face);
        let input = model_input(&self.classifier.manifest().input, frames, Some(&face), keys, 1)?;
        let result = self.classifier.classify(&input.data, 1)?;
        let probabilities = result.probabilities.into_iter().next().unwrap_or_default();
        let best = probabilities.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
        let classes = &self.classifier.manifest().classes;
        Ok(SpotRecognition {
            truth: self.class_of(label)?.map(|c| classes[c].clone()),
            predicted: classes.get(best).cloned().unwrap_or_default(),
            probabilities,
        })
    }

    /// UF1, UAR and the confusion over the recognised spots.
    pub fn scores<'a>(&self, recognised: impl IntoIterator<Item = &'a SpotRecognition>) -> RecognitionScores {
        let classes = self.classifier.manifest().classes.clone();
        let index = |name: &str| classes.iter().position(|c| c == name);
        let (mut pairs, mut excluded) = (Vec::new(), 0);
        for r in recognised {
            match r.truth.as_deref().and_then(index).zip(index(&r.predicted)) {
                Some(pair) => pairs.push(pair),
                None => excluded += 1,
            }
        }
        let confusion = Confusion::from_pairs(classes.len(), pairs);
        RecognitionScores {
            model: self.path.clone(),
            taxonomy: self.taxonomy.name().to_string(),
            scores: confusion.scores(),
            classes,
            confusion,
            excluded,
        }
    }
}
