//! Synthetic interview clips written by `mer synth interview`: one face filmed at length with
//! several micro-expressions at known frames, prepared and trained on like the licensed datasets.
//!
//! Layout read (ROOT = the folder given to [`super::load`]):
//! ```text
//! ROOT/truth.json                 one clip: ROOT is the folder `mer synth interview --out` wrote
//! ROOT/frames/000046.jpg          frames; the number in the name is the frame index (000046 = 46)
//! ROOT/<clip>/truth.json          or several clips, one sub-folder each
//! ROOT/<clip>/frames/000046.jpg
//! ```
//! A ROOT holding `truth.json` is read as one clip; otherwise each sub-folder holding one is a
//! clip, and the others are reported as skipped. Entry k of the `events` list of `truth.json`
//! (onset, apex and offset frame indices and the emotion), counted from 0, is one sample with
//! id `<clip>_e<k>` (k written with at least two digits, e.g. `take1_e03`) and source
//! "<clip>/truth.json event k". The subject is the clip folder's name: each clip is one face
//! identity. The emotions are CASME II's, so the class sets are CASME II's; labels a class set
//! excludes (sadness and fear; `casme2-3` also others) are reported as skipped.
//!
//! A clip is a whole recording, so `first` is the event's onset frame: the face box is found on
//! it. Key frames are looked up by the number in the file name, never by listing position.
//! Nothing is repaired: `truth.json` comes from the generator, so a missing or unreadable
//! `truth.json`, a missing `frames` folder, key frames out of order (onset > apex or
//! apex > offset), an index beyond the clip's frame count or a key frame without its file is an
//! error naming the file and the event, even for an event whose label is excluded. There is no
//! annotation sheet: each clip's `truth.json` is its annotation, and an `annotations` argument
//! is refused rather than silently ignored.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use mer_shared::labels::{LabelMapping, Taxonomy};
use mer_shared::synth::interview::{FRAMES_DIR, TRUTH_FILE};
use serde::Deserialize;

use super::frames::{FrameFolder, subdirectories};
use super::{ClipSample, DatasetKind, LoadedDataset, safe_id};

pub(super) const LAYOUT: &str = "truth.json and frames/000000.jpg… as written by `mer synth interview --out`, \
     or one such clip folder per sub-folder";

/// The part of `mer_shared::synth::interview::InterviewTruth` the loader reads; other fields
/// (fps, face box, blinks, ...) are ignored.
#[derive(Debug, Deserialize)]
struct Truth {
    /// Frames in the clip; event indices lie in 0..frames.
    frames: usize,
    events: Vec<TruthEvent>,
}

#[derive(Debug, Deserialize)]
struct TruthEvent {
    onset: usize,
    apex: usize,
    offset: usize,
    /// Lower-case CASME II emotion name, e.g. "happiness".
    emotion: String,
}

pub(super) fn load(root: &Path, annotations: Option<&Path>, taxonomy: Taxonomy) -> Result<LoadedDataset> {
    let kind = DatasetKind::Interview;
    if let Some(given) = annotations {
        bail!("{}: {kind} takes no annotation sheet; each clip's {TRUTH_FILE} is its annotation (leave it out)", given.display());
    }
    let mut dataset = LoadedDataset::new(kind, taxonomy, root, None);
    if root.join(TRUTH_FILE).is_file() {
        load_clip(&mut dataset, &clip_name(root)?, root)?;
        return Ok(dataset);
    }
    let mut clips = 0;
    for name in subdirectories(root)? {
        let dir = root.join(&name);
        if dir.join(TRUTH_FILE).is_file() {
            load_clip(&mut dataset, &name, &dir)?;
            clips += 1;
        } else {
            dataset.skip(&safe_id(&name), &name, format!("no {TRUTH_FILE}: the folder holds no interview clip"));
        }
    }
    if clips == 0 {
        bail!("{}: no {TRUTH_FILE} in it or in any of its sub-folders; the {kind} root must hold {LAYOUT}", root.display());
    }
    Ok(dataset)
}

