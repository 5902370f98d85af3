//! The prepared samples of one dataset as tensors, with their labels and subjects.

use anyhow::{Result, bail};
use mer_shared::input::InputLayout;
use mer_shared::manifest::InputProvenance;
use tch::{Device, Tensor};

use crate::dataset::samples::{DataSource, SampleArrays};
use crate::model::Arch;

pub struct TrainData {
    /// (N, C, H, W) float32.
    pub x: Tensor,
    pub labels: Vec<i64>,
    pub subjects: Vec<String>,
    pub ids: Vec<String>,
    pub classes: Vec<String>,
    pub source: DataSource,
}

impl TrainData {
    pub fn new(arrays: SampleArrays) -> Result<TrainData> {
        let SampleArrays { shape, values, labels, subjects, ids, classes, source } = arrays;
        let n = labels.len();
        let per = shape.iter().product::<usize>();
        if values.len() != n * per || subjects.len() != n || ids.len() != n {
            bail!(
                "inconsistent training data: {n} labels, {} subjects, {} ids, {} values for shape {shape:?}",
                subjects.len(),
                ids.len(),
                values.len()
            );
        }
        if let Some((i, l)) = labels.iter().enumerate().find(|(_, l)| **l < 0 || **l as usize >= classes.len()) {
            bail!("sample {} has class {l}, outside the {} classes", ids[i], classes.len());
        }
        let [c, h, w] = shape.map(|d| d as i64);
        let x = Tensor::from_slice(&values).view([n as i64, c, h, w]);
        Ok(TrainData { x, labels, subjects, ids, classes, source })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// Distinct subjects, sorted.
    pub fn subjects(&self) -> Vec<String> {
        let mut s = self.subjects.clone();
        s.sort();
        s.dedup();
        s
    }

    pub fn indices(&self, keep: impl Fn(&str) -> bool) -> Vec<usize> {
        (0..self.len()).filter(|&i| keep(&self.subjects[i])).collect()
    }

    pub fn class_counts(&self, indices: &[usize]) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &i in indices {
            counts[self.labels[i] as usize] += 1;
        }
        counts
    }

    /// The source dataset of each composite sample (ids `<source>/<subject>_<clip>`); None for
    /// other data, which come from the one dataset they were prepared from.
    pub fn sample_sources(&self) -> Option<Vec<&str>> {
        if self.source.taxonomy != mer_shared::labels::Taxonomy::CompositeThree.name() {
            return None;
        }
        Some(self.ids.iter().map(|id| id.split_once('/').map_or("", |(source, _)| source)).collect())
    }

    /// Only the samples of the source datasets `sources` (composite data: casme2, samm, smic).
    /// The digest records the choice, so runs on different selections are never merged.
    pub fn of_sources(self, sources: &[String]) -> Result<TrainData> {
        let Some(of) = self.sample_sources() else {
            bail!(
                "--sources picks source datasets of composite data; {} holds prepared {} samples of one dataset",
                self.source.path,
                self.source.taxonomy
            );
        };
        let mut present: Vec<&str> = of.clone();
        present.sort();
        present.dedup();
        if let Some(missing) = sources.iter().find(|s| !present.contains(&s.as_str())) {
            bail!("--sources {missing}: {} has no samples of it; its sources are {}", self.source.path, present.join(", "));
        }
        let keep: Vec<usize> = (0..self.len()).filter(|&i| sources.iter().any(|s| s == of[i])).collect();
        let pick = |v: &[String]| keep.iter().map(|&i| v[i].clone()).collect::<Vec<_>>();
        let index = Tensor::from_slice(&keep.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let mut chosen = sources.to_vec();
        chosen.sort();
        chosen.dedup();
        Ok(TrainData {
            x: self.x.index_select(0, &index),
            labels: keep.iter().map(|&i| self.labels[i]).collect(),
            subjects: pick(&self.subjects),
            ids: pick(&self.ids),
            classes: self.classes.clone(),
            source: DataSource { digest: format!("{}+sources={}", self.source.digest, chosen.join(",")), sources: chosen, ..self.source },
        })
    }

    /// Inputs and labels of `indices`, on `device`.
    pub fn batch(&self, indices: &[usize], device: Device) -> (Tensor, Tensor) {
        let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        let idx = Tensor::from_slice(&idx);
        let labels: Vec<i64> = indices.iter().map(|&i| self.labels[i]).collect();
        (self.x.index_select(0, &idx).to_device(device), Tensor::from_slice(&labels).to_device(device))
    }
}

/// Where `mer train --data` points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DataKind {
    /// A preparation cache written by `mer prepare`.
    Prepared,
    /// The composite (MEGC 2019) flow images as HTNet/STSTNet publish them.
    Composite,
}

