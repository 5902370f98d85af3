//! `mer prepare`: dataset on disk → model inputs in a preparation cache. For each clip: the face
//! box on its first frame (one box for all its frames, as the reference pipeline does), then
//! `mer_shared::input::model_input` — the function `merd` runs on the device — on its key
//! frames. Clips run in parallel; a rerun skips what is already stored; a clip that fails is
//! reported and the others still finish.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tracing::{info, warn};

use anyhow::{Context, Result};
use mer_shared::frames::frame_number;
use mer_shared::image::{GrayImage, load_gray};
use mer_shared::input::{ClipFrames, InputSpec, KeyFrames, model_input};
use mer_shared::labels::Taxonomy;
use rayon::prelude::*;
use serde::Serialize;

use super::cache::{CacheKey, PreparationCache, PreparedSample};
use super::face::{CropMode, DetectorSettings, FaceDetector};
use crate::dataset::{ClipSample, DatasetKind, LoadedDataset, load};
use crate::progress::bar;

pub struct PrepareOptions {
    pub dataset: DatasetKind,
    pub root: PathBuf,
    pub annotations: Option<PathBuf>,
    pub taxonomy: Taxonomy,
    pub out: PathBuf,
    pub crop: CropMode,
    pub detector: DetectorSettings,
    pub spec: InputSpec,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub id: String,
    pub source: String,
    pub error: String,
}

/// What a preparation run did; also stored in the cache's `index.json`.
#[derive(Debug, Clone, Serialize)]
pub struct PrepareSummary {
    pub dataset: String,
    pub taxonomy: String,
    pub digest: String,
    /// Samples in the cache now.
    pub samples: usize,
    pub prepared_now: usize,
    pub reused: usize,
    /// Stored samples that failed their check on resume (see stderr for which and why); those
    /// still in the dataset were prepared again.
    pub damaged: usize,
    /// Why the `index.json` found at the start could not be read, when it could not.
    pub replaced_index: Option<String>,
    pub failed: Vec<Failure>,
    /// Samples per class, in class order; per subject, class counts in class order.
    pub per_class: Vec<(String, usize)>,
    pub per_subject: BTreeMap<String, Vec<usize>>,
    /// Rows left out by the loader and wart repairs, as "rule: count".
    pub skipped: BTreeMap<String, usize>,
    pub repairs: BTreeMap<String, usize>,
    pub seconds: f64,
}

fn rule(message: &str) -> String {
    message.split(':').next().unwrap_or(message).trim().to_string()
}

fn count_rules(notes: &[crate::dataset::Note]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for n in notes {
        *out.entry(rule(&n.message)).or_insert(0) += 1;
    }
    out
}

/// The frame files a loader resolved for one clip, by frame number.
struct ClipFiles(Vec<(i64, PathBuf)>);

impl ClipFiles {
    /// The clip's key frames as frame numbers (from the file names) and the files behind them.
    fn of(clip: &ClipSample) -> Result<(ClipFiles, KeyFrames)> {
        let number = |path: &Path| frame_number(path).with_context(|| format!("{} carries no frame number in its name", path.display()));
        let files = [&clip.onset, &clip.apex, &clip.offset].map(|p| p.to_path_buf());
        let [onset, apex, offset] = [number(&files[0])?, number(&files[1])?, number(&files[2])?];
        let keys = KeyFrames::new(onset, apex, offset).with_context(|| format!("the key frames of {}", clip.id))?;
        Ok((ClipFiles(vec![(onset, files[0].clone()), (apex, files[1].clone()), (offset, files[2].clone())]), keys))
    }
}

impl ClipFrames for ClipFiles {
    fn frame(&self, number: i64) -> mer_shared::Result<GrayImage> {
        let (_, path) = self.0.iter().find(|(n, _)| *n == number).expect("only key frames are asked for");
        load_gray(path)
    }
}

