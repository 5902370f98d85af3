//! SAMM Long Videos: 147 long videos of 32 subjects filmed at 200 fps, with 343 macro- and 159
//! micro-movements marked in them (the MEGC spotting benchmark "SAMM-LV").
//!
//! Layout read (ROOT = the folder given to [`super::load_long_videos`]):
//! ```text
//! ROOT/SAMM_longvideos/006_1/006_1_0001.jpg     frames; the digits after the last '_' are the frame number
//! ROOT/SAMM_LongVideos_V1_Release.xlsx          annotation sheet (V2/V3 releases preferred when present)
//! ```
//! ROOT may also be `SAMMLV` holding both, or the `SAMM_longvideos` folder itself when the sheet
//! is passed explicitly. A video folder is `<subject>_<video>` ("006_1"); its subject is the part
//! before '_'. Sheet: description rows, then the header row (row 10 in the releases seen) with
//! Subject, Filename, Inducement Code, Onset, Apex, Offset, Duration, Type, Action Units, Notes;
//! the header is found by its content. Filename "006_1_2" is expression 2 of video "006_1".
//! Type is "Micro - 1/2" or "Macro". There is no emotion column, so intervals are labelled with
//! their action units.
//!
//! Confirmed from public loaders of the official release (MEGC baselines, SOFTNet and others):
//! the folder names and frame files numbered from 1 with four digits, the sheet names V1/V2/V3,
//! the worksheet `FACS_Movement_Only` with ten description rows before the data, the column
//! order, the Filename → video rule, the two type words, and apex −1 meaning none. Assumed: the
//! exact header spelling (columns are matched ignoring case, spaces and a trailing "Frame"),
//! and that an offset of 0 or −1 also means "not coded" (rule 1 of [`super`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::super::frames::subdirectories;
use super::super::sheet::{Column, Sheet};
use super::super::{locate_dir, locate_sheet, safe_id};
use super::{Builder, KindMark, LongVideoKind, LongVideoSet, Mark, Row};

pub(super) const LAYOUT: &str = "SAMM_longvideos/006_1/006_1_0001.jpg and the sheet SAMM_LongVideos_V1_Release.xlsx \
     (or V2/V3; header row below description rows)";
pub(super) const FPS: f64 = 200.0;

const SHEET_NAMES: &[&str] = &["SAMM_LongVideos_V3_Release.xlsx", "SAMM_LongVideos_V2_Release.xlsx", "SAMM_LongVideos_V1_Release.xlsx"];
const SHEET_DIRS: &[&str] = &["", "SAMMLV", "SAMM_longvideos"];
const FRAME_DIRS: &[&str] = &["SAMM_longvideos", "SAMMLV/SAMM_longvideos", "SAMM_LongVideos"];

const FILENAME: Column = Column(&["Filename"]);
const ONSET: Column = Column(&["Onset", "Onset Frame"]);
const APEX: Column = Column(&["Apex", "Apex Frame"]);
const OFFSET: Column = Column(&["Offset", "Offset Frame"]);
const TYPE: Column = Column(&["Type"]);
const ACTION_UNITS: Column = Column(&["Action Units", "AU", "AUs"]);

pub(super) fn load(root: &Path, annotations: Option<&Path>) -> Result<LongVideoSet> {
    let kind = LongVideoKind::SammLv;
    let sheet_path = locate_sheet(root, annotations, SHEET_DIRS, SHEET_NAMES, kind)?;
    let frames = frames_dir(root)?;
    let sheet = Sheet::read(&sheet_path, &[FILENAME, ONSET, APEX, OFFSET])?;
    let [filename, onset, apex, offset] = [FILENAME, ONSET, APEX, OFFSET].map(|c| sheet.column(c).expect("header holds it"));
    let (type_column, action_units) = (sheet.optional_column(TYPE), sheet.optional_column(ACTION_UNITS));
    let mut b = Builder::new(kind, root, Some(sheet_path.clone()), &frames);

    // lower-case folder name → video id
    let mut videos: HashMap<String, String> = HashMap::new();
    for name in subdirectories(&frames)? {
        let dir = frames.join(&name);
        let Some((subject, video)) = video_of(&name) else {
            let place = b.place(&dir);
            b.skip(&safe_id(&name), &place, format!("not a video folder (NNN_N) → left out: {name:?}"));
            continue;
        };
        let id = safe_id(&video);
        videos.insert(video.to_lowercase(), id.clone());
        b.add_video(id, subject, &dir, FPS)?;
    }

    for row in &sheet.rows {
        let source = sheet.source(row);
        let name = row.cell(filename).text();
        let Some((_, video)) = video_of(&name) else {
            let message = if name.is_empty() {
                "row without a video name → skipped: column \"Filename\" is blank".to_string()
            } else {
                format!("Filename names no video (NNN_N_K) → row skipped: {name:?}")
            };
            b.skip(&safe_id(&name), &source, message);
            continue;
        };
        let id = videos.get(&video.to_lowercase()).cloned().unwrap_or_else(|| safe_id(&video));
        let kind = type_column.map_or(KindMark::Unstated(String::new()), |c| KindMark::of_text(&row.cell(c).text()));
        b.add_row(Row {
            video: id,
            dir: frames.join(&video),
            onset: Mark::of(row.cell(onset)),
            apex: Mark::of(row.cell(apex)),
            offset: Mark::of(row.cell(offset)),
            kind,
            label: action_units.map(|c| row.cell(c).text()).unwrap_or_default(),
            source,
            at: sheet.at(row),
        });
    }
    b.finish()
}

