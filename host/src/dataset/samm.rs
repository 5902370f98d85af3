//! SAMM: 32 subjects filmed at 200 fps, one folder of frames per micro-movement clip.
//!
//! Layout read (ROOT = the folder given to [`super::load`]):
//! ```text
//! ROOT/SAMM/006/006_1_2/006_05562.jpg     frames; the digits after the last '_' are the frame number
//! ROOT/SAMM_Micro_FACS_Codes_v2.xlsx       coding sheet (also looked for inside ROOT/SAMM)
//! ```
//! ROOT may also be the `SAMM` folder itself (subject folders `006`, `007`, ... directly in it).
//! Sheet: a block of description rows, then the header row (row 14 in the v2 release) with
//! Subject, Filename, Inducement Code, Onset Frame, Apex Frame, Offset Frame, Duration, Type,
//! Action Units, Notes, Estimated Emotion; the header is found by its content, not its position.
//! Subject is stored as a number (6) and names the folder "006".
//!
//! Confirmed from public loaders of the official release: folder and file naming, the sheet
//! name (also released as `SAMM_20181215_Micro_FACS_Codes_v2.xlsx`), the 13 description rows
//! before the header, the column names, Subject as a bare number, emotion words with capitals
//! and "Other" (mapped to "others", which samm-3 excludes), one row with a wrong offset and rows
//! whose apex lies outside onset..offset. Assumed: that the wrong offset is written as -1 (any
//! value below the onset gets the same repair).
//! Warts are repaired by the rules of `keyframes` (clip folders).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use mer_shared::labels::Taxonomy;

use super::annotated::{PlannedClip, RowPlan, load_rows, unnamed_row};
use super::frames::{child_path, subdirectories};
use super::keyframes::{Extent, Marks};
use super::sheet::{Cell, Column, Sheet};
use super::{DatasetKind, LoadedDataset, locate_dir, locate_sheet, safe_id};

pub(super) const LAYOUT: &str =
    "SAMM/006/006_1_2/006_05562.jpg and the coding sheet SAMM_Micro_FACS_Codes_v2.xlsx (or be the SAMM folder itself)";

const SHEET_NAMES: &[&str] = &["SAMM_Micro_FACS_Codes_v2.xlsx", "SAMM_20181215_Micro_FACS_Codes_v2.xlsx"];

const SUBJECT: Column = Column(&["Subject"]);
const FILENAME: Column = Column(&["Filename"]);
const ONSET: Column = Column(&["Onset Frame", "Onset"]);
const APEX: Column = Column(&["Apex Frame", "Apex"]);
const OFFSET: Column = Column(&["Offset Frame", "Offset"]);
const EMOTION: Column = Column(&["Estimated Emotion", "Emotion"]);

pub(super) fn load(root: &Path, annotations: Option<&Path>, taxonomy: Taxonomy) -> Result<LoadedDataset> {
    let kind = DatasetKind::Samm;
    let sheet_path = locate_sheet(root, annotations, &["", "SAMM"], SHEET_NAMES, kind)?;
    let frames = frames_dir(root)?;
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
            bail!("{}: Subject {:?} is not a SAMM subject number", sheet.at(row), row.cell(subject).text());
        };
        Ok(RowPlan::Clip(PlannedClip {
            id: safe_id(&clip),
            dir: child_path(&frames, &[&folder, &clip]),
            subject: folder,
            raw_label: row.cell(emotion).text(),
            extent: Extent::Clip,
            marks: Marks::of_clip(row.cell(onset), row.cell(apex), row.cell(offset)),
        }))
    })?;
    Ok(dataset)
}

/// `ROOT/SAMM`, or ROOT itself when it directly holds numbered subject folders.
fn frames_dir(root: &Path) -> Result<PathBuf> {
    if !root.join("SAMM").is_dir() && subdirectories(root)?.iter().any(|d| d.chars().all(|c| c.is_ascii_digit())) {
        return Ok(root.to_path_buf());
    }
    locate_dir(root, &["SAMM"], DatasetKind::Samm, "frame")
}

