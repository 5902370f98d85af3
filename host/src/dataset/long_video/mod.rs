//! Long recordings with their spotting annotations: the whole videos of CAS(ME)^2, SAMM Long
//! Videos, CAS(ME)^3 part A and the project's interview clips, each read in the layout its
//! owners distribute, with every micro- and macro-expression interval marked in them.
//!
//! Spotting is scored on whole videos (the MEGC protocol): every true interval is a target and
//! every detection that matches none is a false positive, so a video without any annotated
//! interval still counts. The videos are therefore listed from the frame tree, and the
//! annotation rows are attached to them; a row naming a folder that is not there is left out.
//! Interval frame numbers are the numbers in the frame file names (`img46.jpg` is 46), as the
//! datasets annotate them, never positions in a listing; [`LongVideo::frames`] lists the numbers
//! present, so a spotter can tell a gap from a frame.
//!
//! Every annotation row goes through the same rules. Each repair and each row left out is a
//! [`Note`] reading "<rule>: <details>", and [`LongVideoSet::summary`] counts them by rule:
//! 1. A key-frame mark that is blank, text, negative, or 0 in a video without a frame 0 is
//!    missing (CAS(ME)^2 writes 0 for "not coded", SAMM −1).
//! 2. Onset missing → the row is skipped.
//! 3. Offset missing → the apex, as MEGC's evaluation does; apex missing as well → skipped.
//! 4. Onset after offset → skipped.
//! 5. Micro or macro: the sheet's expression-type column (text holding "micro" or "macro"), or
//!    what the whole sheet holds (CAS(ME)^3's ME and MaE sheets). A type that is missing or
//!    unrecognised is decided by duration, MEGC's rule: micro when
//!    offset − onset + 1 ≤ 0.5 s × fps (noted).
//! 6. An interval wholly outside the video's frames is skipped; one partly outside is clipped
//!    to the first..last frame.
//! 7. An apex that is missing or outside the (clipped) onset..offset becomes none.
//! 8. Overlapping intervals in one video are both kept (MEGC counts each) and noted.
//! 9. A row naming a video folder that is not there is skipped; when rows name videos but none
//!    of them is there, the sheet and the frame tree do not belong together: an error.
//!
//! For the video folders: gaps in the frame numbers are noted and stay gaps; a folder without
//! numbered frames is left out (noted); no video folder at all, a missing frame tree or sheet,
//! a missing column, an unlistable folder or an unreadable sheet is an error naming the path
//! (and sheet row). Frames are listed, not decoded: a corrupt image file is found by whatever
//! decodes it.

mod casme2;
mod casme3;
mod interview;
mod samm;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::frames::FrameFolder;
use super::keyframes::rule_of;
use super::sheet::Cell;
use super::{Layout, Note};

/// Which long-video dataset layout to read. Command-line and display names: "casme2-lv",
/// "samm-lv", "casme3-lv", "interview".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
#[value(rename_all = "kebab-case")]
pub enum LongVideoKind {
    Casme2Lv,
    SammLv,
    Casme3Lv,
    Interview,
}

impl LongVideoKind {
    pub const ALL: [LongVideoKind; 4] = [LongVideoKind::Casme2Lv, LongVideoKind::SammLv, LongVideoKind::Casme3Lv, LongVideoKind::Interview];

    pub fn name(self) -> &'static str {
        match self {
            LongVideoKind::Casme2Lv => "casme2-lv",
            LongVideoKind::SammLv => "samm-lv",
            LongVideoKind::Casme3Lv => "casme3-lv",
            LongVideoKind::Interview => "interview",
        }
    }

    /// The layout the loader expects, for error messages and help text.
    pub fn layout(self) -> &'static str {
        match self {
            LongVideoKind::Casme2Lv => casme2::LAYOUT,
            LongVideoKind::SammLv => samm::LAYOUT,
            LongVideoKind::Casme3Lv => casme3::LAYOUT,
            LongVideoKind::Interview => interview::LAYOUT,
        }
    }

    /// The frame rate the dataset was filmed at; interview clips state theirs in truth.json.
    pub fn fps(self) -> Option<f64> {
        match self {
            LongVideoKind::Casme2Lv => Some(casme2::FPS),
            LongVideoKind::SammLv => Some(samm::FPS),
            LongVideoKind::Casme3Lv => Some(casme3::FPS),
            LongVideoKind::Interview => None,
        }
    }
}

