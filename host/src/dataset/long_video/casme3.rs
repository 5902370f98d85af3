//! CAS(ME)^3 part A: about 100 subjects filmed at 30 fps, each video folder a whole recording,
//! with micro- and macro-expressions marked in separate sheets.
//!
//! Layout read (ROOT = the folder given to [`super::load_long_videos`]):
//! ```text
//! ROOT/part_A/data/part_A/spNO.1/a/color/355.jpg                               colour frames; the stem is the frame number
//! ROOT/part_A/annotation/cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx            micro-expressions
//! ROOT/part_A/annotation/cas(me)3_part_A_MaE_label_JpgIndex_v2_emotion.xlsx   macro-expressions
//! ```
//! The frame tree is found where the clip loader (`dataset::casme3`) finds it, the sheets in
//! the same folders. Each `<subject>/<video letter>/color` folder is a video, id
//! "spNO.1_a". When neither sheet is there, the combined sheet `CAS(ME)3_part_A_v1.xls` is
//! read instead. `annotations` may name one sheet or the folder holding them.
//!
//! The ME sheet (worksheet `label`): Subject, Filename, Onset, Apex, Offset, AU, Objective
//! class, emotion. The MaE sheet (worksheet `Sheet1`): sub, seq, onset, apex, offset, emotion,
//! the same quantities under other names; both are accepted for either sheet. Every row of the
//! ME sheet is a micro-expression and every row of the MaE sheet a macro-expression, unless a
//! type column says otherwise. Intervals are labelled with the emotion (the AU where there is
//! no emotion column).
//!
//! Confirmed from public loaders of the official release: the frame tree (frames numbered from
//! 0 in some videos, so frame 0 is a frame there), the ME sheet's name, worksheet and columns,
//! the MaE sheet's name, worksheet and its lower-case column names, the v1 combined sheet's
//! name and that its type column holds "Macro-expression"/"Micro-expression", video letters
//! written in upper case in some rows. Assumed: the header names of the combined sheet (read
//! like the others, its type column called "Expression type", "Type" or "Expression"); the
//! name `cas(me)3_part_A_MaE_label_JpgIndex_v2.xlsx` without the `_emotion` suffix; that no
//! other macro sheet exists. A sheet whose name says neither ME nor MaE and has no type
//! column is typed by duration (rule 5 of [`super`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::super::casme3::{FRAME_DIRS, SHEET_DIRS, subject_name};
use super::super::frames::{child_path, subdirectories};
use super::super::sheet::{Column, Sheet};
use super::super::{locate_dir, locate_sheet, safe_id};
use super::{Builder, ExpressionKind, KindMark, LongVideoKind, LongVideoSet, Mark, Row};

pub(super) const LAYOUT: &str = "part_A/data/part_A/spNO.1/a/color/<n>.jpg and, in part_A/annotation, \
     cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx and cas(me)3_part_A_MaE_label_JpgIndex_v2_emotion.xlsx \
     (or the combined CAS(ME)3_part_A_v1.xls)";
pub(super) const FPS: f64 = 30.0;

const ME_SHEETS: &[&str] = &["cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx"];
const MAE_SHEETS: &[&str] = &["cas(me)3_part_A_MaE_label_JpgIndex_v2_emotion.xlsx", "cas(me)3_part_A_MaE_label_JpgIndex_v2.xlsx"];
const COMBINED_SHEETS: &[&str] = &["CAS(ME)3_part_A_v1.xls", "CAS(ME)3_part_A_v1.xlsx"];

const SUBJECT: Column = Column(&["Subject", "sub"]);
const FILENAME: Column = Column(&["Filename", "seq"]);
const ONSET: Column = Column(&["Onset", "OnsetFrame"]);
const APEX: Column = Column(&["Apex", "ApexFrame"]);
const OFFSET: Column = Column(&["Offset", "OffsetFrame"]);
const EMOTION: Column = Column(&["emotion", "Estimated Emotion"]);
const ACTION_UNITS: Column = Column(&["AU", "Action Units"]);
const TYPE: Column = Column(&["Expression type", "Type", "Expression"]);