/// "006" from 6, "6" or "006".
fn subject_folder(cell: &Cell) -> Option<String> {
    let n = cell.integer().filter(|n| *n >= 0)?;
    Some(format!("{n:03}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::testdata::{X, write_frames, write_xlsx};
    use crate::dataset::{DatasetKind, load};

    fn header() -> Vec<X> {
        [
            "Subject",
            "Filename",
            "Inducement Code",
            "Onset Frame",
            "Apex Frame",
            "Offset Frame",
            "Duration",
            "Type",
            "Action Units",
            "Notes",
            "Estimated Emotion",
        ]
        .map(X::S)
        .to_vec()
    }

    fn row(subject: f64, clip: &'static str, onset: f64, apex: f64, offset: f64, emotion: &'static str) -> Vec<X> {
        use X::*;
        vec![N(subject), S(clip), N(1.0), N(onset), N(apex), N(offset), N(offset - onset + 1.0), S("Micro - 1/2"), S("R12"), B, S(emotion)]
    }

    /// The v2 sheet: 13 rows of description before the header in row 14.
    fn sheet(path: &Path, rows: Vec<Vec<X>>) {
        let mut all = vec![vec![X::S("SAMM: Spontaneous Micro-Facial Movement Dataset")], vec![]];
        for _ in 0..11 {
            all.push(vec![X::S("Key"), X::S("description of a column")]);
        }
        all.push(header());
        all.extend(rows);
        write_xlsx(path, &[("FACS codes", all)]);
    }

    fn clip(root: &Path, subject: &str, name: &str, numbers: impl IntoIterator<Item = i64>) -> PathBuf {
        let numbers: Vec<i64> = numbers.into_iter().collect();
        let dir = root.join("SAMM").join(subject).join(name);
        write_frames(&dir, &numbers, |n| format!("{subject}_{n:05}.jpg"));
        dir
    }

    #[test]
    fn reads_the_v2_sheet_below_its_description_rows() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let a = clip(root, "006", "006_1_2", 5562..=5600);
        let b = clip(root, "011", "011_2_3", 90..=140);
        let c = clip(root, "028", "028_4_1", 1000..=1030);
        clip(root, "007", "007_6_1", 10..=20);
        sheet(
            &root.join("SAMM_Micro_FACS_Codes_v2.xlsx"),
            vec![
                row(6.0, "006_1_2", 5562.0, 5588.0, 5600.0, "Anger"),
                row(11.0, "011_2_3", 95.0, 120.0, -1.0, "Happiness"),
                row(28.0, "028_4_1", 1002.0, 1040.0, 1022.0, "Contempt"),
                row(7.0, "007_6_1", 10.0, 15.0, 20.0, "Other"),
            ],
        );
        let d = load(DatasetKind::Samm, root, None, Taxonomy::SammThree).unwrap();
        // The same tree through `mer prepare`, in every input layout.
        crate::prepare::pipeline::assert_prepares_in_every_layout(DatasetKind::Samm, root, Taxonomy::SammThree);
        let got: Vec<(&str, &str, usize)> = d.samples.iter().map(|s| (s.id.as_str(), s.subject.as_str(), s.class)).collect();
        assert_eq!(got, [("006_1_2", "006", 0), ("011_2_3", "011", 1), ("028_4_1", "028", 0)]);
        assert_eq!(d.samples[0].first, a.join("006_05562.jpg"));
        assert_eq!(d.samples[0].apex, a.join("006_05588.jpg"));
        assert_eq!(d.samples[0].source, "SAMM_Micro_FACS_Codes_v2.xlsx row 15");
        // offset -1 → last frame of the clip
        assert_eq!(d.samples[1].onset, b.join("011_00095.jpg"));
        assert_eq!(d.samples[1].offset, b.join("011_00140.jpg"));
        // apex beyond offset → middle of 1002..1022
        assert_eq!(d.samples[2].apex, c.join("028_01012.jpg"));
        let repairs: Vec<&str> = d.repairs.iter().map(|n| n.message.as_str()).collect();
        assert_eq!(
            repairs,
            [
                "offset missing → last frame of the clip folder: \"-1\" → 140",
                "apex outside onset..offset → middle frame: apex 1040 not in 1002..1022 → 1012",
            ]
        );
        assert_eq!(d.repairs[1].source, "SAMM_Micro_FACS_Codes_v2.xlsx row 17");
        assert_eq!(d.skipped.len(), 1);
        assert_eq!(d.skipped[0].message, "label excluded from samm-3: Other");
        assert_eq!(d.tally.skipped["other"], 1);
    }

    #[test]
    fn the_root_may_be_the_samm_folder_holding_the_sheet() {
        let dir = tempfile::tempdir().unwrap();
        let samm = dir.path().join("SAMM");
        let a = clip(dir.path(), "006", "006_1_2", 5562..=5570);
        sheet(&samm.join("SAMM_Micro_FACS_Codes_v2.xlsx"), vec![row(6.0, "006_1_2", 5562.0, 5566.0, 5570.0, "Surprise")]);
        let d = load(DatasetKind::Samm, &samm, None, Taxonomy::SammThree).unwrap();
        assert_eq!(d.samples[0].apex, a.join("006_05566.jpg"));
        assert_eq!(d.samples[0].class, 2);
        // and the parent works too, finding the sheet inside SAMM/
        let d = load(DatasetKind::Samm, dir.path(), None, Taxonomy::SammThree).unwrap();
        assert_eq!(d.samples.len(), 1);
    }

    #[test]
    fn a_missing_clip_folder_names_sheet_row_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        clip(root, "006", "006_1_2", 1..=9);
        let sheet_path = root.join("codes/my_samm.xlsx");
        sheet(&sheet_path, vec![row(6.0, "006_1_2", 1.0, 5.0, 9.0, "Fear"), row(9.0, "009_3_4", 1.0, 5.0, 9.0, "Fear")]);
        let err = load(DatasetKind::Samm, root, Some(&sheet_path), Taxonomy::SammThree).unwrap_err().to_string();
        assert!(err.contains("my_samm.xlsx row 16"), "{err}");
        assert!(err.contains(&root.join("SAMM/009/009_3_4").display().to_string()), "{err}");
    }

    #[test]
    fn a_wrong_root_says_where_the_frames_were_expected() {
        let dir = tempfile::tempdir().unwrap();
        let sheet_path = dir.path().join("SAMM_Micro_FACS_Codes_v2.xlsx");
        sheet(&sheet_path, vec![row(6.0, "006_1_2", 1.0, 5.0, 9.0, "Fear")]);
        let err = load(DatasetKind::Samm, dir.path(), None, Taxonomy::SammThree).unwrap_err().to_string();
        assert!(err.contains("\"SAMM\"") && err.contains("006/006_1_2/006_05562.jpg"), "{err}");
    }
}
