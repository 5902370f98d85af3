//! MMEW: 300 micro-expressions of 30 subjects filmed at 90 fps, clip folders grouped by emotion.
//!
//! Layout read (ROOT = the folder given to [`super::load`]):
//! ```text
//! ROOT/Micro_Expression/happiness/S01-05-001/1.jpg   frames; the file stem is the frame number
//! ROOT/MMEW_Micro_Exp.xlsx                            coding sheet
//! ```
//! `Micro_Expression` and the sheet are also found one level down, in `MMEW_Final/` or `MMEW/`.
//! Sheet: header in row 1 with Subject, Filename, OnsetFrame, ApexFrame, OffsetFrame, Action
//! Units, Estimated Emotion, remarks. A clip's folder is `<Estimated Emotion>/<Filename>` under
//! `Micro_Expression` (the emotion folder matched ignoring case).
//!
//! Confirmed from public loaders of the official release: `Micro_Expression/<emotion>/<clip>/`
//! with frames `1.jpg, 2.jpg, ...` (numbered from 1, so name order is wrong past 9), the sheet
//! name and columns, Subject stored as a number, lower-case emotion words including "others",
//! and a dozen rows whose apex or offset lies outside the clip. Assumed: clip names of the form
//! `S13-07-001` (only seen in a folder description); the subject is named "S" + two digits
//! ("S01") from the sheet's number, as the Subject cell is the authority for the LOSO group.
//! Warts are repaired by the rules of `keyframes` (clip folders).

use std::path::Path;

use anyhow::{Result, bail};
use mer_shared::labels::Taxonomy;

use super::annotated::{PlannedClip, RowPlan, load_rows, unnamed_row};
use super::frames::child_path;
use super::keyframes::{Extent, Marks};
use super::sheet::{Cell, Column, Sheet};
use super::{DatasetKind, LoadedDataset, locate_dir, locate_sheet, safe_id};

pub(super) const LAYOUT: &str =
    "Micro_Expression/<emotion>/<Filename>/<n>.jpg and the coding sheet MMEW_Micro_Exp.xlsx (or both inside MMEW_Final/ or MMEW/)";

const SHEET_NAMES: &[&str] = &["MMEW_Micro_Exp.xlsx"];
const SHEET_DIRS: &[&str] = &["", "MMEW_Final", "MMEW"];
const FRAME_DIRS: &[&str] = &["Micro_Expression", "MMEW_Final/Micro_Expression", "MMEW/Micro_Expression"];

const SUBJECT: Column = Column(&["Subject"]);
const FILENAME: Column = Column(&["Filename"]);
const ONSET: Column = Column(&["OnsetFrame", "Onset"]);
const APEX: Column = Column(&["ApexFrame", "Apex"]);
const OFFSET: Column = Column(&["OffsetFrame", "Offset"]);
const EMOTION: Column = Column(&["Estimated Emotion", "Emotion"]);

pub(super) fn load(root: &Path, annotations: Option<&Path>, taxonomy: Taxonomy) -> Result<LoadedDataset> {
    let kind = DatasetKind::Mmew;
    let sheet_path = locate_sheet(root, annotations, SHEET_DIRS, SHEET_NAMES, kind)?;
    let frames = locate_dir(root, FRAME_DIRS, kind, "Micro_Expression")?;
    let sheet = Sheet::read(&sheet_path, &[SUBJECT, FILENAME, ONSET, APEX, OFFSET, EMOTION])?;
    let [subject, filename, onset, apex, offset, emotion] =
        [SUBJECT, FILENAME, ONSET, APEX, OFFSET, EMOTION].map(|c| sheet.column(c).expect("header holds it"));
    let mut dataset = LoadedDataset::new(kind, taxonomy, root, Some(sheet_path));
    load_rows(&mut dataset, &sheet, |row| {
        let clip = row.cell(filename).text();
        if clip.is_empty() {
            return Ok(unnamed_row("Filename"));
        }
        let Some(subject) = subject_name(row.cell(subject)) else {
            bail!("{}: Subject {:?} is not an MMEW subject", sheet.at(row), row.cell(subject).text());
        };
        let label = row.cell(emotion).text();
        Ok(RowPlan::Clip(PlannedClip {
            id: safe_id(&clip),
            dir: child_path(&frames, &[&label, &clip]),
            subject,
            raw_label: label,
            extent: Extent::Clip,
            marks: Marks::of_clip(row.cell(onset), row.cell(apex), row.cell(offset)),
        }))
    })?;
    Ok(dataset)
}

