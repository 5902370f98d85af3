//! CAS(ME)^3 part A: about 100 subjects filmed at 30 fps with a depth camera; each video folder
//! holds a whole recording, and the sheet marks the micro-expressions inside it.
//!
//! Layout read (ROOT = the folder given to [`super::load`]):
//! ```text
//! ROOT/part_A/data/part_A/spNO.1/a/color/355.jpg      colour frames; the stem is the frame index
//! ROOT/part_A/data/part_A/spNO.1/a/depth/355.png      depth frames (not read)
//! ROOT/part_A/annotation/cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx
//! ```
//! The frame tree is also found at `part_A/data/part_A_split/part_A`,
//! `part_A/data/Compressed_version1_seperate_compress`, and the same paths without the leading
//! `part_A/` (ROOT = the `part_A` folder). The sheet is also looked for in ROOT and
//! ROOT/annotation. Sheet: header in row 1 with Subject, Filename, Onset, Apex, Offset, AU,
//! Objective class, emotion; Onset/Apex/Offset are frame indices of the video (the "JpgIndex").
//!
//! Confirmed from public loaders of the official release: the folder tree (`<Subject>/<video
//! letter>/color/<n>.jpg`, with a `depth` sibling), the sheet name and columns, subjects written
//! "spNO.1", video letters sometimes upper-case in the sheet, several expressions per video
//! (so the sample id carries the onset: "spNO.1_a_355"), dropped frames inside clips, and a few
//! rows with an offset before the onset or an onset/apex outside the recording. Emotion words are
//! happy, sad, disgust, fear, anger, surprise, others. Assumed: nothing beyond that; a sheet that
//! also lists macro-expressions (an "Expression type" column) has those rows skipped.
//! Warts are repaired by the rules of `keyframes` for *video* folders: a missing onset/offset or
//! an offset before the onset cannot be recovered from the folder and skips the row.

use std::path::Path;

use anyhow::{Result, bail};
use mer_shared::labels::Taxonomy;

use super::annotated::{PlannedClip, RowPlan, load_rows, unnamed_row};
use super::frames::child_path;
use super::keyframes::{Extent, Mark, Marks};
use super::sheet::{Cell, Column, Sheet};
use super::{DatasetKind, LoadedDataset, locate_dir, locate_sheet, safe_id};

pub(super) const LAYOUT: &str = "part_A/data/part_A/spNO.1/a/color/<n>.jpg and \
     part_A/annotation/cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx";

const SHEET_NAMES: &[&str] = &["cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx"];
pub(super) const SHEET_DIRS: &[&str] = &["", "annotation", "part_A/annotation", "part_A"];
pub(super) const FRAME_DIRS: &[&str] = &[
    "part_A/data/part_A",
    "part_A/data/part_A_split/part_A",
    "part_A/data/Compressed_version1_seperate_compress",
    "data/part_A",
    "data/part_A_split/part_A",
    "data/Compressed_version1_seperate_compress",
];

const SUBJECT: Column = Column(&["Subject"]);
const FILENAME: Column = Column(&["Filename"]);
const ONSET: Column = Column(&["Onset", "OnsetFrame"]);
const APEX: Column = Column(&["Apex", "ApexFrame"]);
const OFFSET: Column = Column(&["Offset", "OffsetFrame"]);
const EMOTION: Column = Column(&["emotion", "Estimated Emotion"]);
const EXPRESSION_TYPE: Column = Column(&["Expression type"]);

