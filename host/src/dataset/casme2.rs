//! CASME II: 26 subjects filmed at 200 fps, one folder of frames per micro-expression clip.
//!
//! Layout read (ROOT = the folder given to [`super::load`]):
//! ```text
//! ROOT/CASME2_RAW_selected/sub01/EP02_01f/img46.jpg     frames; N in imgN is the frame number
//! ROOT/CASME2_Cropped/sub01/EP02_01f/reg_img46.jpg      the cropped release, read the same way
//! ROOT/CASME2-coding-20140508.xlsx                       coding sheet (or -20190701.xlsx, or .csv)
//! ```
//! Sheet: header in row 1 with Subject, Filename, OnsetFrame, ApexFrame, OffsetFrame, Action
//! Units, Estimated Emotion (blank columns between them are tolerated). Subject is the number
//! of the `subXX` folder, stored as a number (1) or as text ("01"); both become "sub01".
//!
//! Confirmed from public loaders of the official release: folder and file naming, the sheet
//! names and header, Subject stored as a bare number, blank columns in the .xlsx, ApexFrame "/"
//! in a score of rows, a wrong OffsetFrame in at least one row, `CASME2_Cropped` frames named
//! `reg_imgN.jpg`, archives that unpack to `CASME2_RAW_selected/CASME2_RAW_selected/`.
//! Assumed: that the wrong offsets are written as 0 (the rule also covers other values below
//! the onset), and that `CASME2_Cropped/Cropped/` may also be a level of the cropped release.
//! The CSV form (`CASME2-coding.csv`, same columns) is what `mer synth casme2` writes.
//! Warts are repaired by the rules of `keyframes` (clip folders).

use std::path::Path;

use anyhow::{Result, bail};
use mer_shared::labels::Taxonomy;

use super::annotated::{PlannedClip, RowPlan, load_rows, unnamed_row};
use super::frames::child_path;
use super::keyframes::{Extent, Marks};
use super::sheet::{Cell, Column, Sheet};
use super::{DatasetKind, LoadedDataset, locate_dir, locate_sheet, safe_id};

pub(super) const LAYOUT: &str = "CASME2_RAW_selected/subXX/EPxx_yy/imgN.jpg (or CASME2_Cropped/subXX/EPxx_yy/reg_imgN.jpg) \
     and the coding sheet CASME2-coding-20140508.xlsx (or CASME2-coding.csv)";

const SHEET_NAMES: &[&str] = &[
    "CASME2-coding-20140508.xlsx",
    "CASME2-coding-20190701.xlsx",
    "CASME2-coding.xlsx",
    "CASME2-coding-20140508.csv",
    "CASME2-coding.csv",
];
const FRAME_DIRS: &[&str] = &["CASME2_RAW_selected", "CASME2_Cropped/Cropped", "CASME2_Cropped", "Cropped"];

const SUBJECT: Column = Column(&["Subject"]);
const FILENAME: Column = Column(&["Filename"]);
const ONSET: Column = Column(&["OnsetFrame", "Onset"]);
const APEX: Column = Column(&["ApexFrame", "Apex"]);
const OFFSET: Column = Column(&["OffsetFrame", "Offset"]);
const EMOTION: Column = Column(&["Estimated Emotion", "Emotion"]);

pub(super) fn load(root: &Path, annotations: Option<&Path>, taxonomy: Taxonomy) -> Result<LoadedDataset> {
    let kind = DatasetKind::Casme2;
    let sheet_path = locate_sheet(root, annotations, &[""], SHEET_NAMES, kind)?;
    let frames = locate_dir(root, FRAME_DIRS, kind, "frame")?;
    let sheet = Sheet::read(&sheet_path, &[SUBJECT, FILENAME, ONSET, APEX, OFFSET, EMOTION])?;
    let [subject, filename, onset, apex, offset, emotion] =
        [SUBJECT, FILENAME, ONSET, APEX, OFFSET, EMOTION].map(|c| sheet.column(c).expect("header holds it"));
    let mut dataset = LoadedDataset::new(kind, taxonomy, root, Some(sheet_path));
    load_rows(&mut dataset, &sheet, |row| {
        let clip = row.cell(filename).text();
        if clip.is_empty() {
            return Ok(unnamed_row("Filename"));
        }
        let Some(folder) = subject_folder(row.cell(subject)) else {
            bail!("{}: Subject {:?} is not a CASME II subject number", sheet.at(row), row.cell(subject).text());
        };
        Ok(RowPlan::Clip(PlannedClip {
            id: safe_id(&format!("{folder}_{clip}")),
            dir: child_path(&frames, &[&folder, &clip]),
            subject: folder,
            raw_label: row.cell(emotion).text(),
            extent: Extent::Clip,
            marks: Marks::of_clip(row.cell(onset), row.cell(apex), row.cell(offset)),
        }))
    })?;
    Ok(dataset)
}