impl Layout for LongVideoKind {
    fn layout(self) -> &'static str {
        LongVideoKind::layout(self)
    }
}

impl fmt::Display for LongVideoKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Micro- or macro-expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpressionKind {
    Micro,
    Macro,
}

impl ExpressionKind {
    pub fn name(self) -> &'static str {
        match self {
            ExpressionKind::Micro => "micro",
            ExpressionKind::Macro => "macro",
        }
    }

    /// MEGC's rule where no type is given: micro when the interval lasts at most half a second.
    pub fn by_duration(frames: i64, fps: f64) -> ExpressionKind {
        if frames as f64 <= 0.5 * fps { ExpressionKind::Micro } else { ExpressionKind::Macro }
    }

    /// The kind a type cell names: text holding "micro" or "macro" ("Micro - 1/2",
    /// "macro-expression", "Macro-expression"), ignoring case.
    fn of_text(text: &str) -> Option<ExpressionKind> {
        let text = text.to_lowercase();
        match (text.contains("micro"), text.contains("macro")) {
            (true, false) => Some(ExpressionKind::Micro),
            (false, true) => Some(ExpressionKind::Macro),
            _ => None,
        }
    }
}

impl fmt::Display for ExpressionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One annotated expression: frame numbers as in the frame file names, inclusive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrueInterval {
    pub onset: i64,
    /// None where the annotation gives none (or one outside onset..offset).
    pub apex: Option<i64>,
    pub offset: i64,
    pub kind: ExpressionKind,
    /// The emotion (or, where the dataset gives none, the action units) as written; may be empty.
    pub label: String,
    /// Where it came from, e.g. "CAS(ME)^2code_final.xlsx row 14".
    pub source: String,
}

impl TrueInterval {
    /// offset − onset + 1.
    pub fn duration_frames(&self) -> i64 {
        self.offset - self.onset + 1
    }
}

/// One whole recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LongVideo {
    /// Unique within the set and filesystem-safe, e.g. "15_0101disgustingteeth", "006_1",
    /// "spNO.1_a".
    pub id: String,
    /// The person filmed (the leave-one-subject-out group), e.g. "s15", "006", "spNO.1".
    pub subject: String,
    /// The folder holding the frames.
    pub dir: PathBuf,
    pub fps: f64,
    /// Frame numbers present, ascending.
    pub frames: Vec<i64>,
    /// Sorted by onset (then offset).
    pub intervals: Vec<TrueInterval>,
}