/// "S01" from 1 or "1"; text that already names a subject ("S01") is kept.
fn subject_name(cell: &Cell) -> Option<String> {
    match cell.integer() {
        Some(n) if n >= 0 => Some(format!("S{n:02}")),
        Some(_) => None,
        None => Some(safe_id(&cell.text())).filter(|s| !s.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::testdata::{X, write_frames, write_xlsx};
    use crate::dataset::{DatasetKind, load};
    use std::path::PathBuf;

    fn header() -> Vec<X> {
        ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion", "remarks"].map(X::S).to_vec()
    }

    fn row(subject: f64, clip: &'static str, onset: f64, apex: f64, offset: f64, emotion: &'static str) -> Vec<X> {
        use X::*;
        vec![N(subject), S(clip), N(onset), N(apex), N(offset), S("AU4"), S(emotion), B]
    }

    fn clip(base: &Path, emotion: &str, name: &str, frames: i64) -> PathBuf {
        let dir = base.join("Micro_Expression").join(emotion).join(name);
        write_frames(&dir, &(1..=frames).collect::<Vec<_>>(), |n| format!("{n}.jpg"));
        dir
    }

    #[test]
    fn reads_emotion_grouped_clips_with_numeric_frame_names() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("MMEW_Final");
        let a = clip(&base, "happiness", "S01-05-001", 24);
        let b = clip(&base, "surprise", "S13-07-001", 30);
        let c = clip(&base, "others", "S02-01-004", 12);
        clip(&base, "anger", "S02-02-001", 12);
        let rows = vec![
            header(),
            row(1.0, "S01-05-001", 2.0, 11.0, 21.0, "happiness"),
            row(13.0, "S13-07-001", 1.0, 40.0, 75.0, "surprise"),
            row(2.0, "S02-01-004", 1.0, 5.0, 12.0, "others"),
            row(2.0, "S02-02-001", 1.0, 5.0, 12.0, "anger"),
        ];
        write_xlsx(&base.join("MMEW_Micro_Exp.xlsx"), &[("Sheet1", rows)]);

        let d = load(DatasetKind::Mmew, dir.path(), None, Taxonomy::MmewSix).unwrap();
        // The same tree through `mer prepare`, in every input layout.
        crate::prepare::pipeline::assert_prepares_in_every_layout(DatasetKind::Mmew, dir.path(), Taxonomy::MmewSix);
        let got: Vec<(&str, &str, usize)> = d.samples.iter().map(|s| (s.id.as_str(), s.subject.as_str(), s.class)).collect();
        assert_eq!(got, [("S01-05-001", "S01", 0), ("S02-01-004", "S02", 5), ("S13-07-001", "S13", 2)]);
        assert_eq!(d.samples[0].first, a.join("1.jpg"));
        assert_eq!(d.samples[0].apex, a.join("11.jpg"));
        assert_eq!(d.samples[0].offset, a.join("21.jpg"));
        assert_eq!(d.samples[1].offset, c.join("12.jpg"));
        // offset 75 is beyond the 30 frames; apex 40 then lies outside 1..30
        assert_eq!(d.samples[2].offset, b.join("30.jpg"));
        assert_eq!(d.samples[2].apex, b.join("15.jpg"));
        let repairs: Vec<&str> = d.repairs.iter().map(|n| n.message.as_str()).collect();
        assert_eq!(
            repairs,
            [
                "frame outside the folder → nearest end frame: offset 75 → 30 (folder holds 1..30)",
                "apex outside onset..offset → middle frame: apex 40 not in 1..30 → 15",
            ]
        );
        assert_eq!(d.skipped[0].message, "label excluded from mmew-6: anger");
        assert_eq!(d.skipped[0].source, "MMEW_Micro_Exp.xlsx row 5");

        let four = load(DatasetKind::Mmew, dir.path(), None, Taxonomy::MmewFour).unwrap();
        let classes: Vec<usize> = four.samples.iter().map(|s| s.class).collect();
        assert_eq!(classes, [0, 3, 2]);
    }

    #[test]
    fn a_label_that_disagrees_with_the_folders_is_an_error_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        clip(dir.path(), "happiness", "S01-05-001", 5);
        let rows = vec![header(), row(1.0, "S01-05-001", 1.0, 3.0, 5.0, "disgust")];
        write_xlsx(&dir.path().join("MMEW_Micro_Exp.xlsx"), &[("Sheet1", rows)]);
        let err = load(DatasetKind::Mmew, dir.path(), None, Taxonomy::MmewSix).unwrap_err().to_string();
        assert!(err.contains("MMEW_Micro_Exp.xlsx row 2"), "{err}");
        assert!(err.contains(&dir.path().join("Micro_Expression/disgust/S01-05-001").display().to_string()), "{err}");
    }

    #[test]
    fn subjects_are_named_from_the_sheet() {
        assert_eq!(subject_name(&Cell::Number(7.0)).as_deref(), Some("S07"));
        assert_eq!(subject_name(&Cell::Text("S30".into())).as_deref(), Some("S30"));
        assert_eq!(subject_name(&Cell::Empty), None);
        assert_eq!(subject_name(&Cell::Number(-2.0)), None);
    }
}