/// "subXX" from 1, "1", "01" or "sub01".
fn subject_folder(cell: &Cell) -> Option<String> {
    let text = cell.text();
    let digits = text.strip_prefix("sub").or_else(|| text.strip_prefix("Sub")).unwrap_or(&text);
    let n = Cell::Text(digits.to_string()).integer().filter(|n| *n >= 0)?;
    Some(format!("sub{n:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::testdata::{X, casme2_xlsx_header, write_frames, write_xlsx};
    use crate::dataset::{DatasetKind, load};
    use mer_shared::synth::casme2::{Casme2Options, write_casme2};

    fn frames(root: &Path, subject: &str, clip: &str, numbers: impl IntoIterator<Item = i64>) {
        let numbers: Vec<i64> = numbers.into_iter().collect();
        write_frames(&root.join("CASME2_RAW_selected").join(subject).join(clip), &numbers, |n| format!("img{n}.jpg"));
    }

    fn row(subject: X, clip: &'static str, onset: X, apex: X, offset: X, emotion: &'static str) -> Vec<X> {
        vec![subject, X::S(clip), X::B, onset, apex, offset, X::B, X::S("4+12"), X::S(emotion)]
    }

    fn sheet(root: &Path, rows: Vec<Vec<X>>) {
        let mut all = vec![casme2_xlsx_header()];
        all.extend(rows);
        write_xlsx(&root.join("CASME2-coding-20140508.xlsx"), &[("Sheet1", all)]);
    }

    #[test]
    fn reads_the_official_sheet_with_its_warts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        frames(root, "sub01", "EP02_01f", 46..=86);
        frames(root, "sub01", "EP03_02", (1..=9).chain(11..=20));
        frames(root, "sub17", "EP05_03", 100..=130);
        frames(root, "sub02", "EP01_11f", 10..=20);
        sheet(
            root,
            vec![
                row(X::N(1.0), "EP02_01f", X::N(46.0), X::N(59.0), X::N(86.0), "happiness"),
                row(X::S("01"), "EP03_02", X::N(2.0), X::S("/"), X::N(18.0), "repression"),
                row(X::N(17.0), "EP05_03", X::N(101.0), X::N(110.0), X::N(0.0), "disgust"),
                row(X::N(2.0), "EP01_11f", X::N(10.0), X::N(15.0), X::N(20.0), "fear"),
                vec![],
                vec![X::B, X::B, X::B, X::B, X::B, X::B, X::B, X::B, X::S("total")],
            ],
        );
        let d = load(DatasetKind::Casme2, root, None, Taxonomy::Casme2Five).unwrap();
        // The same tree through `mer prepare`, in every input layout.
        crate::prepare::pipeline::assert_prepares_in_every_layout(DatasetKind::Casme2, root, Taxonomy::Casme2Five);
        assert_eq!(d.annotations.as_deref(), Some(root.join("CASME2-coding-20140508.xlsx").as_path()));
        let ids: Vec<&str> = d.samples.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["sub01_EP02_01f", "sub01_EP03_02", "sub17_EP05_03"]);
        assert_eq!(d.subjects(), ["sub01", "sub17"]);

        let clip = root.join("CASME2_RAW_selected/sub01/EP02_01f");
        let s = &d.samples[0];
        assert_eq!((s.class, s.raw_label.as_str(), s.subject.as_str()), (0, "happiness", "sub01"));
        assert_eq!(s.first, clip.join("img46.jpg"));
        assert_eq!((s.onset.clone(), s.apex.clone()), (clip.join("img46.jpg"), clip.join("img59.jpg")));
        assert_eq!(s.offset, clip.join("img86.jpg"));
        assert_eq!(s.source, "CASME2-coding-20140508.xlsx row 2");

        // apex "/" → middle of 2..18 = 10, which is a gap → nearest earlier frame 9
        let s = &d.samples[1];
        assert_eq!(s.apex, root.join("CASME2_RAW_selected/sub01/EP03_02/img9.jpg"));
        assert_eq!(s.class, 3);
        // offset 0 → last frame of the clip
        assert_eq!(d.samples[2].offset, root.join("CASME2_RAW_selected/sub17/EP05_03/img130.jpg"));
        assert_eq!(d.samples[2].first, root.join("CASME2_RAW_selected/sub17/EP05_03/img100.jpg"));

        let repairs: Vec<(&str, &str)> = d.repairs.iter().map(|n| (n.sample.as_str(), n.message.as_str())).collect();
        assert_eq!(
            repairs,
            [
                ("sub01_EP03_02", "apex missing → middle frame of onset..offset: \"/\" → 10"),
                ("sub01_EP03_02", "frame file missing → nearest existing frame: apex 10 → 9"),
                ("sub17_EP05_03", "offset missing → last frame of the clip folder: \"0\" → 130"),
            ]
        );
        assert_eq!(d.repairs[2].source, "CASME2-coding-20140508.xlsx row 4");
        let skipped: Vec<(&str, &str)> = d.skipped.iter().map(|n| (n.source.as_str(), n.message.as_str())).collect();
        assert_eq!(
            skipped,
            [
                ("CASME2-coding-20140508.xlsx row 5", "label excluded from casme2-5: fear"),
                ("CASME2-coding-20140508.xlsx row 7", "row without a clip name: column \"Filename\" is blank"),
            ]
        );
        assert_eq!(d.tally.kept["happiness"], 1);
        assert_eq!(d.tally.skipped["fear"], 1);

        let three = load(DatasetKind::Casme2, root, None, Taxonomy::Casme2Three).unwrap();
        let classes: Vec<usize> = three.samples.iter().map(|s| s.class).collect();
        assert_eq!(classes, [1, 0, 0]);
    }

    #[test]
    fn reads_the_cropped_release_and_subject_text_forms() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let clip = root.join("CASME2_Cropped/sub04/EP12_01f");
        write_frames(&clip, &[5, 6, 7, 8, 9], |n| format!("reg_img{n}.jpg"));
        sheet(root, vec![row(X::S("sub04"), "EP12_01f", X::N(5.0), X::N(7.0), X::N(9.0), "surprise")]);
        let d = load(DatasetKind::Casme2, root, None, Taxonomy::Casme2Five).unwrap();
        assert_eq!(d.samples[0].apex, clip.join("reg_img7.jpg"));
        assert_eq!(d.samples[0].subject, "sub04");
        assert!(d.repairs.is_empty());
        assert_eq!(subject_folder(&Cell::Text("4".into())).as_deref(), Some("sub04"));
        assert_eq!(subject_folder(&Cell::Number(26.0)).as_deref(), Some("sub26"));
        assert_eq!(subject_folder(&Cell::Text("subject".into())), None);
    }

    #[test]
    fn reads_the_synthetic_generator_output() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Casme2Options { subjects: 2, per_subject: 2, seed: 3, width: 48, height: 48, with_flow: false };
        let truth = write_casme2(dir.path(), &opts, &|| {}).unwrap();
        let d = load(DatasetKind::Casme2, dir.path(), None, Taxonomy::Casme2Five).unwrap();
        assert_eq!(d.annotations.as_deref(), Some(dir.path().join("CASME2-coding.csv").as_path()));
        assert!(d.repairs.is_empty(), "{:?}", d.repairs);
        let kept: Vec<_> = truth.iter().filter(|t| Taxonomy::Casme2Five.class_index(t.emotion.name()).is_ok()).collect();
        assert_eq!(d.samples.len(), kept.len());
        assert_eq!(d.skipped.len(), truth.len() - kept.len());
        for t in kept {
            let id = format!("sub{}_{}", t.subject, t.filename);
            let s = d.samples.iter().find(|s| s.id == id).unwrap_or_else(|| panic!("{id} missing"));
            assert_eq!(s.subject, format!("sub{}", t.subject));
            assert_eq!(s.class, Taxonomy::Casme2Five.class_index(t.emotion.name()).unwrap());
            assert_eq!(s.onset, t.frame_path(dir.path(), t.onset_frame));
            assert_eq!(s.first, t.frame_path(dir.path(), t.onset_frame));
            assert_eq!(s.apex, t.frame_path(dir.path(), t.apex_frame));
            assert_eq!(s.offset, t.frame_path(dir.path(), t.offset_frame));
        }
    }

    #[test]
    fn a_missing_or_empty_clip_folder_is_an_error_naming_sheet_row_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        frames(root, "sub01", "EP02_01f", 1..=5);
        sheet(
            root,
            vec![
                row(X::N(1.0), "EP02_01f", X::N(1.0), X::N(3.0), X::N(5.0), "others"),
                row(X::N(1.0), "EP09_09", X::N(1.0), X::N(3.0), X::N(5.0), "others"),
            ],
        );
        let err = load(DatasetKind::Casme2, root, None, Taxonomy::Casme2Five).unwrap_err().to_string();
        assert!(err.contains("CASME2-coding-20140508.xlsx row 3"), "{err}");
        assert!(err.contains(&root.join("CASME2_RAW_selected/sub01/EP09_09").display().to_string()), "{err}");
        assert!(err.contains("does not exist"), "{err}");

        std::fs::create_dir_all(root.join("CASME2_RAW_selected/sub01/EP09_09")).unwrap();
        std::fs::write(root.join("CASME2_RAW_selected/sub01/EP09_09/readme.txt"), "x").unwrap();
        let err = load(DatasetKind::Casme2, root, None, Taxonomy::Casme2Five).unwrap_err().to_string();
        assert!(err.contains("row 3") && err.contains("holds no numbered frame images"), "{err}");
    }

    #[test]
    fn an_unknown_label_is_an_error_naming_file_row_and_known_labels() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        frames(root, "sub01", "EP02_01f", 1..=5);
        sheet(root, vec![row(X::N(1.0), "EP02_01f", X::N(1.0), X::N(3.0), X::N(5.0), "hapiness")]);
        let err = load(DatasetKind::Casme2, root, None, Taxonomy::Casme2Five).unwrap_err().to_string();
        assert!(err.contains("CASME2-coding-20140508.xlsx row 2"), "{err}");
        assert!(err.contains("\"hapiness\"") && err.contains("happiness") && err.contains("repression"), "{err}");
    }

    #[test]
    fn a_sheet_without_a_required_column_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        frames(root, "sub01", "EP02_01f", 1..=5);
        let header = ["Subject", "Filename", "OnsetFrame", "OffsetFrame", "Estimated Emotion"].map(X::S).to_vec();
        write_xlsx(&root.join("CASME2-coding-20140508.xlsx"), &[("Sheet1", vec![header])]);
        let err = load(DatasetKind::Casme2, root, None, Taxonomy::Casme2Five).unwrap_err().to_string();
        assert!(err.contains("CASME2-coding-20140508.xlsx") && err.contains("\"ApexFrame\""), "{err}");
        assert!(err.contains("Subject, Filename, OnsetFrame, OffsetFrame, Estimated Emotion"), "{err}");
    }

    #[test]
    fn a_bad_subject_is_an_error_naming_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        frames(root, "sub01", "EP02_01f", 1..=5);
        sheet(root, vec![row(X::S("anon"), "EP02_01f", X::N(1.0), X::N(3.0), X::N(5.0), "others")]);
        let err = load(DatasetKind::Casme2, root, None, Taxonomy::Casme2Five).unwrap_err().to_string();
        assert!(err.contains("row 2") && err.contains("\"anon\""), "{err}");
    }
}