pub(super) fn load(root: &Path, annotations: Option<&Path>) -> Result<LongVideoSet> {
    let kind = LongVideoKind::Casme3Lv;
    let sheets = find_sheets(root, annotations)?;
    let frames = locate_dir(root, FRAME_DIRS, kind, "frame")?;
    let shown = match sheets.as_slice() {
        [one] => one.clone(),
        [first, ..] => first.parent().map_or_else(|| first.clone(), Path::to_path_buf),
        [] => unreachable!("find_sheets returns at least one"),
    };
    let mut b = Builder::new(kind, root, Some(shown), &frames);

    // "spno.1/a" → video id
    let mut videos: HashMap<String, String> = HashMap::new();
    for subject in subdirectories(&frames)? {
        let subject_dir = frames.join(&subject);
        for letter in subdirectories(&subject_dir)? {
            let video_dir = subject_dir.join(&letter);
            let color = child_path(&video_dir, &["color"]);
            let id = safe_id(&format!("{subject}_{}", letter.to_lowercase()));
            if !color.is_dir() {
                let place = b.place(&video_dir);
                b.skip(&id, &place, format!("video folder without a color folder → left out: {}", video_dir.display()));
                continue;
            }
            videos.insert(format!("{}/{}", subject.to_lowercase(), letter.to_lowercase()), id.clone());
            b.add_video(id, subject.clone(), &color, FPS)?;
        }
    }

    for path in &sheets {
        let sheet = Sheet::read(path, &[SUBJECT, FILENAME, ONSET, OFFSET])?;
        let [subject, filename, onset, offset] = [SUBJECT, FILENAME, ONSET, OFFSET].map(|c| sheet.column(c).expect("header holds it"));
        let apex = sheet.optional_column(APEX);
        let label = sheet.optional_column(EMOTION).or_else(|| sheet.optional_column(ACTION_UNITS));
        let type_column = sheet.optional_column(TYPE);
        let holds = sheet_kind(path);
        for row in &sheet.rows {
            let source = sheet.source(row);
            let letter = row.cell(filename).text().to_lowercase();
            let Some(subject) = subject_name(row.cell(subject)) else {
                let message = format!("row without a subject → skipped: Subject {:?}", row.cell(subject).text());
                b.skip(&safe_id(&letter), &source, message);
                continue;
            };
            if letter.is_empty() {
                let message = "row without a video name → skipped: column \"Filename\" is blank".to_string();
                b.skip(&subject, &source, message);
                continue;
            }
            let key = format!("{}/{letter}", subject.to_lowercase());
            let video = videos.get(&key).cloned().unwrap_or_else(|| safe_id(&format!("{subject}_{letter}")));
            let stated = type_column.map(|c| row.cell(c).text()).unwrap_or_default();
            let kind = match (ExpressionKind::of_text(&stated), holds) {
                (Some(kind), _) | (None, Some(kind)) => KindMark::Stated(kind),
                (None, None) => KindMark::Unstated(stated),
            };
            b.add_row(Row {
                video,
                dir: child_path(&frames, &[&subject, &letter, "color"]),
                onset: Mark::of(row.cell(onset)),
                apex: apex.map_or(Mark::Text(String::new()), |c| Mark::of(row.cell(c))),
                offset: Mark::of(row.cell(offset)),
                kind,
                label: label.map(|c| row.cell(c).text()).unwrap_or_default(),
                source,
                at: sheet.at(row),
            });
        }
    }
    b.finish()
}

/// The sheets to read: the given file; or in the given folder (else the known places under
/// ROOT) the ME and MaE sheets, or when neither is there the combined sheet.
fn find_sheets(root: &Path, given: Option<&Path>) -> Result<Vec<PathBuf>> {
    let kind = LongVideoKind::Casme3Lv;
    let (base, dirs): (&Path, &[&str]) = match given {
        Some(path) if path.is_dir() => (path, &[""]),
        Some(path) => return Ok(vec![path.to_path_buf()]),
        None => (root, SHEET_DIRS),
    };
    let find = |names: &[&str]| locate_sheet(base, None, dirs, names, kind).ok();
    let split: Vec<PathBuf> = [find(ME_SHEETS), find(MAE_SHEETS)].into_iter().flatten().collect();
    if !split.is_empty() {
        return Ok(split);
    }
    if let Some(combined) = find(COMBINED_SHEETS) {
        return Ok(vec![combined]);
    }
    let names: Vec<String> = [ME_SHEETS, MAE_SHEETS, COMBINED_SHEETS].concat().iter().map(|n| format!("{n:?}")).collect();
    let dirs: Vec<String> = dirs.iter().map(|d| if d.is_empty() { "the folder itself".to_string() } else { format!("{d:?}") }).collect();
    bail!(
        "{}: no {kind} annotation sheet found; looked for {} in {}. Pass the sheet's (or its folder's) path \
         explicitly if it is elsewhere",
        base.display(),
        names.join(", "),
        dirs.join(", ")
    )
}