pub(super) fn load(root: &Path, annotations: Option<&Path>, taxonomy: Taxonomy) -> Result<LoadedDataset> {
    let kind = DatasetKind::Casme3;
    let sheet_path = locate_sheet(root, annotations, SHEET_DIRS, SHEET_NAMES, kind)?;
    let frames = locate_dir(root, FRAME_DIRS, kind, "frame")?;
    let sheet = Sheet::read(&sheet_path, &[SUBJECT, FILENAME, ONSET, APEX, OFFSET, EMOTION])?;
    let [subject, filename, onset, apex, offset, emotion] =
        [SUBJECT, FILENAME, ONSET, APEX, OFFSET, EMOTION].map(|c| sheet.column(c).expect("header holds it"));
    let expression_type = sheet.optional_column(EXPRESSION_TYPE);
    let mut dataset = LoadedDataset::new(kind, taxonomy, root, Some(sheet_path));
    load_rows(&mut dataset, &sheet, |row| {
        let video = row.cell(filename).text().to_lowercase();
        if video.is_empty() {
            return Ok(unnamed_row("Filename"));
        }
        let Some(subject) = subject_name(row.cell(subject)) else {
            bail!("{}: Subject {:?} is not a CAS(ME)^3 subject", sheet.at(row), row.cell(subject).text());
        };
        let id = safe_id(&format!("{subject}_{video}_{}", row.cell(onset).text()));
        if let Some(column) = expression_type {
            let kind = row.cell(column).text();
            if !kind.is_empty() && !kind.to_lowercase().contains("micro") {
                return Ok(RowPlan::Skip { sample: id, message: format!("not a micro-expression: {kind}") });
            }
        }
        Ok(RowPlan::Clip(PlannedClip {
            id,
            dir: child_path(&frames, &[&subject, &video, "color"]),
            subject,
            raw_label: row.cell(emotion).text(),
            extent: Extent::Video,
            marks: Marks { onset: Mark::of(row.cell(onset)), apex: Mark::of(row.cell(apex)), offset: Mark::of(row.cell(offset)) },
        }))
    })?;
    Ok(dataset)
}

