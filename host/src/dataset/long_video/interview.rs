//! Interview clips: one face filmed at length with expressions at known frames, as written by
//! `mer synth interview --out DIR` (and any generator writing the same layout).
//!
//! Layout read (ROOT = the folder given to [`super::load_long_videos`]):
//! ```text
//! ROOT/truth.json                 one clip: ROOT is the folder `mer synth interview --out` wrote
//! ROOT/frames/000046.jpg          frames; the number in the name is the frame number (000046 = 46)
//! ROOT/<clip>/truth.json          or several clips, one sub-folder each
//! ROOT/<clip>/frames/000046.jpg
//! ```
//! A ROOT holding `truth.json` is one clip; otherwise each sub-folder holding one is a clip, and
//! the others are noted as skipped. Each clip is a video whose id and subject are its folder's
//! name (each clip is one face). From `truth.json` the loader reads `fps` and `events`; each
//! event `{onset, apex, offset, emotion}` (frame numbers) is an interval, labelled with the
//! emotion, source "<clip>/truth.json event k". An event may say `"kind": "micro"` or
//! `"macro"`; without it, it is a micro-expression (what `mer synth interview` writes). Blinks
//! and the other fields are not intervals and are ignored. The interval rules of [`super`]
//! apply as to any annotation (frames are numbered from 0, so 0 is a frame).
//!
//! A missing or unreadable `truth.json`, one without a positive `fps`, an unknown `kind`, or a
//! clip without its `frames` folder is an error naming the file: these files come from a
//! program, so a broken one is a bug to see, not a wart to repair. There is no annotation sheet;
//! an `annotations` argument is refused rather than silently ignored.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use mer_shared::synth::interview::{FRAMES_DIR, TRUTH_FILE};
use serde::Deserialize;

use super::super::frames::subdirectories;
use super::super::interview::clip_name;
use super::super::safe_id;
use super::{Builder, ExpressionKind, KindMark, LongVideoKind, LongVideoSet, Mark, Row};

pub(super) const LAYOUT: &str = "truth.json and frames/000000.jpg… as written by `mer synth interview --out`, \
     or one such clip folder per sub-folder";

/// The part of a truth.json the loader reads.
#[derive(Debug, Deserialize)]
struct Truth {
    fps: f64,
    events: Vec<TruthEvent>,
}

#[derive(Debug, Deserialize)]
struct TruthEvent {
    onset: i64,
    #[serde(default)]
    apex: Option<i64>,
    offset: i64,
    #[serde(default)]
    emotion: String,
    #[serde(default)]
    kind: Option<ExpressionKind>,
}

pub(super) fn load(root: &Path, annotations: Option<&Path>) -> Result<LongVideoSet> {
    let kind = LongVideoKind::Interview;
    if let Some(given) = annotations {
        bail!("{}: {kind} takes no annotation sheet; each clip's {TRUTH_FILE} is its annotation (leave it out)", given.display());
    }
    let mut b = Builder::new(kind, root, None, root);
    if root.join(TRUTH_FILE).is_file() {
        load_clip(&mut b, &clip_name(root)?, root)?;
        return b.finish();
    }
    let mut clips = 0;
    for name in subdirectories(root)? {
        let dir = root.join(&name);
        if dir.join(TRUTH_FILE).is_file() {
            load_clip(&mut b, &name, &dir)?;
            clips += 1;
        } else {
            b.skip(&safe_id(&name), &name, format!("no {TRUTH_FILE} → folder left out: it holds no interview clip"));
        }
    }
    if clips == 0 {
        bail!("{}: no {TRUTH_FILE} in it or in any of its sub-folders; the {kind} root must hold {LAYOUT}", root.display());
    }
    b.finish()
}