/// `ROOT/SAMM_longvideos` (and the other known places), or ROOT itself when it directly holds
/// video folders.
fn frames_dir(root: &Path) -> Result<PathBuf> {
    let holds_videos = subdirectories(root)?.iter().any(|d| video_of(d).is_some());
    if holds_videos && !FRAME_DIRS.iter().any(|d| root.join(d).is_dir()) {
        return Ok(root.to_path_buf());
    }
    locate_dir(root, FRAME_DIRS, LongVideoKind::SammLv, "frame")
}

/// ("006", "006_1") from a folder name "006_1" or a Filename "006_1_2".
fn video_of(name: &str) -> Option<(String, String)> {
    let mut parts = name.trim().split('_');
    let (subject, video) = (parts.next()?, parts.next()?);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    (digits(subject) && digits(video)).then(|| (subject.to_string(), format!("{subject}_{video}")))
}

#[cfg(test)]
mod tests {
    use super::super::ExpressionKind::{self, Macro, Micro};
    use super::super::load_long_videos;
    use super::*;
    use crate::dataset::testdata::{X, write_frames, write_xlsx};

    fn header() -> Vec<X> {
        ["Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset", "Duration", "Type", "Action Units", "Notes"]
            .map(X::S)
            .to_vec()
    }

    fn row(subject: f64, name: &'static str, onset: f64, apex: f64, offset: f64, kind: &'static str) -> Vec<X> {
        use X::*;
        let kind = if kind.is_empty() { B } else { S(kind) };
        vec![N(subject), S(name), N(1.0), N(onset), N(apex), N(offset), N(offset - onset + 1.0), kind, S("R12"), B]
    }

    /// The release layout: nine rows of description, the header in row 10, data from row 11.
    fn sheet(path: &Path, rows: Vec<Vec<X>>) {
        let mut all = vec![vec![X::S("SAMM Long Videos: FACS coding of movements")], vec![]];
        for _ in 0..7 {
            all.push(vec![X::S("Onset"), X::S("the first frame of the movement")]);
        }
        all.push(header());
        all.extend(rows);
        write_xlsx(path, &[("FACS_Movement_Only", all)]);
    }

    fn video(root: &Path, name: &str, numbers: impl IntoIterator<Item = i64>) -> PathBuf {
        let numbers: Vec<i64> = numbers.into_iter().collect();
        let dir = root.join("SAMM_longvideos").join(name);
        write_frames(&dir, &numbers, |n| format!("{name}_{n:04}.jpg"));
        dir
    }

    #[test]
    fn reads_the_release_sheet_below_its_description_rows() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let a = video(root, "006_1", 1..=60);
        video(root, "006_2", (1..=20).filter(|n| *n != 7));
        video(root, "011_3", 1..=10);
        std::fs::create_dir_all(root.join("SAMM_longvideos/cropped")).unwrap();
        let path = root.join("SAMM_LongVideos_V1_Release.xlsx");
        sheet(
            &path,
            vec![
                row(6.0, "006_1_1", 5.0, 10.0, 20.0, "Micro - 1/2"),
                row(6.0, "006_1_2", 30.0, -1.0, 55.0, "Macro"),
                row(6.0, "006_1_3", 50.0, 55.0, 70.0, "Macro"),
                row(6.0, "006_2_1", 1.0, 3.0, 8.0, ""),
                row(7.0, "007_3_1", 1.0, 3.0, 8.0, "Micro - 1/2"),
                vec![X::B, X::B, X::B, X::B, X::B, X::B, X::B, X::B, X::B, X::S("total 5")],
            ],
        );
        let set = load_long_videos(LongVideoKind::SammLv, root, None).unwrap();
        assert_eq!(set.annotations.as_deref(), Some(path.as_path()));
        let got: Vec<(&str, &str, usize, f64)> =
            set.videos.iter().map(|v| (v.id.as_str(), v.subject.as_str(), v.frames.len(), v.fps)).collect();
        assert_eq!(got, [("006_1", "006", 60, 200.0), ("006_2", "006", 19, 200.0), ("011_3", "011", 10, 200.0)]);
        assert_eq!(set.videos[0].dir, a);
        let spans = |k: usize| -> Vec<(i64, Option<i64>, i64, ExpressionKind)> {
            set.videos[k].intervals.iter().map(|i| (i.onset, i.apex, i.offset, i.kind)).collect()
        };
        assert_eq!(spans(0), [(5, Some(10), 20, Micro), (30, None, 55, Macro), (50, Some(55), 60, Macro)]);
        assert_eq!(spans(1), [(1, Some(3), 8, Micro)]);
        assert!(set.videos[2].intervals.is_empty());
        let first = &set.videos[0].intervals[0];
        assert_eq!((first.label.as_str(), first.source.as_str()), ("R12", "SAMM_LongVideos_V1_Release.xlsx row 11"));