/// "spNO.1" as written; a bare number n becomes "spNO.n".
pub(super) fn subject_name(cell: &Cell) -> Option<String> {
    match cell.integer() {
        Some(n) if n >= 0 => Some(format!("spNO.{n}")),
        Some(_) => None,
        None => Some(cell.text()).filter(|s| !s.is_empty() && safe_id(s) == *s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::testdata::{X, write_frames, write_xlsx};
    use crate::dataset::{DatasetKind, load};
    use std::path::PathBuf;

    fn header() -> Vec<X> {
        ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion"].map(X::S).to_vec()
    }

    fn row(subject: &'static str, video: &'static str, onset: X, apex: X, offset: X, emotion: &'static str) -> Vec<X> {
        vec![X::S(subject), X::S(video), onset, apex, offset, X::S("4"), X::N(1.0), X::S(emotion)]
    }

    fn video(root: &Path, subject: &str, letter: &str, frames: &[i64]) -> PathBuf {
        let base = root.join("part_A/data/part_A").join(subject).join(letter);
        write_frames(&base.join("color"), frames, |n| format!("{n}.jpg"));
        write_frames(&base.join("depth"), &frames[..2], |n| format!("{n}.png"));
        base.join("color")
    }

    #[test]
    fn reads_several_expressions_per_video_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let frames: Vec<i64> = (1..=120).filter(|n| *n != 40).collect();
        let a = video(root, "spNO.1", "a", &frames);
        let b = video(root, "spNO.10", "b", &(1..=60).collect::<Vec<_>>());
        use X::N;
        let rows = vec![
            header(),
            row("spNO.1", "A", N(30.0), N(40.0), N(50.0), "disgust"),
            row("spNO.1", "a", N(80.0), X::S("/"), N(90.0), "happy"),
            row("spNO.1", "a", N(100.0), N(105.0), N(95.0), "sad"),
            row("spNO.10", "b", N(20.0), N(25.0), N(31.0), "others"),
            row("spNO.10", "b", N(70.0), N(75.0), N(80.0), "surprise"),
        ];
        write_xlsx(&root.join("part_A/annotation/cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx"), &[("label", rows)]);

        let d = load(DatasetKind::Casme3, root, None, Taxonomy::Casme3Seven).unwrap();
        // The same tree through `mer prepare`, in every input layout.
        crate::prepare::pipeline::assert_prepares_in_every_layout(DatasetKind::Casme3, root, Taxonomy::Casme3Seven);
        let got: Vec<(&str, &str, usize)> = d.samples.iter().map(|s| (s.id.as_str(), s.subject.as_str(), s.class)).collect();
        assert_eq!(got, [("spNO.1_a_30", "spNO.1", 1), ("spNO.1_a_80", "spNO.1", 3), ("spNO.10_b_20", "spNO.10", 4)]);
        assert_eq!(d.subjects(), ["spNO.1", "spNO.10"]);
        let s = &d.samples[0];
        assert_eq!(s.first, a.join("30.jpg"));
        assert_eq!(s.onset, a.join("30.jpg"));
        assert_eq!(s.apex, a.join("39.jpg"), "frame 40 was dropped");
        assert_eq!(s.offset, a.join("50.jpg"));
        assert_eq!(d.samples[1].apex, a.join("85.jpg"));
        assert_eq!(d.samples[2].first, b.join("20.jpg"));
        let repairs: Vec<(&str, &str)> = d.repairs.iter().map(|n| (n.sample.as_str(), n.message.as_str())).collect();
        assert_eq!(
            repairs,
            [
                ("spNO.1_a_30", "frame file missing → nearest existing frame: apex 40 → 39"),
                ("spNO.1_a_80", "apex missing → middle frame of onset..offset: \"/\" → 85"),
            ]
        );
        let skipped: Vec<(&str, &str)> = d.skipped.iter().map(|n| (n.source.as_str(), n.message.as_str())).collect();
        assert_eq!(
            skipped,
            [
                ("cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx row 4", "offset before onset in a whole-video folder: offset 95 < onset 100"),
                (
                    "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx row 6",
                    "clip outside the video's frames: onset..offset 70..80, video frames 1..60"
                ),
            ]
        );
        assert_eq!(d.tally.kept.values().sum::<usize>(), 3);

        let three = load(DatasetKind::Casme3, root, None, Taxonomy::Casme3Three).unwrap();
        assert_eq!(three.samples.len(), 2, "others is excluded from casme3-3");
        assert_eq!(three.samples.iter().map(|s| s.class).collect::<Vec<_>>(), [0, 1]);
        let four = load(DatasetKind::Casme3, root, None, Taxonomy::Casme3Four).unwrap();
        assert_eq!(four.samples.iter().map(|s| s.class).collect::<Vec<_>>(), [0, 1, 3]);
    }

    #[test]
    fn the_root_may_be_part_a_and_macro_rows_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let part_a = dir.path().join("part_A");
        let frames: Vec<i64> = (0..=30).collect();
        let color = video(dir.path(), "spNO.2", "e", &frames);
        let mut header = header();
        header.push(X::S("Expression type"));
        let mut micro = row("spNO.2", "e", X::N(0.0), X::N(4.0), X::N(9.0), "fear");
        micro.push(X::S("Micro-expression"));
        let mut macro_row = row("spNO.2", "e", X::N(10.0), X::N(14.0), X::N(29.0), "anger");
        macro_row.push(X::S("Macro-expression"));
        write_xlsx(&part_a.join("annotation/cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx"), &[("label", vec![header, micro, macro_row])]);
        let d = load(DatasetKind::Casme3, &part_a, None, Taxonomy::Casme3Seven).unwrap();
        assert_eq!(d.samples.len(), 1);
        assert_eq!(d.samples[0].onset, color.join("0.jpg"));
        assert_eq!(d.samples[0].class, 2);
        assert_eq!(d.skipped[0].message, "not a micro-expression: Macro-expression");
        assert_eq!(d.skipped[0].sample, "spNO.2_e_10");
    }

    #[test]
    fn an_unknown_emotion_word_is_an_error_with_file_and_row() {
        let dir = tempfile::tempdir().unwrap();
        video(dir.path(), "spNO.1", "a", &(1..=20).collect::<Vec<_>>());
        let sheet = dir.path().join("cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx");
        write_xlsx(&sheet, &[("label", vec![header(), row("spNO.1", "a", X::N(2.0), X::N(4.0), X::N(6.0), "contempt?")])]);
        let err = load(DatasetKind::Casme3, dir.path(), None, Taxonomy::Casme3Seven).unwrap_err().to_string();
        assert!(err.contains("cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx row 2") && err.contains("\"contempt?\""), "{err}");
        assert!(err.contains("happy") && err.contains("others"), "{err}");
    }

    #[test]
    fn subjects_are_kept_as_written() {
        assert_eq!(subject_name(&Cell::Text(" spNO.215 ".into())).as_deref(), Some("spNO.215"));
        assert_eq!(subject_name(&Cell::Number(3.0)).as_deref(), Some("spNO.3"));
        assert_eq!(subject_name(&Cell::Text("sp NO/1".into())), None);
    }
}