fn prepare_clip(
    clip: &ClipSample,
    opts: &PrepareOptions,
    cache: &PreparationCache,
    detector: &mut FaceDetector,
    dataset: &LoadedDataset,
) -> Result<()> {
    let first = load_gray(&clip.first).with_context(|| format!("reading the first frame {}", clip.first.display()))?;
    let face = opts.crop.region(&first, detector).with_context(|| format!("face box on {}", clip.first.display()))?;
    let (files, keys) = ClipFiles::of(clip)?;
    let input = model_input(&opts.spec, &files, face.as_ref(), keys, 1)
        .with_context(|| format!("preprocessing {} (frames in {})", clip.id, clip.apex.parent().unwrap_or(Path::new(".")).display()))?;
    let notes = dataset.repairs.iter().filter(|n| n.sample == clip.id).map(|n| n.message.clone()).collect();
    let meta = PreparedSample {
        id: clip.id.clone(),
        subject: clip.subject.clone(),
        class: clip.class,
        label: clip.raw_label.clone(),
        source: clip.source.clone(),
        face,
        frames: keys,
        input_sha256: input.sha256(),
        notes,
    };
    cache.put(&meta, &input)
}

pub fn prepare(opts: &PrepareOptions) -> Result<PrepareSummary> {
    let started = Instant::now();
    let dataset = load(opts.dataset, &opts.root, opts.annotations.as_deref(), opts.taxonomy)?;
    eprintln!("{}", dataset.summary());
    let key = CacheKey::new(opts.dataset.name(), opts.taxonomy, opts.spec.clone(), opts.crop, &opts.detector);
    let cache = PreparationCache::open(&opts.out, &key)?;
    if let Some(problem) = cache.unreadable_index() {
        warn!("replacing unreadable {}: {problem}", opts.out.join("index.json").display());
    }
    for d in cache.damaged() {
        let again = if dataset.samples.iter().any(|s| s.id == d.id) { "preparing it again" } else { "removed from the cache" };
        warn!("damaged sample {} in {}: {}; {again}", d.id, opts.out.display(), d.reason);
    }
    let todo: Vec<&ClipSample> = dataset.samples.iter().filter(|s| !cache.contains(&s.id)).collect();
    let reused = dataset.samples.len() - todo.len();
    if reused > 0 {
        info!("{reused} samples already prepared in {}; preparing the other {}", opts.out.display(), todo.len());
    }
    let progress = bar(todo.len() as u64, "preparing");
    let settings = opts.detector;
    let failed: Vec<Failure> = todo
        .par_iter()
        .map_init(
            || FaceDetector::with_settings(settings),
            |detector, clip| {
                let outcome = match detector {
                    Ok(d) => prepare_clip(clip, opts, &cache, d, &dataset),
                    Err(e) => Err(anyhow::anyhow!("the face detector could not start: {e}")),
                };
                progress.inc(1);
                outcome.err().map(|e| Failure { id: clip.id.clone(), source: clip.source.clone(), error: format!("{e:#}") })
            },
        )
        .flatten()
        .collect();
    progress.finish_and_clear();

    let classes = opts.taxonomy.classes();
    let stored = cache.samples()?;
    let mut per_class: Vec<(String, usize)> = classes.iter().map(|c| (c.to_string(), 0)).collect();
    let mut per_subject: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for s in &stored {
        per_class[s.class].1 += 1;
        per_subject.entry(s.subject.clone()).or_insert_with(|| vec![0; classes.len()])[s.class] += 1;
    }
    let mut failed = failed;
    failed.sort_by(|a, b| a.id.cmp(&b.id));
    let summary = PrepareSummary {
        dataset: opts.dataset.name().into(),
        taxonomy: opts.taxonomy.name().into(),
        digest: cache.digest().to_string(),
        samples: stored.len(),
        prepared_now: todo.len() - failed.len(),
        reused,
        damaged: cache.damaged().len(),
        replaced_index: cache.unreadable_index().map(str::to_string),
        failed,
        per_class,
        per_subject,
        skipped: count_rules(&dataset.skipped),
        repairs: count_rules(&dataset.repairs),
        seconds: started.elapsed().as_secs_f64(),
    };
    cache.finish(&serde_json::to_value(&summary)?)?;
    Ok(summary)
}