/// Adds the clip in `dir`, named `name`, and its events.
fn load_clip(b: &mut Builder, name: &str, dir: &Path) -> Result<()> {
    let path = dir.join(TRUTH_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let truth: Truth = serde_json::from_str(&text).map_err(|e| anyhow!("{}: not a valid interview truth file: {e}", path.display()))?;
    if !(truth.fps.is_finite() && truth.fps > 0.0) {
        bail!("{}: fps {} is not a positive frame rate", path.display(), truth.fps);
    }
    let frames = dir.join(FRAMES_DIR);
    if !frames.is_dir() {
        bail!("{}: frame folder {} does not exist", path.display(), frames.display());
    }
    let id = safe_id(name);
    b.add_video(id.clone(), name.to_string(), &frames, truth.fps)?;
    for (k, event) in truth.events.into_iter().enumerate() {
        b.add_row(Row {
            video: id.clone(),
            dir: frames.clone(),
            onset: Mark::Number(event.onset),
            apex: event.apex.map_or(Mark::Text(String::new()), Mark::Number),
            offset: Mark::Number(event.offset),
            kind: KindMark::Stated(event.kind.unwrap_or(ExpressionKind::Micro)),
            label: event.emotion,
            source: format!("{name}/{TRUTH_FILE} event {k}"),
            at: format!("{} event {k}", path.display()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::load_long_videos;
    use super::*;
    use crate::dataset::testdata::write_frames;
    use mer_shared::synth::interview::{InterviewOptions, write_interview};
    use serde_json::json;

    /// A hand-written clip: tiny frames `numbers` and a truth.json with `events`.
    fn clip(dir: &Path, fps: f64, numbers: impl IntoIterator<Item = i64>, events: serde_json::Value) -> PathBuf {
        let numbers: Vec<i64> = numbers.into_iter().collect();
        write_frames(&dir.join(FRAMES_DIR), &numbers, |n| format!("{n:06}.jpg"));
        let truth = json!({"fps": fps, "frames": numbers.len(), "events": events, "blinks": [{"start_frame": 3, "frames": 4}]});
        std::fs::write(dir.join(TRUTH_FILE), serde_json::to_string_pretty(&truth).unwrap()).unwrap();
        dir.join(FRAMES_DIR)
    }

    #[test]
    fn reads_the_generator_output_as_one_video() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("take1");
        let opts = InterviewOptions { seconds: 3.0, fps: 20.0, width: 160, height: 160, seed: 4 };
        let truth = write_interview(&root, &opts, &|| {}).unwrap();
        assert!(!truth.events.is_empty());
        let set = load_long_videos(LongVideoKind::Interview, &root, None).unwrap();
        assert_eq!((set.annotations.as_deref(), set.videos.len()), (None, 1));
        let v = &set.videos[0];
        assert_eq!((v.id.as_str(), v.subject.as_str(), v.fps), ("take1", "take1", 20.0));
        assert_eq!(v.dir, root.join(FRAMES_DIR));
        assert_eq!(v.frames, (0..truth.frames as i64).collect::<Vec<_>>());
        let got: Vec<(i64, Option<i64>, i64, ExpressionKind, &str)> =
            v.intervals.iter().map(|i| (i.onset, i.apex, i.offset, i.kind, i.label.as_str())).collect();
        let want: Vec<(i64, Option<i64>, i64, ExpressionKind, &str)> = truth
            .events
            .iter()
            .map(|e| (e.onset as i64, Some(e.apex as i64), e.offset as i64, ExpressionKind::Micro, e.emotion.name()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(v.intervals[0].source, "take1/truth.json event 0");
        assert!(set.repairs.is_empty() && set.skipped.is_empty(), "{:?} {:?}", set.repairs, set.skipped);
    }

    #[test]
    fn a_folder_of_clips_with_kinds_and_warts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let a = clip(
            &root.join("a"),
            30.0,
            (0..=40).filter(|n| !(10..=12).contains(n)),
            json!([
                {"onset": 20, "apex": 24, "offset": 35, "emotion": "happiness", "kind": "macro"},
                {"onset": 2, "apex": 4, "offset": 7, "emotion": "surprise"},
                {"onset": 30, "offset": 50, "emotion": "", "kind": "micro"},
                {"onset": 9, "apex": 8, "offset": 5, "emotion": "fear"},
                {"onset": 60, "apex": 62, "offset": 64, "emotion": "fear"},
            ]),
        );
        clip(&root.join("b"), 60.0, 0..=20, json!([]));
        std::fs::create_dir_all(root.join("notes")).unwrap();
        let set = load_long_videos(LongVideoKind::Interview, root, None).unwrap();
        let ids: Vec<(&str, f64, usize)> = set.videos.iter().map(|v| (v.id.as_str(), v.fps, v.intervals.len())).collect();
        assert_eq!(ids, [("a", 30.0, 3), ("b", 60.0, 0)]);
        assert_eq!(set.videos[0].dir, a);
        use ExpressionKind::{Macro, Micro};
        let got: Vec<(i64, Option<i64>, i64, ExpressionKind, &str)> =
            set.videos[0].intervals.iter().map(|i| (i.onset, i.apex, i.offset, i.kind, i.label.as_str())).collect();
        assert_eq!(got, [(2, Some(4), 7, Micro, "surprise"), (20, Some(24), 35, Macro, "happiness"), (30, None, 40, Micro, "")]);
        let repairs: Vec<(&str, &str)> = set.repairs.iter().map(|n| (n.source.as_str(), n.message.as_str())).collect();
        assert_eq!(
            repairs,
            [
                ("a/frames", "frame gaps → frames left missing: 3 frames in 1 gap: 10..12"),
                ("a/truth.json event 2", "interval beyond the video → clipped to its frames: 30..50 → 30..40"),
                ("a/truth.json event 2", "apex missing → none: \"\""),
                ("a/truth.json event 2", "intervals overlap → both kept: 20..35 (a/truth.json event 0) and 30..40 (a/truth.json event 2)"),
            ]
        );
        let skipped: Vec<(&str, &str)> = set.skipped.iter().map(|n| (n.source.as_str(), n.message.as_str())).collect();
        assert_eq!(
            skipped,
            [
                ("a/truth.json event 3", "onset after offset → row skipped: onset 9 > offset 5"),
                ("a/truth.json event 4", "interval outside the video → row skipped: 60..64, video frames 0..40"),
                ("notes", "no truth.json → folder left out: it holds no interview clip"),
            ]
        );
        let s = set.summary();
        assert!(s.starts_with("interview: 2 videos of 2 subjects, 3 intervals (2 micro, 1 macro)"), "{s}");
        assert!(s.contains("frame rate: 30, 60 fps") && s.contains("videos without intervals: 1"), "{s}");
    }

    #[test]
    fn broken_clips_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        let err = load_long_videos(LongVideoKind::Interview, root, None).unwrap_err().to_string();
        assert!(err.contains("no truth.json") && err.contains("mer synth interview"), "{err}");

        let truth = root.join("empty/truth.json");
        let write = |v: serde_json::Value| std::fs::write(&truth, v.to_string()).unwrap();
        write(json!({"fps": 30, "events": [{"onset": 1, "apex": 2, "offset": 3, "kind": "mini"}]}));
        let err = load_long_videos(LongVideoKind::Interview, root, None).unwrap_err().to_string();
        assert!(err.contains(&truth.display().to_string()) && err.contains("unknown variant `mini`"), "{err}");
        write(json!({"events": []}));
        let err = load_long_videos(LongVideoKind::Interview, root, None).unwrap_err().to_string();
        assert!(err.contains("missing field `fps`"), "{err}");
        write(json!({"fps": 0, "events": []}));
        let err = load_long_videos(LongVideoKind::Interview, root, None).unwrap_err().to_string();
        assert!(err.contains("fps 0 is not a positive frame rate"), "{err}");
        write(json!({"fps": 25, "events": []}));
        let err = load_long_videos(LongVideoKind::Interview, root, None).unwrap_err().to_string();
        assert!(err.contains(&root.join("empty/frames").display().to_string()) && err.contains("does not exist"), "{err}");
        std::fs::create_dir_all(root.join("empty/frames")).unwrap();
        let err = load_long_videos(LongVideoKind::Interview, root, None).unwrap_err().to_string();
        assert!(err.contains("no video folder with frames"), "{err}");

        let err = load_long_videos(LongVideoKind::Interview, root, Some(&truth)).unwrap_err().to_string();
        assert!(err.contains("takes no annotation sheet"), "{err}");
    }
}