impl LongVideo {
    /// The frame files by number, listed afresh from `dir`.
    pub fn frame_folder(&self) -> Result<FrameFolder> {
        Ok(FrameFolder::list(&self.dir)?)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LongVideoSet {
    pub kind: LongVideoKind,
    pub root: PathBuf,
    /// The annotation sheet read; when one dataset's annotation is split over several sheets
    /// (CAS(ME)^3's ME and MaE sheets), the folder holding the first. Interview: none, each
    /// clip's truth.json is its annotation. Each interval's `source` names its file.
    pub annotations: Option<PathBuf>,
    /// Sorted by id.
    pub videos: Vec<LongVideo>,
    pub repairs: Vec<Note>,
    pub skipped: Vec<Note>,
}

impl LongVideoSet {
    /// Sorted, distinct subjects.
    pub fn subjects(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self.videos.iter().map(|v| v.subject.as_str()).collect();
        set.into_iter().map(str::to_string).collect()
    }

    /// Intervals of `kind` over all videos.
    pub fn count(&self, kind: ExpressionKind) -> usize {
        self.videos.iter().flat_map(|v| &v.intervals).filter(|i| i.kind == kind).count()
    }

    /// Human-readable account: videos, intervals micro/macro, repairs and skips by rule.
    pub fn summary(&self) -> String {
        let intervals: usize = self.videos.iter().map(|v| v.intervals.len()).sum();
        let mut out = format!(
            "{}: {} videos of {} subjects, {} intervals ({} micro, {} macro)\n  root: {}\n",
            self.kind,
            self.videos.len(),
            self.subjects().len(),
            intervals,
            self.count(ExpressionKind::Micro),
            self.count(ExpressionKind::Macro),
            self.root.display()
        );
        if let Some(a) = &self.annotations {
            out += &format!("  annotations: {}\n", a.display());
        }
        let mut rates: Vec<f64> = self.videos.iter().map(|v| v.fps).collect();
        rates.sort_by(f64::total_cmp);
        rates.dedup();
        let rates: Vec<String> = rates.iter().map(|r| format!("{r}")).collect();
        out += &format!("  frame rate: {} fps\n", rates.join(", "));
        let frames: usize = self.videos.iter().map(|v| v.frames.len()).sum();
        let empty = self.videos.iter().filter(|v| v.intervals.is_empty()).count();
        out += &format!("  frames: {frames}; videos without intervals: {empty}\n");
        for (title, notes) in [("repairs", &self.repairs), ("skipped", &self.skipped)] {
            out += &format!("  {title}: {}\n", notes.len());
            let mut by_rule: BTreeMap<&str, usize> = BTreeMap::new();
            for n in notes {
                *by_rule.entry(rule_of(&n.message)).or_default() += 1;
            }
            for (rule, n) in by_rule {
                out += &format!("    {n} × {rule}\n");
            }
        }
        out
    }
}

/// Loads the long videos of `kind` under `root` with their true intervals.
///
/// `annotations` overrides where the sheet is (for casme3-lv it may also be the folder holding
/// the sheets); by default the loader looks for the dataset's known sheet names under `root`
/// and says which names it looked for when none is found. Interview clips carry their
/// annotation in truth.json and refuse it.
pub fn load_long_videos(kind: LongVideoKind, root: &Path, annotations: Option<&Path>) -> Result<LongVideoSet> {
    if !root.is_dir() {
        bail!("long-video root {} is not a folder; for {kind} it must hold {}", root.display(), kind.layout());
    }
    if let Some(a) = annotations
        && !a.exists()
    {
        bail!("annotation path {} does not exist", a.display());
    }
    match kind {
        LongVideoKind::Casme2Lv => casme2::load(root, annotations),
        LongVideoKind::SammLv => samm::load(root, annotations),
        LongVideoKind::Casme3Lv => casme3::load(root, annotations),
        LongVideoKind::Interview => interview::load(root, annotations),
    }
}

/// A key-frame cell as written: a whole number (any sign) or other text.
#[derive(Debug, Clone, PartialEq)]
enum Mark {
    Number(i64),
    Text(String),
}

impl Mark {
    fn of(cell: &Cell) -> Mark {
        cell.integer().map_or_else(|| Mark::Text(cell.text()), Mark::Number)
    }

    /// The frame number, or None where the mark means "not coded" (rule 1).
    fn frame(&self, zero_based: bool) -> Option<i64> {
        match self {
            Mark::Number(n) if *n > 0 || (*n == 0 && zero_based) => Some(*n),
            _ => None,
        }
    }

    fn raw(&self) -> String {
        match self {
            Mark::Number(n) => n.to_string(),
            Mark::Text(t) => t.clone(),
        }
    }
}

/// What the annotation says about micro or macro.
#[derive(Debug, Clone, PartialEq)]
enum KindMark {
    Stated(ExpressionKind),
    /// A type cell that names neither (blank or other text), or no type column.
    Unstated(String),
}

impl KindMark {
    fn of_text(text: &str) -> KindMark {
        ExpressionKind::of_text(text).map_or_else(|| KindMark::Unstated(text.trim().to_string()), KindMark::Stated)
    }
}

/// One annotation row (or truth.json event), before the interval rules.
#[derive(Debug, Clone)]
struct Row {
    /// Id of the video it belongs to.
    video: String,
    /// Where that video's frames should be, for messages.
    dir: PathBuf,
    onset: Mark,
    apex: Mark,
    offset: Mark,
    kind: KindMark,
    label: String,
    /// "CAS(ME)^2code_final.xlsx row 14".
    source: String,
    /// The full path and row, for errors.
    at: String,
}

/// Collects videos and rows, applying the rules of the module doc.
struct Builder {
    kind: LongVideoKind,
    root: PathBuf,
    annotations: Option<PathBuf>,
    /// Where the video folders were looked for, for the error when there are none.
    frames_root: PathBuf,
    videos: BTreeMap<String, LongVideo>,
    /// Video folders left out for holding no frames.
    frameless: HashSet<String>,
    repairs: Vec<Note>,
    skipped: Vec<Note>,
    rows_named: usize,
    rows_matched: usize,
    /// "<sheet row>: <missing folder>" of the first row whose video is not there.
    first_missing: Option<String>,
}

impl Builder {
    fn new(kind: LongVideoKind, root: &Path, annotations: Option<PathBuf>, frames_root: &Path) -> Builder {
        Builder {
            kind,
            root: root.to_path_buf(),
            annotations,
            frames_root: frames_root.to_path_buf(),
            videos: BTreeMap::new(),
            frameless: HashSet::new(),
            repairs: Vec::new(),
            skipped: Vec::new(),
            rows_named: 0,
            rows_matched: 0,
            first_missing: None,
        }
    }

    fn repair(&mut self, sample: &str, source: &str, message: String) {
        self.repairs.push(Note { sample: sample.to_string(), source: source.to_string(), message });
    }

    fn skip(&mut self, sample: &str, source: &str, message: String) {
        self.skipped.push(Note { sample: sample.to_string(), source: source.to_string(), message });
    }

    /// `dir` relative to the root, as the source of a note about a folder.
    fn place(&self, dir: &Path) -> String {
        dir.strip_prefix(&self.root).unwrap_or(dir).display().to_string()
    }

    /// Adds the video whose frames are in `dir`: listed, gaps noted, left out if frameless.
    fn add_video(&mut self, id: String, subject: String, dir: &Path, fps: f64) -> Result<()> {
        let place = self.place(dir);
        if self.videos.contains_key(&id) || self.frameless.contains(&id) {
            self.skip(&id, &place, format!("duplicate video id → folder left out: {}", dir.display()));
            return Ok(());
        }
        let frames: Vec<i64> = FrameFolder::list(dir)?.iter().map(|(n, _)| n).collect();
        if frames.is_empty() {
            self.skip(
                &id,
                &place,
                format!(
                    "video folder without numbered frames → video left out: {} holds no .jpg/.jpeg/.png/.bmp \
                     file whose name ends in a frame number",
                    dir.display()
                ),
            );
            self.frameless.insert(id);
            return Ok(());
        }
        if let Some(gaps) = describe_gaps(&frames) {
            self.repair(&id, &place, format!("frame gaps → frames left missing: {gaps}"));
        }
        let video = LongVideo { id: id.clone(), subject, dir: dir.to_path_buf(), fps, frames, intervals: Vec::new() };
        self.videos.insert(id, video);
        Ok(())
    }

    /// Applies the interval rules to `row` and files the interval under its video.
    fn add_row(&mut self, row: Row) {
        self.rows_named += 1;
        let Some(video) = self.videos.get_mut(&row.video) else {
            if self.frameless.contains(&row.video) {
                self.rows_matched += 1;
                let message = format!("video without frames → row skipped: {}", row.dir.display());
                self.skip(&row.video, &row.source, message);
            } else {
                self.first_missing.get_or_insert_with(|| format!("{}: {}", row.at, row.dir.display()));
                let message = format!("video folder missing → row skipped: {}", row.dir.display());
                self.skip(&row.video, &row.source, message);
            }
            return;
        };
        self.rows_matched += 1;
        match resolve(&row, video) {
            Ok((interval, notes)) => {
                video.intervals.push(interval);
                for message in notes {
                    self.repairs.push(Note { sample: row.video.clone(), source: row.source.clone(), message });
                }
            }
            Err(reason) => self.skip(&row.video, &row.source, reason),
        }
    }

    fn finish(mut self) -> Result<LongVideoSet> {
        if self.videos.is_empty() {
            bail!(
                "{}: no video folder with frames under it; the {} root must hold {}",
                self.frames_root.display(),
                self.kind,
                self.kind.layout()
            );
        }
        if self.rows_named > 0 && self.rows_matched == 0 {
            bail!(
                "no annotation row names a video folder that exists, so the annotation and the frame tree \
                 do not belong together; the first, {}, is missing. The {} root must hold {}",
                self.first_missing.as_deref().unwrap_or("?"),
                self.kind,
                self.kind.layout()
            );
        }
        let mut overlaps = Vec::new();
        for video in self.videos.values_mut() {
            video.intervals.sort_by_key(|i| (i.onset, i.offset));
            for (k, a) in video.intervals.iter().enumerate() {
                for b in video.intervals[k + 1..].iter().take_while(|b| b.onset <= a.offset) {
                    let message = format!(
                        "intervals overlap → both kept: {}..{} ({}) and {}..{} ({})",
                        a.onset, a.offset, a.source, b.onset, b.offset, b.source
                    );
                    overlaps.push(Note { sample: video.id.clone(), source: b.source.clone(), message });
                }
            }
        }
        self.repairs.extend(overlaps);
        Ok(LongVideoSet {
            kind: self.kind,
            root: self.root,
            annotations: self.annotations,
            videos: self.videos.into_values().collect(),
            repairs: self.repairs,
            skipped: self.skipped,
        })
    }
}

/// The interval `row` marks in `video` with its repair notes, or why it cannot be used.
fn resolve(row: &Row, video: &LongVideo) -> Result<(TrueInterval, Vec<String>), String> {
    let mut notes = Vec::new();
    let (first, last) = (video.frames[0], *video.frames.last().expect("videos have frames"));
    let zero_based = first == 0;
    let Some(onset) = row.onset.frame(zero_based) else {
        return Err(format!("onset missing → row skipped: {:?}", row.onset.raw()));
    };
    let mut apex = row.apex.frame(zero_based);
    let offset = match (row.offset.frame(zero_based), apex) {
        (Some(n), _) => n,
        (None, Some(a)) => {
            notes.push(format!("offset missing → the apex (MEGC): {:?} → {a}", row.offset.raw()));
            a
        }
        (None, None) => {
            return Err(format!("offset and apex missing → row skipped: offset {:?}, apex {:?}", row.offset.raw(), row.apex.raw()));
        }
    };
    if onset > offset {
        return Err(format!("onset after offset → row skipped: onset {onset} > offset {offset}"));
    }
    let duration = offset - onset + 1;
    let kind = match &row.kind {
        KindMark::Stated(kind) => *kind,
        KindMark::Unstated(raw) => {
            let kind = ExpressionKind::by_duration(duration, video.fps);
            let rule = if raw.is_empty() { "expression type missing" } else { "expression type unrecognised" };
            notes.push(format!("{rule} → by duration (micro ≤ 0.5 s): {raw:?}, {duration} frames at {} fps → {kind}", video.fps));
            kind
        }
    };
    if offset < first || onset > last {
        return Err(format!("interval outside the video → row skipped: {onset}..{offset}, video frames {first}..{last}"));
    }
    let (clipped_onset, clipped_offset) = (onset.max(first), offset.min(last));
    if (clipped_onset, clipped_offset) != (onset, offset) {
        notes.push(format!("interval beyond the video → clipped to its frames: {onset}..{offset} → {clipped_onset}..{clipped_offset}"));
    }
    match apex {
        None => notes.push(format!("apex missing → none: {:?}", row.apex.raw())),
        Some(a) if !(clipped_onset..=clipped_offset).contains(&a) => {
            notes.push(format!("apex outside onset..offset → none: apex {a} not in {clipped_onset}..{clipped_offset}"));
            apex = None;
        }
        Some(_) => {}
    }
    let interval =
        TrueInterval { onset: clipped_onset, apex, offset: clipped_offset, kind, label: row.label.clone(), source: row.source.clone() };
    Ok((interval, notes))
}

/// "3 frames in 2 gaps: 40..41, 77" for the missing numbers between the first and last frame.
fn describe_gaps(frames: &[i64]) -> Option<String> {
    let gaps: Vec<(i64, i64)> = frames.windows(2).filter(|w| w[1] > w[0] + 1).map(|w| (w[0] + 1, w[1] - 1)).collect();
    if gaps.is_empty() {
        return None;
    }
    let missing: i64 = gaps.iter().map(|(a, b)| b - a + 1).sum();
    const SHOWN: usize = 4;
    let mut shown: Vec<String> = gaps.iter().take(SHOWN).map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}..{b}") }).collect();
    if gaps.len() > SHOWN {
        shown.push("…".to_string());
    }
    let noun = if gaps.len() == 1 { "gap" } else { "gaps" };
    Some(format!("{missing} frames in {} {noun}: {}", gaps.len(), shown.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::testdata::write_frames;

    #[test]
    fn kinds_round_trip_through_names_and_serde() {
        for kind in LongVideoKind::ALL {
            assert_eq!(<LongVideoKind as clap::ValueEnum>::from_str(kind.name(), false).unwrap(), kind);
            assert_eq!(kind.to_string(), kind.name());
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{}\"", kind.name()));
            assert_eq!(serde_json::from_str::<LongVideoKind>(&format!("\"{kind}\"")).unwrap(), kind);
            assert!(!kind.layout().is_empty());
        }
        let listed: Vec<String> =
            LongVideoKind::ALL.iter().map(|k| clap::ValueEnum::to_possible_value(k).unwrap().get_name().to_string()).collect();
        assert_eq!(listed, ["casme2-lv", "samm-lv", "casme3-lv", "interview"]);
        assert!(<LongVideoKind as clap::ValueEnum>::from_str("casme2", false).is_err());
        assert_eq!(serde_json::to_string(&ExpressionKind::Macro).unwrap(), "\"macro\"");
        assert_eq!(serde_json::from_str::<ExpressionKind>("\"micro\"").unwrap(), ExpressionKind::Micro);
        assert_eq!(LongVideoKind::SammLv.fps(), Some(200.0));
        assert_eq!(LongVideoKind::Interview.fps(), None);
    }

    #[test]
    fn types_are_read_from_text_and_otherwise_by_duration() {
        use ExpressionKind::{Macro, Micro};
        for (text, kind) in [("micro-expression", Some(Micro)), ("Micro - 1/2", Some(Micro)), ("Macro", Some(Macro)), ("", None)] {
            assert_eq!(ExpressionKind::of_text(text), kind, "{text}");
        }
        assert_eq!(ExpressionKind::of_text("micro or macro?"), None);
        assert_eq!(ExpressionKind::by_duration(15, 30.0), Micro);
        assert_eq!(ExpressionKind::by_duration(16, 30.0), Macro);
        assert_eq!(ExpressionKind::by_duration(100, 200.0), Micro);
        assert_eq!(ExpressionKind::by_duration(101, 200.0), Macro);
    }

    fn video(frames: Vec<i64>) -> LongVideo {
        LongVideo { id: "v".into(), subject: "s".into(), dir: PathBuf::from("v"), fps: 30.0, frames, intervals: Vec::new() }
    }

    fn row(onset: Mark, apex: Mark, offset: Mark, kind: KindMark) -> Row {
        Row {
            video: "v".into(),
            dir: PathBuf::from("v"),
            onset,
            apex,
            offset,
            kind,
            label: "happy".into(),
            source: "s.xlsx row 2".into(),
            at: "/d/s.xlsx row 2".into(),
        }
    }

    use KindMark::{Stated, Unstated};
    use Mark::{Number as N, Text as T};

    #[test]
    fn the_interval_rules() {
        let v = video((1..=100).collect());
        let micro = Stated(ExpressionKind::Micro);
        let (i, notes) = resolve(&row(N(10), N(12), N(20), micro.clone()), &v).unwrap();
        assert_eq!((i.onset, i.apex, i.offset, i.kind), (10, Some(12), 20, ExpressionKind::Micro));
        assert!(notes.is_empty());
        assert_eq!((i.label.as_str(), i.source.as_str(), i.duration_frames()), ("happy", "s.xlsx row 2", 11));

        // 0 and -1 are "not coded" when the video has no frame 0
        let (i, notes) = resolve(&row(N(10), N(0), N(20), micro.clone()), &v).unwrap();
        assert_eq!(i.apex, None);
        assert_eq!(notes, ["apex missing → none: \"0\""]);
        let (i, notes) = resolve(&row(N(10), N(14), N(0), micro.clone()), &v).unwrap();
        assert_eq!((i.apex, i.offset), (Some(14), 14));
        assert_eq!(notes, ["offset missing → the apex (MEGC): \"0\" → 14"]);
        let err = resolve(&row(N(10), N(-1), T("".into()), micro.clone()), &v).unwrap_err();
        assert_eq!(err, "offset and apex missing → row skipped: offset \"\", apex \"-1\"");
        let err = resolve(&row(N(0), N(3), N(5), micro.clone()), &v).unwrap_err();
        assert_eq!(err, "onset missing → row skipped: \"0\"");
        // but frame 0 is a frame where the video has one
        let zero = video((0..=50).collect());
        assert_eq!(resolve(&row(N(0), N(0), N(5), micro.clone()), &zero).unwrap().0.apex, Some(0));

        let err = resolve(&row(N(30), N(25), N(20), micro.clone()), &v).unwrap_err();
        assert_eq!(err, "onset after offset → row skipped: onset 30 > offset 20");
        let err = resolve(&row(N(101), N(105), N(110), micro.clone()), &v).unwrap_err();
        assert_eq!(err, "interval outside the video → row skipped: 101..110, video frames 1..100");

        let (i, notes) = resolve(&row(N(90), N(99), N(120), micro.clone()), &v).unwrap();
        assert_eq!((i.onset, i.apex, i.offset), (90, Some(99), 100));
        assert_eq!(notes, ["interval beyond the video → clipped to its frames: 90..120 → 90..100"]);
        let (i, notes) = resolve(&row(N(90), N(110), N(120), micro.clone()), &v).unwrap();
        assert_eq!(i.apex, None);
        assert_eq!(notes[1], "apex outside onset..offset → none: apex 110 not in 90..100");

        let (i, notes) = resolve(&row(N(10), N(12), N(25), Unstated(String::new())), &v).unwrap();
        assert_eq!(i.kind, ExpressionKind::Macro);
        assert_eq!(notes, ["expression type missing → by duration (micro ≤ 0.5 s): \"\", 16 frames at 30 fps → macro"]);
        assert_eq!(rule_of(&notes[0]), "expression type missing → by duration (micro ≤ 0.5 s)");
        let (i, notes) = resolve(&row(N(10), N(12), N(24), Unstated("others".into())), &v).unwrap();
        assert_eq!(i.kind, ExpressionKind::Micro);
        assert!(notes[0].starts_with("expression type unrecognised → by duration"), "{notes:?}");
    }

    #[test]
    fn gaps_are_described_with_their_ranges() {
        assert_eq!(describe_gaps(&[1, 2, 3]), None);
        assert_eq!(describe_gaps(&[1, 4, 5, 7]).as_deref(), Some("3 frames in 2 gaps: 2..3, 6"));
        let many: Vec<i64> = (0..20).map(|k| k * 2).collect();
        assert!(describe_gaps(&many).unwrap().ends_with("1, 3, 5, 7, …"));
    }

    #[test]
    fn builder_notes_gaps_frameless_folders_missing_videos_and_overlaps() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_frames(&root.join("a"), &[1, 2, 3, 6, 7, 8, 9, 10], |n| format!("img{n}.jpg"));
        std::fs::create_dir_all(root.join("b")).unwrap();
        std::fs::write(root.join("b/readme.txt"), "no frames").unwrap();
        let mut b = Builder::new(LongVideoKind::Casme2Lv, root, None, root);
        b.add_video("a".into(), "s1".into(), &root.join("a"), 30.0).unwrap();
        b.add_video("b".into(), "s1".into(), &root.join("b"), 30.0).unwrap();
        b.add_video("a".into(), "s2".into(), &root.join("b"), 30.0).unwrap();
        let mut r = row(N(2), N(3), N(7), Stated(ExpressionKind::Micro));
        r.video = "a".into();
        b.add_row(r.clone());
        r.onset = N(6);
        r.apex = N(7);
        r.offset = N(9);
        r.source = "s.xlsx row 3".into();
        b.add_row(r.clone());
        r.onset = N(1);
        r.apex = N(1);
        r.offset = N(1);
        r.source = "s.xlsx row 4".into();
        b.add_row(r.clone());
        r.video = "b".into();
        b.add_row(r.clone());
        r.video = "c".into();
        r.dir = root.join("c");
        b.add_row(r);
        let set = b.finish().unwrap();
        assert_eq!(set.videos.len(), 1);
        let v = &set.videos[0];
        assert_eq!(v.frames, [1, 2, 3, 6, 7, 8, 9, 10]);
        let spans: Vec<(i64, i64)> = v.intervals.iter().map(|i| (i.onset, i.offset)).collect();
        assert_eq!(spans, [(1, 1), (2, 7), (6, 9)]);
        let folder = v.frame_folder().unwrap();
        assert_eq!((folder.path(6), folder.contains(4)), (root.join("a/img6.jpg").as_path(), false));
        let repairs: Vec<&str> = set.repairs.iter().map(|n| n.message.as_str()).collect();
        assert_eq!(
            repairs,
            [
                "frame gaps → frames left missing: 2 frames in 1 gap: 4..5",
                "intervals overlap → both kept: 2..7 (s.xlsx row 2) and 6..9 (s.xlsx row 3)",
            ]
        );
        assert_eq!((set.repairs[0].source.as_str(), set.repairs[1].source.as_str()), ("a", "s.xlsx row 3"));
        let skipped: Vec<&str> = set.skipped.iter().map(|n| rule_of(&n.message)).collect();
        assert_eq!(
            skipped,
            [
                "video folder without numbered frames → video left out",
                "duplicate video id → folder left out",
                "video without frames → row skipped",
                "video folder missing → row skipped",
            ]
        );
        let s = set.summary();
        assert!(s.starts_with("casme2-lv: 1 videos of 1 subjects, 3 intervals (3 micro, 0 macro)"), "{s}");
        assert!(s.contains("frame rate: 30 fps") && s.contains("frames: 8; videos without intervals: 0"), "{s}");
        assert!(s.contains("repairs: 2\n    1 × frame gaps → frames left missing\n    1 × intervals overlap"), "{s}");
        assert!(s.contains("skipped: 4\n") && s.contains("1 × video folder missing → row skipped"), "{s}");
    }