impl PrepareSummary {
    pub fn describe(&self) -> String {
        let damaged = if self.damaged > 0 { format!(", {} damaged in the cache", self.damaged) } else { String::new() };
        let mut s = format!(
            "{} samples in the cache ({} prepared now, {} reused{damaged}, {} failed) in {:.1} s\nper class: {}\n",
            self.samples,
            self.prepared_now,
            self.reused,
            self.failed.len(),
            self.seconds,
            self.per_class.iter().map(|(c, n)| format!("{c} {n}")).collect::<Vec<_>>().join(", ")
        );
        s += &format!(
            "per subject: {}\n",
            self.per_subject.iter().map(|(k, v)| format!("{k} {}", v.iter().sum::<usize>())).collect::<Vec<_>>().join(", ")
        );
        for (what, map) in [("left out", &self.skipped), ("repaired", &self.repairs)] {
            if !map.is_empty() {
                s += &format!("{what}: {}\n", map.iter().map(|(r, n)| format!("{r} ({n})")).collect::<Vec<_>>().join(", "));
            }
        }
        for f in &self.failed {
            s += &format!("FAILED {} ({}): {}\n", f.id, f.source, f.error);
        }
        s
    }
}

/// Prepares the dataset at `root` (whole frames) in every input layout and checks that every clip
/// became a sample whose recorded hash is its tensor's: the loaders' own test trees run through
/// the one preprocessing path.
#[cfg(test)]
pub(crate) fn assert_prepares_in_every_layout(kind: DatasetKind, root: &Path, taxonomy: Taxonomy) {
    use mer_shared::input::InputLayout;
    let expected = load(kind, root, None, taxonomy).unwrap().samples.len();
    for (_, layout) in InputLayout::NAMES {
        let out = tempfile::tempdir().unwrap();
        let opts = PrepareOptions {
            dataset: kind,
            root: root.to_path_buf(),
            annotations: None,
            taxonomy,
            out: out.path().to_path_buf(),
            crop: CropMode::None,
            detector: DetectorSettings::default(),
            spec: layout.spec(),
        };
        let summary = prepare(&opts).unwrap();
        assert!(summary.failed.is_empty() && summary.samples == expected, "{kind} {layout:?}: {}", summary.describe());
        let set = super::PreparedSet::load(out.path()).unwrap();
        assert_eq!(set.shape, [layout.spec().channels, layout.spec().height, layout.spec().width]);
        for (i, sample) in set.samples.iter().enumerate() {
            assert_eq!(sample.input_sha256, mer_shared::input::f32_digest(set.tensor(i)), "{kind} {}", sample.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mer_shared::input::InputLayout;
    use mer_shared::synth::casme2::{Casme2Options, write_casme2};

    #[test]
    fn a_rerun_prepares_damaged_samples_again_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("casme2");
        write_casme2(&root, &Casme2Options { subjects: 2, per_subject: 2, width: 64, height: 64, ..Casme2Options::default() }, &|| {})
            .unwrap();
        let opts = PrepareOptions {
            dataset: DatasetKind::Casme2,
            root,
            annotations: None,
            taxonomy: Taxonomy::Casme2Five,
            out: dir.path().join("prepared"),
            crop: CropMode::None,
            detector: DetectorSettings::default(),
            spec: InputLayout::SkdTstsan38.spec(),
        };
        let first = prepare(&opts).unwrap();
        assert!(first.failed.is_empty() && first.prepared_now == first.samples && first.damaged == 0, "{}", first.describe());
        let set = crate::prepare::PreparedSet::load(&opts.out).unwrap();

        // One tensor cut to 1 kB, the index overwritten with garbage.
        let mut files = opts.out.join("samples").read_dir().unwrap().map(|e| e.unwrap().path());
        let victim = files.find(|p| p.extension().is_some_and(|e| e == "npy")).unwrap();
        let bytes = std::fs::read(&victim).unwrap();
        std::fs::write(&victim, &bytes[..1024]).unwrap();
        std::fs::write(opts.out.join("index.json"), "garbage").unwrap();

        let again = prepare(&opts).unwrap();
        assert_eq!((again.damaged, again.prepared_now, again.reused), (1, 1, first.samples - 1), "{}", again.describe());
        assert!(again.describe().contains("1 damaged in the cache"), "{}", again.describe());
        assert!(again.replaced_index.as_deref().is_some_and(|r| r.contains("not valid JSON")), "{:?}", again.replaced_index);
        assert_eq!(std::fs::read(&victim).unwrap(), bytes);
        let repaired = crate::prepare::PreparedSet::load(&opts.out).unwrap();
        assert_eq!(repaired.data, set.data);
        assert_eq!(repaired.summary["damaged"], 1);

        let third = prepare(&opts).unwrap();
        assert_eq!((third.damaged, third.prepared_now, third.replaced_index), (0, 0, None));
    }
}