impl TrainData {
    /// The samples `arch` trains on: the data as read, or the input the architecture derives
    /// from them (HTNet's landmark mosaic of flow images). Fails, saying what to prepare, when the
    /// data are neither.
    pub fn load_for(arch: Arch, kind: DataKind, path: &std::path::Path) -> Result<TrainData> {
        let (data, layout) = match kind {
            DataKind::Prepared => {
                let set = crate::prepare::PreparedSet::load(path)?;
                let layout = set.key.spec.layout;
                (TrainData::from_set(set, path)?, layout)
            }
            DataKind::Composite => (TrainData::new(crate::dataset::composite::load(path)?)?, InputLayout::FlowStrain28),
        };
        let wanted = arch.input_layout();
        if layout == wanted {
            return Ok(data);
        }
        let Some((derivation, derive)) = arch.derive_input(layout) else {
            let hint = match (kind, wanted) {
                (DataKind::Composite, InputLayout::SkdTstsan38) => {
                    "the composite set has no face frames: train on a `mer prepare --input skd-tstsan` cache (--dataset prepared)"
                        .to_string()
                }
                (_, InputLayout::SkdTstsan38) => format!("prepare it with `mer prepare --input {}`", wanted.name()),
                (DataKind::Prepared, _) => format!("prepare it with `mer prepare --input {}` (or --arch {arch})", wanted.name()),
                (DataKind::Composite, _) => "use --dataset composite with the composite flow images".to_string(),
            };
            let [c, h, w] = arch.input_shape();
            bail!("{arch} reads {} inputs ({c}×{h}×{w}); {} holds {} inputs: {hint}", wanted.name(), path.display(), layout.name());
        };
        let per = data.x.size()[1..].iter().product::<i64>() as usize;
        let values = Vec::<f32>::try_from(data.x.flatten(0, -1))?;
        let derived: Vec<f32> = values.chunks(per).flat_map(derive).collect();
        let source = DataSource { digest: format!("{}+{derivation}", data.source.digest), ..data.source };
        let TrainData { labels, subjects, ids, classes, .. } = data;
        TrainData::new(SampleArrays { shape: arch.input_shape(), values: derived, labels, subjects, ids, classes, source })
    }

    /// Loads a preparation cache written by `mer prepare`.
    pub fn from_cache(dir: &std::path::Path) -> Result<TrainData> {
        TrainData::from_set(crate::prepare::PreparedSet::load(dir)?, dir)
    }

    fn from_set(set: crate::prepare::PreparedSet, dir: &std::path::Path) -> Result<TrainData> {
        if set.samples.is_empty() {
            bail!("{} holds no prepared samples", dir.display());
        }
        let taxonomy = set.key.taxonomy;
        // Absolute, so the run can find its data again from any working directory (export does).
        let path = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let source = DataSource {
            path: path.display().to_string(),
            digest: set.key.digest(),
            taxonomy: taxonomy.name().to_string(),
            inputs: InputProvenance::MerShared,
            sources: Vec::new(),
        };
        TrainData::new(SampleArrays {
            shape: set.shape,
            labels: set.samples.iter().map(|s| s.class as i64).collect(),
            subjects: set.samples.iter().map(|s| s.subject.clone()).collect(),
            ids: set.samples.iter().map(|s| s.id.clone()).collect(),
            classes: taxonomy.classes().iter().map(|c| c.to_string()).collect(),
            values: set.data,
            source,
        })
    }
}