    #[test]
    fn no_video_or_no_matching_row_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let err = Builder::new(LongVideoKind::SammLv, root, None, &root.join("SAMM_longvideos")).finish().unwrap_err().to_string();
        assert!(err.contains("SAMM_longvideos: no video folder with frames") && err.contains("006_1_0001.jpg"), "{err}");

        write_frames(&root.join("a"), &[1, 2, 3], |n| format!("{n}.jpg"));
        let mut b = Builder::new(LongVideoKind::SammLv, root, None, root);
        b.add_video("a".into(), "s".into(), &root.join("a"), 200.0).unwrap();
        let mut r = row(N(1), N(2), N(3), Stated(ExpressionKind::Micro));
        r.video = "x".into();
        r.dir = root.join("x");
        b.add_row(r);
        let err = b.finish().unwrap_err().to_string();
        assert!(err.contains("/d/s.xlsx row 2") && err.contains(&root.join("x").display().to_string()), "{err}");
        assert!(err.contains("do not belong together"), "{err}");

        let err = load_long_videos(LongVideoKind::SammLv, &root.join("nope"), None).unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("is not a folder") && err.contains("samm-lv"), "{err}");
        let err = load_long_videos(LongVideoKind::SammLv, root, Some(&root.join("x.xlsx"))).unwrap_err().to_string();
        assert!(err.contains("x.xlsx") && err.contains("does not exist"), "{err}");
    }
}