/// The clip's name: its folder's name (resolved when the path ends in "." or "..").
pub(super) fn clip_name(dir: &Path) -> Result<String> {
    let name = match dir.file_name() {
        Some(name) => name.to_os_string(),
        None => dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", dir.display()))?
            .file_name()
            .ok_or_else(|| anyhow!("{}: a clip folder needs a name (it is the subject)", dir.display()))?
            .to_os_string(),
    };
    Ok(name.to_string_lossy().into_owned())
}

/// Adds every event of the clip in `dir`, named `name`, to `dataset`.
fn load_clip(dataset: &mut LoadedDataset, name: &str, dir: &Path) -> Result<()> {
    let taxonomy = dataset.taxonomy;
    let path = dir.join(TRUTH_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let truth: Truth = serde_json::from_str(&text).map_err(|e| anyhow!("{}: not a valid interview truth file: {e}", path.display()))?;
    let frames_dir = dir.join(FRAMES_DIR);
    if !frames_dir.is_dir() {
        bail!("{}: frame folder {} does not exist", path.display(), frames_dir.display());
    }
    let folder = FrameFolder::list(&frames_dir)?;
    for (k, event) in truth.events.iter().enumerate() {
        let at = format!("{} event {k}", path.display());
        if event.onset > event.apex || event.apex > event.offset {
            bail!(
                "{at}: key frames out of order: onset {}, apex {}, offset {}; expected onset ≤ apex ≤ offset",
                event.onset,
                event.apex,
                event.offset
            );
        }
        let mut files = Vec::with_capacity(3);
        for (what, n) in [("onset", event.onset), ("apex", event.apex), ("offset", event.offset)] {
            if n >= truth.frames {
                bail!("{at}: {what} frame {n} is beyond the clip's {} frames (indices start at 0)", truth.frames);
            }
            match i64::try_from(n).ok().filter(|&n| folder.contains(n)) {
                Some(n) => files.push(folder.path(n).to_path_buf()),
                None => bail!("{at}: {what} frame {n} has no image file in {}", frames_dir.display()),
            }
        }
        let id = safe_id(&format!("{name}_e{k:02}"));
        let source = format!("{name}/{TRUTH_FILE} event {k}");
        let class = match taxonomy.map(&event.emotion) {
            Ok(LabelMapping::Class(i)) => i,
            Ok(LabelMapping::Excluded) => {
                dataset.tally.record(taxonomy, &event.emotion)?;
                dataset.skip(&id, &source, format!("label excluded from {taxonomy}: {}", event.emotion));
                continue;
            }
            Err(e) => bail!("{at}: {e}"),
        };
        dataset.tally.record(taxonomy, &event.emotion)?;
        let [onset, apex, offset]: [_; 3] = files.try_into().expect("three key frames");
        dataset.samples.push(ClipSample {
            id,
            subject: name.to_string(),
            raw_label: event.emotion.clone(),
            class,
            first: onset.clone(),
            onset,
            apex,
            offset,
            source,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::dataset::load;
    use mer_shared::synth::interview::{InterviewOptions, InterviewTruth, write_interview};

    /// A 5 s, 30 fps clip written by the generator into `dir`. Seed 4 draws happiness then
    /// surprise, seed 5 fear then happiness, seed 6 happiness then sadness.
    fn clip(dir: &Path, seed: u64) -> InterviewTruth {
        let opts = InterviewOptions { seconds: 5.0, fps: 30.0, width: 160, height: 160, seed };
        write_interview(dir, &opts, &|| {}).unwrap()
    }

    fn emotions(truth: &InterviewTruth) -> Vec<&'static str> {
        truth.events.iter().map(|e| e.emotion.name()).collect()
    }

    fn frame(dir: &Path, n: usize) -> PathBuf {
        dir.join(FRAMES_DIR).join(format!("{n:06}.jpg"))
    }

    /// Rewrites field `key` of event `k` in `dir`'s truth.json.
    fn edit_event(dir: &Path, k: usize, key: &str, value: serde_json::Value) {
        let path = dir.join(TRUTH_FILE);
        let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        json["events"][k][key] = value;
        std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    }

    #[test]
    fn every_event_of_one_clip_is_a_sample() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("take1");
        let truth = clip(&root, 5);
        assert_eq!(emotions(&truth), ["fear", "happiness"]);
        // Without the first ten files, listing positions and frame numbers differ.
        for n in 0..10 {
            std::fs::remove_file(frame(&root, n)).unwrap();
        }
        let d = load(DatasetKind::Interview, &root, None, Taxonomy::Casme2Five).unwrap();
        assert_eq!(d.annotations, None);
        assert!(d.repairs.is_empty());
        assert_eq!(d.subjects(), ["take1"]);
        assert_eq!(d.samples.len(), 1);
        let (s, e) = (&d.samples[0], &truth.events[1]);
        assert_eq!((s.id.as_str(), s.subject.as_str(), s.raw_label.as_str(), s.class), ("take1_e01", "take1", "happiness", 0));
        assert_eq!(s.first, frame(&root, e.onset));
        assert_eq!(s.onset, frame(&root, e.onset));
        assert_eq!(s.apex, frame(&root, e.apex));
        assert_eq!(s.offset, frame(&root, e.offset));
        assert!(s.onset.is_file() && s.apex.is_file() && s.offset.is_file());
        assert_eq!(s.source, "take1/truth.json event 1");
        let skipped: Vec<(&str, &str, &str)> =
            d.skipped.iter().map(|n| (n.sample.as_str(), n.source.as_str(), n.message.as_str())).collect();
        assert_eq!(skipped, [("take1_e00", "take1/truth.json event 0", "label excluded from casme2-5: fear")]);
        assert_eq!(d.tally.skipped["fear"], 1);

        // A root written as "take1/." is the same clip with the same name.
        let dotted = load(DatasetKind::Interview, &root.join("."), None, Taxonomy::Casme2Five).unwrap();
        assert_eq!(dotted.samples[0].id, "take1_e01");
    }

    #[test]
    fn a_folder_of_clips_gives_one_subject_per_clip() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (a, b) = (root.join("clip a"), root.join("b"));
        let truth_a = clip(&a, 4);
        let truth_b = clip(&b, 6);
        assert_eq!(emotions(&truth_a), ["happiness", "surprise"]);
        assert_eq!(emotions(&truth_b), ["happiness", "sadness"]);
        edit_event(&b, 0, "emotion", "fear".into());
        edit_event(&b, 1, "emotion", "others".into());
        std::fs::create_dir_all(root.join("notes")).unwrap();
        std::fs::create_dir_all(root.join(".cache")).unwrap();

        let d = load(DatasetKind::Interview, root, None, Taxonomy::Casme2Five).unwrap();
        assert_eq!(d.annotations, None);
        assert_eq!(d.subjects(), ["b", "clip a"]);
        let got: Vec<(&str, &str, &str, usize)> =
            d.samples.iter().map(|s| (s.id.as_str(), s.subject.as_str(), s.raw_label.as_str(), s.class)).collect();
        assert_eq!(got, [("b_e01", "b", "others", 4), ("clip_a_e00", "clip a", "happiness", 0), ("clip_a_e01", "clip a", "surprise", 1),]);
        let s = &d.samples[2];
        assert_eq!(s.first, frame(&a, truth_a.events[1].onset));
        assert_eq!(s.apex, frame(&a, truth_a.events[1].apex));
        assert_eq!(s.offset, frame(&a, truth_a.events[1].offset));
        assert_eq!(s.source, "clip a/truth.json event 1");
        assert_eq!(d.samples[0].apex, frame(&b, truth_b.events[1].apex));
        let skipped: Vec<(&str, &str, &str)> =
            d.skipped.iter().map(|n| (n.sample.as_str(), n.source.as_str(), n.message.as_str())).collect();
        assert_eq!(
            skipped,
            [
                ("b_e00", "b/truth.json event 0", "label excluded from casme2-5: fear"),
                ("notes", "notes", "no truth.json: the folder holds no interview clip"),
            ]
        );
        let summary = d.summary();
        assert!(summary.starts_with("interview (casme2-5): 3 samples from 2 subjects"), "{summary}");
        assert!(summary.contains("1 × no truth.json") && summary.contains("excluded labels: fear 1"), "{summary}");

        let three = load(DatasetKind::Interview, root, None, Taxonomy::Casme2Three).unwrap();
        let got: Vec<(&str, usize)> = three.samples.iter().map(|s| (s.id.as_str(), s.class)).collect();
        assert_eq!(got, [("clip_a_e00", 1), ("clip_a_e01", 2)]);
        assert_eq!(three.tally.skipped["others"], 1);
        assert_eq!(three.tally.skipped["fear"], 1);
    }

    #[test]
    fn no_truth_file_or_a_broken_one_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        let err = load(DatasetKind::Interview, root, None, Taxonomy::Casme2Five).unwrap_err().to_string();
        assert!(err.contains(&root.display().to_string()) && err.contains("no truth.json"), "{err}");
        assert!(err.contains("mer synth interview"), "{err}");

        std::fs::write(root.join("empty/truth.json"), "{\"frames\": 10, \"events\": [{\"onset\": 1}]}").unwrap();
        let err = load(DatasetKind::Interview, root, None, Taxonomy::Casme2Five).unwrap_err().to_string();
        assert!(err.contains(&root.join("empty/truth.json").display().to_string()), "{err}");
        assert!(err.contains("missing field `apex`"), "{err}");

        std::fs::write(root.join("empty/truth.json"), "{\"frames\": 10, \"events\": []}").unwrap();
        let err = load(DatasetKind::Interview, root, None, Taxonomy::Casme2Five).unwrap_err().to_string();
        assert!(err.contains(&root.join("empty/truth.json").display().to_string()), "{err}");
        assert!(err.contains(&root.join("empty/frames").display().to_string()) && err.contains("does not exist"), "{err}");

        let given = root.join("empty/truth.json");
        let err = load(DatasetKind::Interview, root, Some(&given), Taxonomy::Casme2Five).unwrap_err().to_string();
        assert!(err.contains("takes no annotation sheet"), "{err}");
    }

    #[test]
    fn a_bad_event_is_an_error_naming_file_and_event() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("take2");
        let truth = clip(&root, 5);
        let at = format!("{} event 0", root.join("truth.json").display());
        // Event 0 is fear, which casme2-5 excludes; a broken event is an error all the same.
        let e = &truth.events[0];
        assert_eq!(e.emotion.name(), "fear");
        let load_err = || load(DatasetKind::Interview, &root, None, Taxonomy::Casme2Five).unwrap_err().to_string();

        std::fs::remove_file(frame(&root, e.apex)).unwrap();
        let err = load_err();
        assert!(err.contains(&at) && err.contains(&format!("apex frame {} has no image file", e.apex)), "{err}");
        assert!(err.contains(&root.join("frames").display().to_string()), "{err}");
        std::fs::copy(frame(&root, e.onset), frame(&root, e.apex)).unwrap();

        edit_event(&root, 0, "onset", (e.apex + 1).into());
        let err = load_err();
        assert!(err.contains(&at) && err.contains("out of order"), "{err}");
        assert!(err.contains(&format!("onset {}, apex {}", e.apex + 1, e.apex)), "{err}");

        edit_event(&root, 0, "onset", e.onset.into());
        edit_event(&root, 0, "apex", (e.offset + 1).into());
        assert!(load_err().contains("out of order"), "{}", load_err());

        edit_event(&root, 0, "apex", e.apex.into());
        edit_event(&root, 0, "offset", truth.frames.into());
        let err = load_err();
        assert!(err.contains(&at), "{err}");
        assert!(err.contains(&format!("offset frame {} is beyond the clip's {} frames", truth.frames, truth.frames)), "{err}");

        edit_event(&root, 0, "offset", e.offset.into());
        edit_event(&root, 0, "emotion", "hapiness".into());
        let err = load_err();
        assert!(err.contains(&at) && err.contains("\"hapiness\""), "{err}");
    }
}