        let repairs: Vec<(&str, &str)> = set.repairs.iter().map(|n| (n.source.as_str(), n.message.as_str())).collect();
        assert_eq!(
            repairs,
            [
                ("SAMM_longvideos/006_2", "frame gaps → frames left missing: 1 frames in 1 gap: 7"),
                ("SAMM_LongVideos_V1_Release.xlsx row 12", "apex missing → none: \"-1\""),
                ("SAMM_LongVideos_V1_Release.xlsx row 13", "interval beyond the video → clipped to its frames: 50..70 → 50..60"),
                (
                    "SAMM_LongVideos_V1_Release.xlsx row 14",
                    "expression type missing → by duration (micro ≤ 0.5 s): \"\", 8 frames at 200 fps → micro"
                ),
                (
                    "SAMM_LongVideos_V1_Release.xlsx row 13",
                    "intervals overlap → both kept: 30..55 (SAMM_LongVideos_V1_Release.xlsx row 12) and 50..60 \
                     (SAMM_LongVideos_V1_Release.xlsx row 13)"
                ),
            ]
        );
        let skipped: Vec<(&str, String)> = set.skipped.iter().map(|n| (n.source.as_str(), n.message.clone())).collect();
        assert_eq!(
            skipped,
            [
                ("SAMM_longvideos/cropped", "not a video folder (NNN_N) → left out: \"cropped\"".to_string()),
                (
                    "SAMM_LongVideos_V1_Release.xlsx row 15",
                    format!("video folder missing → row skipped: {}", root.join("SAMM_longvideos/007_3").display())
                ),
                ("SAMM_LongVideos_V1_Release.xlsx row 16", "row without a video name → skipped: column \"Filename\" is blank".to_string()),
            ]
        );
        let s = set.summary();
        assert!(s.starts_with("samm-lv: 3 videos of 2 subjects, 4 intervals (2 micro, 2 macro)"), "{s}");
        assert!(s.contains("frame rate: 200 fps"), "{s}");
    }

    #[test]
    fn the_root_may_be_the_video_folder_with_the_sheet_given() {
        let dir = tempfile::tempdir().unwrap();
        video(dir.path(), "020_4", 100..=130);
        let path = dir.path().join("labels/SAMM_LongVideos_V2_Release.xlsx");
        sheet(&path, vec![row(20.0, "020_4_1", 101.0, 105.0, 112.0, "Micro - 1/2")]);
        let set = load_long_videos(LongVideoKind::SammLv, &dir.path().join("SAMM_longvideos"), Some(&path)).unwrap();
        assert_eq!(set.videos.len(), 1);
        assert_eq!(set.videos[0].intervals[0].offset, 112);
        assert!(set.repairs.is_empty() && set.skipped.is_empty(), "{:?} {:?}", set.repairs, set.skipped);
    }

    #[test]
    fn missing_sheet_column_or_frames_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let err = load_long_videos(LongVideoKind::SammLv, root, None).unwrap_err().to_string();
        assert!(err.contains("SAMM_LongVideos_V1_Release.xlsx") && err.contains("looked for"), "{err}");

        let path = root.join("SAMM_LongVideos_V1_Release.xlsx");
        sheet(&path, vec![row(6.0, "006_1_1", 5.0, 10.0, 20.0, "Micro - 1/2")]);
        let err = load_long_videos(LongVideoKind::SammLv, root, None).unwrap_err().to_string();
        assert!(err.contains("\"SAMM_longvideos\"") && err.contains("006_1_0001.jpg"), "{err}");

        video(root, "006_1", 1..=30);
        let no_offset: Vec<X> = header().into_iter().filter(|x| !matches!(x, X::S("Offset"))).collect();
        write_xlsx(&path, &[("FACS_Movement_Only", vec![no_offset])]);
        let err = load_long_videos(LongVideoKind::SammLv, root, None).unwrap_err().to_string();
        assert!(err.contains("SAMM_LongVideos_V1_Release.xlsx") && err.contains("\"Offset\""), "{err}");
    }

    #[test]
    fn video_names() {
        assert_eq!(video_of("006_1_2"), Some(("006".to_string(), "006_1".to_string())));
        assert_eq!(video_of("006_1"), Some(("006".to_string(), "006_1".to_string())));
        assert_eq!(video_of(" 011_3_12 ").map(|v| v.1).as_deref(), Some("011_3"));
        assert_eq!(video_of("006"), None);
        assert_eq!(video_of("cropped_1"), None);
        assert_eq!(video_of(""), None);
    }
}
