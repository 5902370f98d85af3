//! Turning a sheet's onset/apex/offset marks into frame files that exist, repairing the known
//! annotation warts by fixed, reported rules.
//!
//! Two kinds of folder hold the frames. A *clip* folder (CASME II, SAMM, MMEW) holds just the
//! expression, so its first and last frames are trustworthy stand-ins for a missing onset or
//! offset. A *video* folder (CAS(ME)^3 part A) holds a whole recording with many expressions, so
//! a missing or inverted onset/offset cannot be recovered and the row is skipped.
//!
//! The rules, applied in this order (every application is reported):
//! 1. onset missing (blank, text, negative): clip → first frame of the folder; video → skip.
//! 2. offset missing (blank, text, 0, negative): clip → last frame of the folder; video → skip.
//! 3. offset before onset: clip → last frame of the folder; video → skip.
//! 4. video only: onset after the video's last frame or offset before its first → skip.
//! 5. onset or offset without a file: nearest existing frame number (outside the folder's range
//!    that is the nearer end frame).
//! 6. apex missing ("/", blank) or outside the resolved onset..offset (this includes
//!    onset > apex): middle frame of onset..offset, rounded down.
//! 7. apex without a file: nearest existing frame number.
//!
//! Messages read "<rule>: <details>", so a summary can group them by rule.

use std::path::PathBuf;

use super::frames::FrameFolder;
use super::sheet::Cell;

/// A key-frame mark as the sheet gives it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Mark {
    Frame(i64),
    /// Blank, "/", or other text that is no frame number; the raw text is kept for messages.
    Missing(String),
}

impl Mark {
    /// A cell as a frame mark; negative numbers are the sheets' way of saying "unknown".
    pub(super) fn of(cell: &Cell) -> Mark {
        match cell.integer() {
            Some(n) if n >= 0 => Mark::Frame(n),
            _ => Mark::Missing(cell.text()),
        }
    }