/// What every row of the sheet at `path` is, by its name: ME or MaE sheet, or neither.
fn sheet_kind(path: &Path) -> Option<ExpressionKind> {
    let name = path.file_name()?.to_str()?.to_lowercase();
    if name.contains("_mae_") {
        Some(ExpressionKind::Macro)
    } else if name.contains("_me_") {
        Some(ExpressionKind::Micro)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::ExpressionKind::{Macro, Micro};
    use super::super::load_long_videos;
    use super::*;
    use crate::dataset::keyframes::rule_of;
    use crate::dataset::testdata::{X, write_frames, write_xlsx};

    fn video(root: &Path, subject: &str, letter: &str, frames: impl IntoIterator<Item = i64>) -> PathBuf {
        let frames: Vec<i64> = frames.into_iter().collect();
        let base = root.join("part_A/data/part_A").join(subject).join(letter);
        write_frames(&base.join("color"), &frames, |n| format!("{n}.jpg"));
        write_frames(&base.join("depth"), &frames[..2], |n| format!("{n}.png"));
        base.join("color")
    }

    fn me_sheet(path: &Path, rows: Vec<(X, &'static str, f64, f64, f64, &'static str)>) {
        let header = ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion"].map(X::S);
        let mut all = vec![header.to_vec()];
        for (subject, letter, onset, apex, offset, emotion) in rows {
            all.push(vec![subject, X::S(letter), X::N(onset), X::N(apex), X::N(offset), X::S("4"), X::N(1.0), X::S(emotion)]);
        }
        write_xlsx(path, &[("label", all)]);
    }

    fn mae_sheet(path: &Path, rows: Vec<(&'static str, &'static str, f64, f64, f64, &'static str)>) {
        let mut all = vec![["sub", "seq", "onset", "apex", "offset", "emotion"].map(X::S).to_vec()];
        for (subject, letter, onset, apex, offset, emotion) in rows {
            all.push(vec![X::S(subject), X::S(letter), X::N(onset), X::N(apex), X::N(offset), X::S(emotion)]);
        }
        write_xlsx(path, &[("Sheet1", all)]);
    }

    #[test]
    fn reads_the_micro_and_macro_sheets_of_part_a() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let a = video(root, "spNO.1", "a", 0..=40);
        video(root, "spNO.1", "b", (1..=30).filter(|n| *n != 12));
        video(root, "spNO.2", "c", 0..=10);
        std::fs::create_dir_all(root.join("part_A/data/part_A/spNO.2/d/depth")).unwrap();
        let annotation = root.join("part_A/annotation");
        let me = annotation.join("cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx");
        let mae = annotation.join("cas(me)3_part_A_MaE_label_JpgIndex_v2_emotion.xlsx");
        me_sheet(
            &me,
            vec![
                (X::S("spNO.1"), "A", 3.0, 5.0, 8.0, "happy"),
                (X::S("spNO.1"), "a", 0.0, 2.0, 4.0, "others"),
                (X::N(1.0), "b", 10.0, 11.0, 14.0, "disgust"),
                (X::S("spNO.9"), "a", 1.0, 2.0, 3.0, "fear"),
            ],
        );
        mae_sheet(&mae, vec![("spNO.1", "b", 5.0, 0.0, 25.0, "surprise"), ("spNO.1", "a", 20.0, 30.0, 60.0, "sad")]);

        let set = load_long_videos(LongVideoKind::Casme3Lv, root, None).unwrap();
        assert_eq!(set.annotations.as_deref(), Some(annotation.as_path()));
        let got: Vec<(&str, &str, usize)> = set.videos.iter().map(|v| (v.id.as_str(), v.subject.as_str(), v.intervals.len())).collect();
        assert_eq!(got, [("spNO.1_a", "spNO.1", 3), ("spNO.1_b", "spNO.1", 2), ("spNO.2_c", "spNO.2", 0)]);
        assert_eq!(set.videos[0].dir, a);
        let spans = |k: usize| -> Vec<(i64, Option<i64>, i64, ExpressionKind, &str)> {
            set.videos[k].intervals.iter().map(|i| (i.onset, i.apex, i.offset, i.kind, i.label.as_str())).collect()
        };
        // video a starts at frame 0, so onset 0 is a frame there; video b starts at 1, so apex 0 is "not coded"
        assert_eq!(spans(0), [(0, Some(2), 4, Micro, "others"), (3, Some(5), 8, Micro, "happy"), (20, Some(30), 40, Macro, "sad")]);
        assert_eq!(spans(1), [(5, None, 25, Macro, "surprise"), (10, Some(11), 14, Micro, "disgust")]);
        assert_eq!(set.videos[1].intervals[0].source, "cas(me)3_part_A_MaE_label_JpgIndex_v2_emotion.xlsx row 2");

        let repairs: Vec<&str> = set.repairs.iter().map(|n| n.message.as_str()).collect();
        assert_eq!(
            repairs,
            [
                "frame gaps → frames left missing: 1 frames in 1 gap: 12",
                "apex missing → none: \"0\"",
                "interval beyond the video → clipped to its frames: 20..60 → 20..40",
                "intervals overlap → both kept: 0..4 (cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx row 3) and 3..8 \
                 (cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx row 2)",
                "intervals overlap → both kept: 5..25 (cas(me)3_part_A_MaE_label_JpgIndex_v2_emotion.xlsx row 2) \
                 and 10..14 (cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx row 4)",
            ]
        );
        let skipped: Vec<(&str, &str)> = set.skipped.iter().map(|n| (n.sample.as_str(), rule_of(&n.message))).collect();
        assert_eq!(
            skipped,
            [("spNO.2_d", "video folder without a color folder → left out"), ("spNO.9_a", "video folder missing → row skipped"),]
        );
        assert!(set.skipped[1].message.contains(&root.join("part_A/data/part_A/spNO.9/a/color").display().to_string()));
        let s = set.summary();
        assert!(s.starts_with("casme3-lv: 3 videos of 2 subjects, 5 intervals (3 micro, 2 macro)"), "{s}");
    }

    #[test]
    fn the_combined_sheet_types_rows_by_its_column_or_by_duration() {
        let dir = tempfile::tempdir().unwrap();
        let part_a = dir.path().join("part_A");
        video(dir.path(), "spNO.3", "e", 0..=40);
        let header = ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Expression type", "emotion"].map(X::S);
        let rows = vec![
            header.to_vec(),
            vec![X::S("spNO.3"), X::S("e"), X::N(1.0), X::N(3.0), X::N(6.0), X::S("12"), X::S("Micro-expression"), X::S("happy")],
            vec![X::S("spNO.3"), X::S("E"), X::N(10.0), X::N(20.0), X::N(30.0), X::S("4"), X::S("Macro-expression"), X::S("sad")],
            vec![X::S("spNO.3"), X::S("e"), X::N(31.0), X::N(33.0), X::N(36.0), X::S("4"), X::B, X::S("sad")],
        ];
        write_xlsx(&part_a.join("annotation/CAS(ME)3_part_A_v1.xlsx"), &[("Sheet1", rows)]);
        let set = load_long_videos(LongVideoKind::Casme3Lv, &part_a, None).unwrap();
        let kinds: Vec<ExpressionKind> = set.videos[0].intervals.iter().map(|i| i.kind).collect();
        assert_eq!(kinds, [Micro, Macro, Micro]);
        assert_eq!(set.repairs.len(), 1);
        assert!(set.repairs[0].message.starts_with("expression type missing → by duration"), "{:?}", set.repairs);

        // one sheet passed explicitly, here the combined one, is read alone
        let given = part_a.join("annotation/CAS(ME)3_part_A_v1.xlsx");
        let one = load_long_videos(LongVideoKind::Casme3Lv, &part_a, Some(&given)).unwrap();
        assert_eq!((one.annotations.as_deref(), one.count(Macro)), (Some(given.as_path()), 1));
    }

    #[test]
    fn an_annotation_folder_may_be_given_and_missing_sheets_say_what_was_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        video(root, "spNO.1", "a", 0..=20);
        let elsewhere = root.join("labels");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let err = load_long_videos(LongVideoKind::Casme3Lv, root, Some(&elsewhere)).unwrap_err().to_string();
        assert!(err.contains("labels") && err.contains("cas(me)3_part_A_MaE_label_JpgIndex_v2_emotion.xlsx"), "{err}");
        let err = load_long_videos(LongVideoKind::Casme3Lv, root, None).unwrap_err().to_string();
        assert!(err.contains("\"part_A/annotation\"") && err.contains("CAS(ME)3_part_A_v1.xls"), "{err}");

        mae_sheet(&elsewhere.join("cas(me)3_part_A_MaE_label_JpgIndex_v2_emotion.xlsx"), vec![("spNO.1", "a", 2.0, 5.0, 18.0, "anger")]);
        let set = load_long_videos(LongVideoKind::Casme3Lv, root, Some(&elsewhere)).unwrap();
        assert_eq!(set.count(Macro), 1);

        let bad = elsewhere.join("cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx");
        write_xlsx(&bad, &[("label", vec![["Subject", "Filename", "Apex", "Offset"].map(X::S).to_vec()])]);
        let err = load_long_videos(LongVideoKind::Casme3Lv, root, Some(&elsewhere)).unwrap_err().to_string();
        assert!(err.contains("cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx") && err.contains("\"Onset\""), "{err}");
    }
}
