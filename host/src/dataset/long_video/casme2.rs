//! CAS(ME)^2 part A: 87 long videos of 22 participants filmed at 30 fps, with 300 macro- and 57
//! micro-expressions marked in them (the MEGC spotting benchmark "CAS(ME)^2" / "CASME_sq").
//!
//! Layout read (ROOT = the folder given to [`super::load_long_videos`]):
//! ```text
//! ROOT/rawpic/s15/15_0101disgustingteeth/img1.jpg   frames; N in imgN is the frame number
//! ROOT/CAS(ME)^2code_final.xlsx                      coding workbook
//! ```
//! The frame tree is also found at `CAS(ME)^2/rawpic` and `CASME_sq/rawpic`, the workbook in
//! those folders too, and also as `CAS(ME)^2code_final(Updated).xlsx` (preferred when both
//! are there), `code_final.xlsx`, or a .csv export of its first worksheet.
//!
//! The workbook: the first worksheet (`CASFEcode_final`) has no header row. Its columns are
//! participant number, video name with expression number ("anger1_1"), onset, apex, offset,
//! action units, estimated emotion, expression type ("micro-expression"/"macro-expression"),
//! self-reported emotion. Worksheet `naming rule1` maps folder number (column 1; 15 for `s15`) to
//! participant number (column 3); `naming rule2` maps the four-digit video code of the folder
//! names (column 1; "0101" in `15_0101disgustingteeth`, sometimes stored as the number 101) to
//! the video name ("disgust1", column 2). A video is found by (participant → sNN folder, name →
//! code → the folder `NN_<code>…`). Intervals are labelled with the estimated emotion.
//!
//! Confirmed from public loaders of the official release (MEGC baselines and spotting code): the
//! folder tree and `imgN.jpg` names (numbered from 1), the workbook name and its `(Updated)`
//! variant, the first worksheet's nine columns and that it has no header row, the two naming
//! worksheets and their columns, the nine video codes and the 22 participant folders of the
//! tables below, the type words, and the MEGC conventions that an apex or offset of 0 means not
//! coded and a missing offset is replaced by the apex. Assumed: that a workbook without the
//! naming worksheets (a CSV export) follows the official tables, which are then used and noted;
//! the `CAS(ME)^2` / `CASME_sq` parent folders. The interval rules are those of [`super`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::super::frames::subdirectories;
use super::super::sheet::{Cell, Worksheet, read_worksheets};
use super::super::{locate_dir, locate_sheet, safe_id};
use super::{Builder, KindMark, LongVideoKind, LongVideoSet, Mark, Row};

pub(super) const LAYOUT: &str = "rawpic/s15/15_0101disgustingteeth/img1.jpg and the coding workbook \
     CAS(ME)^2code_final.xlsx (first worksheet without a header row, plus worksheets \"naming rule1\" and \
     \"naming rule2\")";
pub(super) const FPS: f64 = 30.0;

const SHEET_NAMES: &[&str] = &[
    "CAS(ME)^2code_final(Updated).xlsx",
    "CAS(ME)^2code_final.xlsx",
    "code_final.xlsx",
    "CAS(ME)^2code_final(Updated).csv",
    "CAS(ME)^2code_final.csv",
];
const SHEET_DIRS: &[&str] = &["", "CAS(ME)^2", "CASME_sq"];
const FRAME_DIRS: &[&str] = &["rawpic", "CAS(ME)^2/rawpic", "CASME_sq/rawpic"];

/// Participant number → subject folder number, worksheet `naming rule1` of the official release.
const PARTICIPANTS: [(i64, i64); 22] = [
    (1, 15),
    (2, 16),
    (3, 19),
    (4, 20),
    (5, 21),
    (6, 22),
    (7, 23),
    (8, 24),
    (9, 25),
    (10, 26),
    (11, 27),
    (12, 29),
    (13, 30),
    (14, 31),
    (15, 32),
    (16, 33),
    (17, 34),
    (18, 35),
    (19, 36),
    (20, 37),
    (21, 38),
    (22, 40),
];