    /// Like [`Mark::of`], but 0 also means unknown (CASME II writes offset 0 for "not coded").
    pub(super) fn of_offset(cell: &Cell) -> Mark {
        match Mark::of(cell) {
            Mark::Frame(0) => Mark::Missing(cell.text()),
            mark => mark,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Marks {
    pub onset: Mark,
    pub apex: Mark,
    pub offset: Mark,
}

impl Marks {
    /// The key-frame cells of a sheet row describing one clip (offset 0 or −1 = not given).
    pub fn of_clip(onset: &Cell, apex: &Cell, offset: &Cell) -> Marks {
        Marks { onset: Mark::of(onset), apex: Mark::of(apex), offset: Mark::of_offset(offset) }
    }
}

/// What a frame folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Extent {
    Clip,
    Video,
}

/// Frame numbers and files of one sample.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct KeyFrames {
    pub onset: i64,
    pub apex: i64,
    pub offset: i64,
    /// The first frame of the clip: the folder's first for a clip folder, the onset for a video.
    pub first: PathBuf,
    pub onset_path: PathBuf,
    pub apex_path: PathBuf,
    pub offset_path: PathBuf,
}

/// Resolves `marks` against `folder` (not empty). `Ok` carries the repair messages; `Err` is
/// the reason the row cannot be used.
pub(super) fn resolve(marks: &Marks, folder: &FrameFolder, extent: Extent) -> Result<(KeyFrames, Vec<String>), String> {
    let mut repairs = Vec::new();
    let (first, last) = (folder.first(), folder.last());
    let clip = extent == Extent::Clip;

    let onset = match &marks.onset {
        Mark::Frame(n) => *n,
        Mark::Missing(raw) if clip => {
            repairs.push(format!("onset missing → first frame of the clip folder: {raw:?} → {first}"));
            first
        }
        Mark::Missing(raw) => return Err(format!("onset missing in a whole-video folder: {raw:?}")),
    };
    let offset = match &marks.offset {
        Mark::Frame(n) if *n >= onset => *n,
        Mark::Frame(n) if clip => {
            repairs.push(format!("offset before onset → last frame of the clip folder: offset {n} < onset {onset} → {last}"));
            last
        }
        Mark::Frame(n) => {
            return Err(format!("offset before onset in a whole-video folder: offset {n} < onset {onset}"));
        }
        Mark::Missing(raw) if clip => {
            repairs.push(format!("offset missing → last frame of the clip folder: {raw:?} → {last}"));
            last
        }
        Mark::Missing(raw) => return Err(format!("offset missing in a whole-video folder: {raw:?}")),
    };
    if !clip && (onset > last || offset < first) {
        return Err(format!("clip outside the video's frames: onset..offset {onset}..{offset}, video frames {first}..{last}"));
    }

    let onset = snap("onset", onset, folder, &mut repairs);
    let offset = snap("offset", offset, folder, &mut repairs);
    let middle = onset + (offset - onset) / 2;
    let apex = match &marks.apex {
        Mark::Frame(n) if (onset..=offset).contains(n) => *n,
        Mark::Frame(n) => {
            repairs.push(format!("apex outside onset..offset → middle frame: apex {n} not in {onset}..{offset} → {middle}"));
            middle
        }
        Mark::Missing(raw) => {
            repairs.push(format!("apex missing → middle frame of onset..offset: {raw:?} → {middle}"));
            middle
        }
    };
    let apex = snap("apex", apex, folder, &mut repairs);

    let first_path = if clip { folder.path(first) } else { folder.path(onset) };
    let frames = KeyFrames {
        onset,
        apex,
        offset,
        first: first_path.to_path_buf(),
        onset_path: folder.path(onset).to_path_buf(),
        apex_path: folder.path(apex).to_path_buf(),
        offset_path: folder.path(offset).to_path_buf(),
    };
    Ok((frames, repairs))
}

/// `n` itself if its file exists, else the nearest existing frame (reported).
fn snap(what: &str, n: i64, folder: &FrameFolder, repairs: &mut Vec<String>) -> i64 {
    if folder.contains(n) {
        return n;
    }
    let m = folder.nearest(n);
    let (first, last) = (folder.first(), folder.last());
    if n < first || n > last {
        repairs.push(format!("frame outside the folder → nearest end frame: {what} {n} → {m} (folder holds {first}..{last})"));
    } else {
        repairs.push(format!("frame file missing → nearest existing frame: {what} {n} → {m}"));
    }
    m
}

/// The rule part of a "<rule>: <details>" message.
pub(super) fn rule_of(message: &str) -> &str {
    message.split_once(": ").map_or(message, |(rule, _)| rule)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::testdata::write_frames;

    fn folder(numbers: &[i64]) -> (tempfile::TempDir, FrameFolder) {
        let dir = tempfile::tempdir().unwrap();
        write_frames(dir.path(), numbers, |n| format!("img{n}.jpg"));
        let folder = FrameFolder::list(dir.path()).unwrap();
        (dir, folder)
    }

    fn marks(onset: Mark, apex: Mark, offset: Mark) -> Marks {
        Marks { onset, apex, offset }
    }

    use Mark::{Frame as F, Missing as M};

    #[test]
    fn clean_marks_pass_through() {
        let (dir, f) = folder(&(10..=30).collect::<Vec<_>>());
        let (k, repairs) = resolve(&marks(F(12), F(20), F(28)), &f, Extent::Clip).unwrap();
        assert!(repairs.is_empty(), "{repairs:?}");
        assert_eq!((k.onset, k.apex, k.offset), (12, 20, 28));
        assert_eq!(k.first, dir.path().join("img10.jpg"));
        assert_eq!(k.apex_path, dir.path().join("img20.jpg"));
        let (k, _) = resolve(&marks(F(12), F(20), F(28)), &f, Extent::Video).unwrap();
        assert_eq!(k.first, dir.path().join("img12.jpg"));
    }

    #[test]
    fn missing_apex_becomes_the_middle_frame() {
        let (_d, f) = folder(&(10..=30).collect::<Vec<_>>());
        let (k, repairs) = resolve(&marks(F(11), M("/".into()), F(20)), &f, Extent::Clip).unwrap();
        assert_eq!(k.apex, 15);
        assert_eq!(repairs, vec!["apex missing → middle frame of onset..offset: \"/\" → 15".to_string()]);
        assert_eq!(rule_of(&repairs[0]), "apex missing → middle frame of onset..offset");
    }

    #[test]
    fn apex_outside_the_interval_or_before_onset_becomes_the_middle_frame() {
        let (_d, f) = folder(&(10..=30).collect::<Vec<_>>());
        for apex in [29, 9, 11] {
            let (k, repairs) = resolve(&marks(F(12), F(apex), F(20)), &f, Extent::Clip).unwrap();
            assert_eq!(k.apex, 16, "apex {apex}");
            assert!(repairs[0].starts_with("apex outside onset..offset → middle frame"), "{repairs:?}");
        }
    }

    #[test]
    fn missing_zero_or_negative_offset_becomes_the_last_clip_frame() {
        let (_d, f) = folder(&(10..=30).collect::<Vec<_>>());
        for cell in [Cell::Number(0.0), Cell::Number(-1.0), Cell::Empty, Cell::Text("/".into())] {
            let m = marks(F(12), F(14), Mark::of_offset(&cell));
            let (k, repairs) = resolve(&m, &f, Extent::Clip).unwrap();
            assert_eq!(k.offset, 30);
            assert!(repairs[0].starts_with("offset missing → last frame of the clip folder"), "{repairs:?}");
            assert_eq!(resolve(&m, &f, Extent::Video).unwrap_err().split(':').next(), Some("offset missing in a whole-video folder"));
        }
        assert_eq!(Mark::of(&Cell::Number(0.0)), F(0));
    }

    #[test]
    fn offset_before_onset_is_repaired_in_clips_and_skipped_in_videos() {
        let (_d, f) = folder(&(10..=30).collect::<Vec<_>>());
        let m = marks(F(20), F(22), F(15));
        let (k, repairs) = resolve(&m, &f, Extent::Clip).unwrap();
        assert_eq!((k.onset, k.apex, k.offset), (20, 22, 30));
        assert!(repairs[0].starts_with("offset before onset → last frame of the clip folder"));
        assert!(resolve(&m, &f, Extent::Video).unwrap_err().starts_with("offset before onset in a whole-video folder"));
    }

    #[test]
    fn missing_onset_is_the_first_clip_frame_and_a_skip_in_videos() {
        let (_d, f) = folder(&(10..=30).collect::<Vec<_>>());
        let m = marks(M(String::new()), F(14), F(20));
        let (k, repairs) = resolve(&m, &f, Extent::Clip).unwrap();
        assert_eq!(k.onset, 10);
        assert!(repairs[0].starts_with("onset missing → first frame of the clip folder"));
        assert!(resolve(&m, &f, Extent::Video).unwrap_err().starts_with("onset missing in a whole-video folder"));
    }

    #[test]
    fn gaps_and_out_of_range_frames_snap_to_the_nearest_file() {
        let (dir, f) = folder(&[10, 11, 12, 14, 15, 16, 17, 18, 19, 20]);
        let (k, repairs) = resolve(&marks(F(5), F(13), F(25)), &f, Extent::Clip).unwrap();
        assert_eq!((k.onset, k.apex, k.offset), (10, 12, 20));
        assert_eq!(k.apex_path, dir.path().join("img12.jpg"));
        assert_eq!(
            repairs,
            vec![
                "frame outside the folder → nearest end frame: onset 5 → 10 (folder holds 10..20)".to_string(),
                "frame outside the folder → nearest end frame: offset 25 → 20 (folder holds 10..20)".to_string(),
                "frame file missing → nearest existing frame: apex 13 → 12".to_string(),
            ]
        );
    }

    #[test]
    fn a_clip_beyond_the_video_is_skipped() {
        let (_d, f) = folder(&(100..=140).collect::<Vec<_>>());
        let err = resolve(&marks(F(150), F(155), F(160)), &f, Extent::Video).unwrap_err();
        assert!(err.starts_with("clip outside the video's frames"), "{err}");
        let (k, repairs) = resolve(&marks(F(130), F(135), F(160)), &f, Extent::Video).unwrap();
        assert_eq!((k.onset, k.apex, k.offset), (130, 135, 140));
        assert_eq!(repairs.len(), 1);
    }
}