/// Video name → folder code, worksheet `naming rule2` of the official release.
const VIDEO_CODES: [(&str, &str); 9] = [
    ("disgust1", "0101"),
    ("disgust2", "0102"),
    ("anger1", "0401"),
    ("anger2", "0402"),
    ("happy1", "0502"),
    ("happy2", "0503"),
    ("happy3", "0505"),
    ("happy4", "0507"),
    ("happy5", "0508"),
];

// Columns of the coding worksheet, which has no header row.
const PARTICIPANT: usize = 0;
const VIDEO: usize = 1;
const ONSET: usize = 2;
const APEX: usize = 3;
const OFFSET: usize = 4;
const EMOTION: usize = 6;
const TYPE: usize = 7;

pub(super) fn load(root: &Path, annotations: Option<&Path>) -> Result<LongVideoSet> {
    let kind = LongVideoKind::Casme2Lv;
    let sheet_path = locate_sheet(root, annotations, SHEET_DIRS, SHEET_NAMES, kind)?;
    let frames = locate_dir(root, FRAME_DIRS, kind, "frame")?;
    let book = read_worksheets(&sheet_path)?;
    let file = sheet_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut b = Builder::new(kind, root, Some(sheet_path.clone()), &frames);

    // (subject folder number, video code) → (video id, folder)
    let mut folders: HashMap<(i64, String), (String, PathBuf)> = HashMap::new();
    for subject in subdirectories(&frames)? {
        let subject_dir = frames.join(&subject);
        let Some(number) = subject_number(&subject) else {
            let place = b.place(&subject_dir);
            b.skip(&safe_id(&subject), &place, format!("not a subject folder (sNN) → left out: {subject:?}"));
            continue;
        };
        for name in subdirectories(&subject_dir)? {
            let dir = subject_dir.join(&name);
            let Some(code) = video_code(&name) else {
                let place = b.place(&dir);
                b.skip(&safe_id(&name), &place, format!("not a video folder (NN_CCCC…) → left out: {name:?}"));
                continue;
            };
            let id = safe_id(&name);
            folders.insert((number, code), (id.clone(), dir.clone()));
            b.add_video(id, subject.clone(), &dir, FPS)?;
        }
    }

    let Some(coding) = coding_worksheet(&book) else {
        bail!("{}: the workbook holds no worksheet of expression codes", sheet_path.display());
    };
    let naming = Naming::read(&book, &file, &mut b);
    for row in &coding.rows {
        let source = format!("{file} row {}", row.number);
        let at = format!("{} row {}", sheet_path.display(), row.number);
        let name = row.cell(VIDEO).text();
        let folder_number = match naming.folder_number(row.cell(PARTICIPANT)) {
            Ok(n) => n,
            Err(message) => {
                b.skip(&safe_id(&name), &source, message);
                continue;
            }
        };
        if name.is_empty() {
            b.skip("", &source, "row without a video name → skipped: column 2 is blank".to_string());
            continue;
        }
        let stem = name.split('_').next().unwrap_or_default().trim().to_lowercase();
        let Some(code) = naming.code(&stem) else {
            let message = format!("video name not in naming rule2 → row skipped: {stem:?} (from {name:?})");
            b.skip(&safe_id(&name), &source, message);
            continue;
        };
        let (video, dir) = match folders.get(&(folder_number, code.clone())) {
            Some((id, dir)) => (id.clone(), dir.clone()),
            None => (
                safe_id(&format!("{folder_number}_{code}")),
                frames.join(format!("s{folder_number}")).join(format!("{folder_number}_{code}*")),
            ),
        };
        b.add_row(Row {
            video,
            dir,
            onset: Mark::of(row.cell(ONSET)),
            apex: Mark::of(row.cell(APEX)),
            offset: Mark::of(row.cell(OFFSET)),
            kind: KindMark::of_text(&row.cell(TYPE).text()),
            label: row.cell(EMOTION).text(),
            source,
            at,
        });
    }
    b.finish()
}

/// 15 from "s15" or "S15".
fn subject_number(name: &str) -> Option<i64> {
    let digits = name.strip_prefix(['s', 'S'])?;
    (!digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit())).then(|| digits.parse().ok())?
}

/// "0101" from "15_0101disgustingteeth": the four digits after the subject number.
fn video_code(name: &str) -> Option<String> {
    let (number, rest) = name.split_once('_')?;
    let code: String = rest.chars().take_while(char::is_ascii_digit).collect();
    (!number.is_empty() && number.bytes().all(|c| c.is_ascii_digit()) && code.len() == 4).then_some(code)
}

/// "0101" from 101, "101" or "0101".
fn code_of(cell: &Cell) -> Option<String> {
    cell.integer().filter(|n| (0..10_000).contains(n)).map(|n| format!("{n:04}"))
}

/// The coding worksheet: `CASFEcode_final` (also spelt `CASMEcode_final`), else the first that
/// is not a naming worksheet.
fn coding_worksheet(book: &[Worksheet]) -> Option<&Worksheet> {
    let named = |w: &&Worksheet, names: &[&str]| w.name.as_deref().is_some_and(|n| names.contains(&normalise(n).as_str()));
    book.iter()
        .find(|w| named(w, &["casfecodefinal", "casmecodefinal"]))
        .or_else(|| book.iter().find(|w| !named(w, &["namingrule1", "namingrule2"])))
}

fn normalise(name: &str) -> String {
    name.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// The two naming tables, from the workbook or, where it lacks them, the official ones.
struct Naming {
    participants: HashMap<i64, i64>,
    videos: HashMap<String, String>,
}

impl Naming {
    fn read(book: &[Worksheet], file: &str, b: &mut Builder) -> Naming {
        let sheet = |name: &str| book.iter().find(|w| w.name.as_deref().is_some_and(|n| normalise(n) == name));
        let mut participants = HashMap::new();
        match sheet("namingrule1") {
            Some(w) => {
                for row in &w.rows {
                    let folder = row.cell(0).integer().or_else(|| subject_number(&row.cell(1).text()));
                    match (row.cell(2).integer(), folder) {
                        (Some(p), Some(f)) => {
                            participants.insert(p, f);
                        }
                        _ => b.skip(
                            "",
                            &format!("{file} worksheet \"naming rule1\" row {}", row.number),
                            "naming row unreadable → ignored: expected folder number, sNN, participant number".to_string(),
                        ),
                    }
                }
            }
            None => {
                participants.extend(PARTICIPANTS);
                b.repair(
                    "",
                    file,
                    "naming worksheet missing → the official table: \"naming rule1\" (participant → sNN folder)".to_string(),
                );
            }
        }
        let mut videos = HashMap::new();
        match sheet("namingrule2") {
            Some(w) => {
                for row in &w.rows {
                    let name = row.cell(1).text().to_lowercase();
                    match code_of(row.cell(0)) {
                        Some(code) if !name.is_empty() => {
                            videos.insert(name, code);
                        }
                        _ => b.skip(
                            "",
                            &format!("{file} worksheet \"naming rule2\" row {}", row.number),
                            "naming row unreadable → ignored: expected video code, video name".to_string(),
                        ),
                    }
                }
            }
            None => {
                videos.extend(VIDEO_CODES.iter().map(|(n, c)| (n.to_string(), c.to_string())));
                b.repair(
                    "",
                    file,
                    "naming worksheet missing → the official table: \"naming rule2\" (video name → folder code)".to_string(),
                );
            }
        }
        Naming { participants, videos }
    }

    /// The subject folder number of a participant cell (a participant number, or "s15").
    fn folder_number(&self, cell: &Cell) -> Result<i64, String> {
        if let Some(p) = cell.integer() {
            return self.participants.get(&p).copied().ok_or_else(|| format!("participant not in naming rule1 → row skipped: {p}"));
        }
        subject_number(&cell.text()).ok_or_else(|| format!("row without a participant number → skipped: column 1 holds {:?}", cell.text()))
    }

    /// The folder code of a video name ("anger1"), or of a code written as the name.
    fn code(&self, stem: &str) -> Option<String> {
        if let Some(code) = self.videos.get(stem) {
            return Some(code.clone());
        }
        (stem.len() <= 4 && !stem.is_empty() && stem.bytes().all(|c| c.is_ascii_digit())).then(|| format!("{stem:0>4}"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ExpressionKind, LongVideo, load_long_videos};
    use super::*;
    use crate::dataset::testdata::{X, write_frames, write_xlsx};

    fn video(root: &Path, subject: &str, name: &str, numbers: impl IntoIterator<Item = i64>) -> PathBuf {
        let numbers: Vec<i64> = numbers.into_iter().collect();
        let dir = root.join("rawpic").join(subject).join(name);
        write_frames(&dir, &numbers, |n| format!("img{n}.jpg"));
        dir
    }

    /// A row of the coding worksheet: participant, video_expression, onset, apex, offset, AUs,
    /// emotion, type, self-report.
    fn code(p: f64, name: &'static str, onset: f64, apex: f64, offset: f64, kind: &'static str) -> Vec<X> {
        use X::*;
        vec![N(p), S(name), N(onset), N(apex), N(offset), S("4+7"), S("disgust"), S(kind), S("disgust")]
    }

    fn naming_rule1() -> Vec<Vec<X>> {
        use X::*;
        vec![vec![N(15.0), S("s15"), N(1.0)], vec![N(16.0), S("s16"), N(2.0)]]
    }

    fn naming_rule2() -> Vec<Vec<X>> {
        use X::*;
        vec![vec![N(101.0), S("disgust1")], vec![S("0401"), S("anger1")], vec![N(502.0), S("happy1")], vec![N(102.0), S("disgust2")]]
    }

    #[test]
    fn reads_the_headerless_workbook_through_its_naming_rules() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let disgust = video(root, "s15", "15_0101disgustingteeth", (1..=40).filter(|n| !(20..=21).contains(n)));
        let anger = video(root, "s15", "15_0401girlcrashing", 1..=30);
        let quiet = video(root, "s16", "16_0102eatingworms", 1..=12);
        std::fs::create_dir_all(root.join("rawpic/s16/16_0505empty")).unwrap();
        let coding = vec![
            code(1.0, "disgust1_1", 5.0, 8.0, 10.0, "micro-expression"),
            code(1.0, "disgust1_2", 12.0, 0.0, 30.0, "macro-expression"),
            code(1.0, "anger1_1", 3.0, 6.0, 0.0, "micro-expression"),
            code(1.0, "anger1_2", 25.0, 28.0, 40.0, ""),
            code(2.0, "happy1_1", 2.0, 3.0, 4.0, "micro-expression"),
            code(1.0, "disgust1_3", 9.0, 9.0, 14.0, "micro-expression"),
            code(1.0, "disgust1_4", 50.0, 52.0, 55.0, "macro-expression"),
            code(1.0, "anger1_3", 20.0, 22.0, 15.0, "micro-expression"),
            code(3.0, "disgust1_5", 2.0, 3.0, 4.0, "micro-expression"),
            code(1.0, "sadness1_1", 2.0, 3.0, 4.0, "micro-expression"),
        ];
        let sheet = root.join("CAS(ME)^2code_final.xlsx");
        write_xlsx(&sheet, &[("CASFEcode_final", coding), ("naming rule1", naming_rule1()), ("naming rule2", naming_rule2())]);

        let set = load_long_videos(LongVideoKind::Casme2Lv, root, None).unwrap();
        assert_eq!(set.annotations.as_deref(), Some(sheet.as_path()));
        let ids: Vec<(&str, &str, usize)> = set.videos.iter().map(|v| (v.id.as_str(), v.subject.as_str(), v.intervals.len())).collect();
        assert_eq!(ids, [("15_0101disgustingteeth", "s15", 3), ("15_0401girlcrashing", "s15", 2), ("16_0102eatingworms", "s16", 0)]);
        assert_eq!(set.subjects(), ["s15", "s16"]);
        let (d, a) = (&set.videos[0], &set.videos[1]);
        assert_eq!((d.dir.as_path(), a.dir.as_path(), set.videos[2].dir.as_path()), (&*disgust, &*anger, &*quiet));
        assert_eq!((d.fps, d.frames.len(), d.frames[18], d.frames[19]), (30.0, 38, 19, 22));
        let spans = |v: &LongVideo| -> Vec<(i64, Option<i64>, i64, ExpressionKind)> {
            v.intervals.iter().map(|i| (i.onset, i.apex, i.offset, i.kind)).collect()
        };
        use ExpressionKind::{Macro, Micro};
        assert_eq!(spans(d), [(5, Some(8), 10, Micro), (9, Some(9), 14, Micro), (12, None, 30, Macro)]);
        // offset 0 → the apex; type blank and 16 frames at 30 fps → macro, clipped to frame 30
        assert_eq!(spans(a), [(3, Some(6), 6, Micro), (25, Some(28), 30, Macro)]);
        assert_eq!((d.intervals[0].label.as_str(), d.intervals[0].source.as_str()), ("disgust", "CAS(ME)^2code_final.xlsx row 1"));

        let repairs: Vec<(&str, &str, &str)> =
            set.repairs.iter().map(|n| (n.sample.as_str(), n.source.as_str(), n.message.as_str())).collect();
        assert_eq!(
            repairs,
            [
                (
                    "15_0101disgustingteeth",
                    "rawpic/s15/15_0101disgustingteeth",
                    "frame gaps → frames left missing: 2 frames in 1 gap: 20..21"
                ),
                ("15_0101disgustingteeth", "CAS(ME)^2code_final.xlsx row 2", "apex missing → none: \"0\""),
                ("15_0401girlcrashing", "CAS(ME)^2code_final.xlsx row 3", "offset missing → the apex (MEGC): \"0\" → 6"),
                (
                    "15_0401girlcrashing",
                    "CAS(ME)^2code_final.xlsx row 4",
                    "expression type missing → by duration (micro ≤ 0.5 s): \"\", 16 frames at 30 fps → macro"
                ),
                (
                    "15_0401girlcrashing",
                    "CAS(ME)^2code_final.xlsx row 4",
                    "interval beyond the video → clipped to its frames: 25..40 → 25..30"
                ),
                (
                    "15_0101disgustingteeth",
                    "CAS(ME)^2code_final.xlsx row 6",
                    "intervals overlap → both kept: 5..10 (CAS(ME)^2code_final.xlsx row 1) and 9..14 (CAS(ME)^2code_final.xlsx row 6)"
                ),
                (
                    "15_0101disgustingteeth",
                    "CAS(ME)^2code_final.xlsx row 2",
                    "intervals overlap → both kept: 9..14 (CAS(ME)^2code_final.xlsx row 6) and 12..30 (CAS(ME)^2code_final.xlsx row 2)"
                ),
            ]
        );
        let skipped: Vec<(&str, &str)> = set.skipped.iter().map(|n| (n.source.as_str(), n.message.as_str())).collect();
        let missing = root.join("rawpic/s16/16_0502*").display().to_string();
        assert_eq!(
            skipped,
            [
                (
                    "rawpic/s16/16_0505empty",
                    format!(
                        "video folder without numbered frames → video left out: {} holds no .jpg/.jpeg/.png/.bmp file \
                         whose name ends in a frame number",
                        root.join("rawpic/s16/16_0505empty").display()
                    )
                    .as_str()
                ),
                ("CAS(ME)^2code_final.xlsx row 5", format!("video folder missing → row skipped: {missing}").as_str()),
                ("CAS(ME)^2code_final.xlsx row 7", "interval outside the video → row skipped: 50..55, video frames 1..40"),
                ("CAS(ME)^2code_final.xlsx row 8", "onset after offset → row skipped: onset 20 > offset 15"),
                ("CAS(ME)^2code_final.xlsx row 9", "participant not in naming rule1 → row skipped: 3"),
                ("CAS(ME)^2code_final.xlsx row 10", "video name not in naming rule2 → row skipped: \"sadness1\" (from \"sadness1_1\")"),
            ]
        );
        let s = set.summary();
        assert!(s.starts_with("casme2-lv: 3 videos of 2 subjects, 5 intervals (3 micro, 2 macro)"), "{s}");
        assert!(s.contains("videos without intervals: 1"), "{s}");
        assert!(s.contains("2 × intervals overlap → both kept"), "{s}");
    }

    #[test]
    fn a_csv_export_without_naming_worksheets_uses_the_official_tables() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("CASME_sq");
        video(&root, "s40", "40_0508happy5", 1..=20);
        video(&root, "s15", "15_0102eatingworms", 1..=20);
        let csv = "22,happy5_1,3,5,9,12,happiness,micro-expression,happy\n\
                   22,happy5_2,10,12,18,12,happiness,,happy\n\
                   s15,0102_1,2,4,6,4,disgust,Macro-expression,\n\
                   participant,video,onset,apex,offset,AU,emotion,type,self\n";
        std::fs::write(root.join("CAS(ME)^2code_final.csv"), csv).unwrap();
        let set = load_long_videos(LongVideoKind::Casme2Lv, dir.path(), None).unwrap();
        assert_eq!(set.annotations, Some(root.join("CAS(ME)^2code_final.csv")));
        let got: Vec<(&str, i64, i64, ExpressionKind, &str)> = set
            .videos
            .iter()
            .flat_map(|v| v.intervals.iter().map(move |i| (v.id.as_str(), i.onset, i.offset, i.kind, i.label.as_str())))
            .collect();
        assert_eq!(
            got,
            [
                ("15_0102eatingworms", 2, 6, ExpressionKind::Macro, "disgust"),
                ("40_0508happy5", 3, 9, ExpressionKind::Micro, "happiness"),
                ("40_0508happy5", 10, 18, ExpressionKind::Micro, "happiness"),
            ]
        );
        let rules: Vec<&str> = set.repairs.iter().map(|n| n.message.as_str()).collect();
        assert_eq!(
            rules,
            [
                "naming worksheet missing → the official table: \"naming rule1\" (participant → sNN folder)",
                "naming worksheet missing → the official table: \"naming rule2\" (video name → folder code)",
                "expression type missing → by duration (micro ≤ 0.5 s): \"\", 9 frames at 30 fps → micro",
            ]
        );
        assert_eq!(set.skipped.len(), 1);
        assert_eq!(set.skipped[0].source, "CAS(ME)^2code_final.csv row 4");
        assert_eq!(set.skipped[0].message, "row without a participant number → skipped: column 1 holds \"participant\"");
    }

    #[test]
    fn missing_pieces_are_errors_naming_what_was_expected() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let err = load_long_videos(LongVideoKind::Casme2Lv, root, None).unwrap_err().to_string();
        assert!(err.contains("CAS(ME)^2code_final.xlsx") && err.contains("looked for"), "{err}");

        let sheet = root.join("CAS(ME)^2code_final.xlsx");
        let coding = vec![code(2.0, "happy1_1", 2.0, 3.0, 4.0, "micro-expression")];
        write_xlsx(&sheet, &[("CASFEcode_final", coding), ("naming rule1", naming_rule1()), ("naming rule2", naming_rule2())]);
        let err = load_long_videos(LongVideoKind::Casme2Lv, root, None).unwrap_err().to_string();
        assert!(err.contains("\"rawpic\"") && err.contains("no frame folder"), "{err}");

        // frames of another participant only: the one row names a folder that is not there
        video(root, "s15", "15_0101disgustingteeth", 1..=10);
        let err = load_long_videos(LongVideoKind::Casme2Lv, root, None).unwrap_err().to_string();
        assert!(err.contains(&format!("{} row 1", sheet.display())), "{err}");
        assert!(err.contains(&root.join("rawpic/s16/16_0502*").display().to_string()), "{err}");

        std::fs::write(&sheet, "not a workbook").unwrap();
        let err = load_long_videos(LongVideoKind::Casme2Lv, root, None).unwrap_err().to_string();
        assert!(err.contains("cannot open") && err.contains("CAS(ME)^2code_final.xlsx"), "{err}");
    }

    #[test]
    fn folder_and_cell_names() {
        assert_eq!(subject_number("s15"), Some(15));
        assert_eq!(subject_number("S40"), Some(40));
        assert_eq!(subject_number("sub01"), None);
        assert_eq!(subject_number("s"), None);
        assert_eq!(video_code("15_0101disgustingteeth").as_deref(), Some("0101"));
        assert_eq!(video_code("15_0101").as_deref(), Some("0101"));
        assert_eq!(video_code("15_101x"), None);
        assert_eq!(video_code("x_0101a"), None);
        assert_eq!(code_of(&Cell::Number(101.0)).as_deref(), Some("0101"));
        assert_eq!(code_of(&Cell::Text("0502".into())).as_deref(), Some("0502"));
        assert_eq!(code_of(&Cell::Text("happy".into())), None);
    }
}
