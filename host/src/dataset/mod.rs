//! Dataset loaders: CASME II, SAMM, MMEW, CAS(ME)^3 part A and CK+, each read in the layout its
//! owners distribute (frame folders plus annotation sheets), so nothing has to be reorganised by
//! hand before training; and the synthetic interview clips of `mer synth interview`.
//!
//! [`load`] returns every usable clip with its key frames resolved to files that exist. The
//! datasets' annotation warts (missing apex, offset 0, frame gaps, ...) are repaired by fixed
//! rules (see `keyframes`) and every repair and every left-out row is reported, so a run's inputs
//! can be audited. Anything that cannot be repaired sensibly (a clip folder that is not there, an
//! unknown label, a missing column) is an error that names the file, the row and the path.
//!
//! [`long_video`] reads whole recordings instead (CAS(ME)^2, SAMM Long Videos, CAS(ME)^3 part A,
//! interview clips) with every micro- and macro-expression interval marked in them, for
//! spotting evaluation.

mod annotated;
mod casme2;
mod casme3;
mod ckplus;
pub mod composite;
mod frames;
mod interview;
mod keyframes;
pub mod long_video;
mod mmew;
mod samm;
pub mod samples;
mod sheet;
#[cfg(test)]
mod testdata;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use mer_shared::labels::{LabelTally, Taxonomy};
use serde::{Deserialize, Serialize};

/// Which dataset layout to read. Command-line and display names: "casme2", "samm", "mmew",
/// "casme3", "ckplus", "interview".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lowercase")]
pub enum DatasetKind {
    Casme2,
    Samm,
    Mmew,
    Casme3,
    CkPlus,
    Interview,
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 6] =
        [DatasetKind::Casme2, DatasetKind::Samm, DatasetKind::Mmew, DatasetKind::Casme3, DatasetKind::CkPlus, DatasetKind::Interview];

    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Casme2 => "casme2",
            DatasetKind::Samm => "samm",
            DatasetKind::Mmew => "mmew",
            DatasetKind::Casme3 => "casme3",
            DatasetKind::CkPlus => "ckplus",
            DatasetKind::Interview => "interview",
        }
    }

    /// The class sets this dataset can be trained on; the first is the default.
    pub fn taxonomies(self) -> &'static [Taxonomy] {
        match self {
            DatasetKind::Casme2 => &[Taxonomy::Casme2Five, Taxonomy::Casme2Three],
            DatasetKind::Samm => &[Taxonomy::SammThree],
            DatasetKind::Mmew => &[Taxonomy::MmewSix, Taxonomy::MmewFour],
            DatasetKind::Casme3 => &[Taxonomy::Casme3Seven, Taxonomy::Casme3Four, Taxonomy::Casme3Three],
            DatasetKind::CkPlus => &[Taxonomy::CkPlusSeven],
            DatasetKind::Interview => &[Taxonomy::Casme2Five, Taxonomy::Casme2Three],
        }
    }

    pub fn default_taxonomy(self) -> Taxonomy {
        self.taxonomies()[0]
    }

    /// The layout the loader expects, for error messages and help text.
    pub fn layout(self) -> &'static str {
        match self {
            DatasetKind::Casme2 => casme2::LAYOUT,
            DatasetKind::Samm => samm::LAYOUT,
            DatasetKind::Mmew => mmew::LAYOUT,
            DatasetKind::Casme3 => casme3::LAYOUT,
            DatasetKind::CkPlus => ckplus::LAYOUT,
            DatasetKind::Interview => interview::LAYOUT,
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One labelled clip with its key frames resolved to files that exist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipSample {
    /// Unique within the dataset and filesystem-safe, e.g. "sub01_EP02_01f".
    pub id: String,
    /// The leave-one-subject-out group, e.g. "sub01", "006", "spNO.1", "S005".
    pub subject: String,
    /// The label as written in the annotation.
    pub raw_label: String,
    /// Index in the taxonomy.
    pub class: usize,
    /// The clip's first frame (face detection runs on it).
    pub first: PathBuf,
    pub onset: PathBuf,
    pub apex: PathBuf,
    pub offset: PathBuf,
    /// Where it came from, e.g. "CASME2-coding-20140508.xlsx row 14".
    pub source: String,
}

/// A rule applied to repair a known wart, or a sample left out, with the reason.
/// Messages read "<rule>: <details>"; the summary groups them by rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub sample: String,
    pub source: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadedDataset {
    pub kind: DatasetKind,
    pub taxonomy: Taxonomy,
    pub root: PathBuf,
    /// The annotation sheet (CK+: the folder of emotion label files; interview: none, each clip's
    /// truth.json is its annotation).
    pub annotations: Option<PathBuf>,
    /// Sorted by (subject, id).
    pub samples: Vec<ClipSample>,
    /// Kept samples per class and excluded raw labels.
    pub tally: LabelTally,
    pub repairs: Vec<Note>,
    pub skipped: Vec<Note>,
}

impl LoadedDataset {
    fn new(kind: DatasetKind, taxonomy: Taxonomy, root: &Path, annotations: Option<PathBuf>) -> LoadedDataset {
        LoadedDataset {
            kind,
            taxonomy,
            root: root.to_path_buf(),
            annotations,
            samples: Vec::new(),
            tally: LabelTally::default(),
            repairs: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// Sorted, distinct subjects.
    pub fn subjects(&self) -> Vec<String> {
        let mut subjects: Vec<String> = self.samples.iter().map(|s| s.subject.clone()).collect();
        subjects.sort();
        subjects.dedup();
        subjects
    }

    /// Human-readable account: samples per class and per subject, repairs and skips by rule.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{} ({}): {} samples from {} subjects\n  root: {}\n",
            self.kind,
            self.taxonomy,
            self.samples.len(),
            self.subjects().len(),
            self.root.display()
        );
        if let Some(a) = &self.annotations {
            out += &format!("  annotations: {}\n", a.display());
        }
        let mut per_class = vec![0usize; self.taxonomy.num_classes()];
        for s in &self.samples {
            per_class[s.class] += 1;
        }
        let classes: Vec<String> = self.taxonomy.classes().iter().zip(&per_class).map(|(c, n)| format!("{c} {n}")).collect();
        out += &format!("  per class: {}\n", classes.join(", "));
        let mut per_subject: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &self.samples {
            *per_subject.entry(&s.subject).or_default() += 1;
        }
        let subjects: Vec<String> = per_subject.iter().map(|(s, n)| format!("{s} {n}")).collect();
        out += &format!("  per subject: {}\n", subjects.join(", "));
        if !self.tally.skipped.is_empty() {
            let excluded: Vec<String> = self.tally.skipped.iter().map(|(l, n)| format!("{l} {n}")).collect();
            out += &format!("  excluded labels: {}\n", excluded.join(", "));
        }
        for (title, notes) in [("repairs", &self.repairs), ("skipped", &self.skipped)] {
            out += &format!("  {title}: {}\n", notes.len());
            let mut by_rule: BTreeMap<&str, usize> = BTreeMap::new();
            for n in notes {
                *by_rule.entry(keyframes::rule_of(&n.message)).or_default() += 1;
            }
            for (rule, n) in by_rule {
                out += &format!("    {n} × {rule}\n");
            }
        }
        out
    }

    /// Records an excluded label or another reason a row is left out.
    fn skip(&mut self, sample: &str, source: &str, message: String) {
        self.skipped.push(Note { sample: sample.to_string(), source: source.to_string(), message });
    }

    fn repair(&mut self, sample: &str, source: &str, message: String) {
        self.repairs.push(Note { sample: sample.to_string(), source: source.to_string(), message });
    }

    /// Makes ids unique (numbering repeats, reported) and sorts by (subject, id).
    fn finish(mut self) -> LoadedDataset {
        let originals: HashSet<String> = self.samples.iter().map(|s| s.id.clone()).collect();
        let mut used: HashSet<String> = HashSet::new();
        let mut renamed = Vec::new();
        for s in &mut self.samples {
            if used.insert(s.id.clone()) {
                continue;
            }
            let new = (2..).map(|n| format!("{}-{n}", s.id)).find(|c| !used.contains(c) && !originals.contains(c)).unwrap();
            used.insert(new.clone());
            renamed.push((std::mem::replace(&mut s.id, new.clone()), new, s.source.clone()));
        }
        for (old, new, source) in renamed {
            self.repair(&new, &source, format!("duplicate sample id → numbered: {old} → {new}"));
        }
        self.samples.sort_by(|a, b| (&a.subject, &a.id).cmp(&(&b.subject, &b.id)));
        self
    }
}

/// Loads `kind` from `root` with the classes of `taxonomy`.
///
/// `annotations` overrides where the sheet is (CK+: the `Emotion` folder); by default the loader
/// looks for the dataset's known sheet names under `root` (and says which names it looked for
/// when none is found). Interview clips carry their annotation in truth.json and refuse it.
pub fn load(kind: DatasetKind, root: &Path, annotations: Option<&Path>, taxonomy: Taxonomy) -> Result<LoadedDataset> {
    if !kind.taxonomies().contains(&taxonomy) {
        let valid: Vec<&str> = kind.taxonomies().iter().map(|t| t.name()).collect();
        bail!("class set {taxonomy} does not belong to {kind}; choose one of {}", valid.join(", "));
    }
    if !root.is_dir() {
        bail!("dataset root {} is not a folder; for {kind} it must hold {}", root.display(), kind.layout());
    }
    if let Some(a) = annotations
        && !a.exists()
    {
        bail!("annotation path {} does not exist", a.display());
    }
    let loaded = match kind {
        DatasetKind::Casme2 => casme2::load(root, annotations, taxonomy)?,
        DatasetKind::Samm => samm::load(root, annotations, taxonomy)?,
        DatasetKind::Mmew => mmew::load(root, annotations, taxonomy)?,
        DatasetKind::Casme3 => casme3::load(root, annotations, taxonomy)?,
        DatasetKind::CkPlus => ckplus::load(root, annotations, taxonomy)?,
        DatasetKind::Interview => interview::load(root, annotations, taxonomy)?,
    };
    Ok(loaded.finish())
}

/// What a loader's messages say about the kind of dataset it reads: its name (Display) and the
/// layout its root must hold. Implemented by [`DatasetKind`] and [`long_video::LongVideoKind`].
trait Layout: fmt::Display + Copy {
    fn layout(self) -> &'static str;
}

impl Layout for DatasetKind {
    fn layout(self) -> &'static str {
        DatasetKind::layout(self)
    }
}

/// Replaces characters that are unsafe in file names with '_'.
fn safe_id(raw: &str) -> String {
    raw.trim().chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

/// The first of `candidates` (relative to `root`, "" = `root` itself) that is a folder,
/// descending into a doubled `X/X`. The error says what was expected under `root`.
fn locate_dir(root: &Path, candidates: &[&str], kind: impl Layout, what: &str) -> Result<PathBuf> {
    for c in candidates {
        let dir = if c.is_empty() { root.to_path_buf() } else { root.join(c) };
        if dir.is_dir() {
            return Ok(frames::undouble(dir));
        }
    }
    let names: Vec<String> = candidates.iter().map(|c| format!("{c:?}")).collect();
    bail!("{}: no {what} folder; looked for {} under it. The {kind} root must hold {}", root.display(), names.join(", "), kind.layout())
}

/// The annotation sheet: `given`, or the first of `names` found in one of `dirs` under `root`
/// (file names compared ignoring case).
fn locate_sheet(root: &Path, given: Option<&Path>, dirs: &[&str], names: &[&str], kind: impl Layout) -> Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    for dir in dirs {
        let dir = if dir.is_empty() { root.to_path_buf() } else { root.join(dir) };
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
        files.sort();
        for name in names {
            if let Some(found) = files.iter().find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.eq_ignore_ascii_case(name)))
            {
                return Ok(found.clone());
            }
        }
    }
    let names: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    let dirs: Vec<String> = dirs.iter().map(|d| if d.is_empty() { "the root".to_string() } else { format!("{d:?}") }).collect();
    bail!(
        "{}: no {kind} annotation sheet found; looked for {} in {}. Pass the sheet's path explicitly if it is elsewhere",
        root.display(),
        names.join(", "),
        dirs.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::testdata::{X, casme2_xlsx_header, write_frames, write_xlsx};

    #[test]
    fn kinds_round_trip_through_names_and_serde() {
        for kind in DatasetKind::ALL {
            assert_eq!(<DatasetKind as clap::ValueEnum>::from_str(kind.name(), false).unwrap(), kind);
            assert_eq!(kind.to_string(), kind.name());
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{}\"", kind.name()));
            assert_eq!(kind.default_taxonomy(), kind.taxonomies()[0]);
            assert!(kind.taxonomies().iter().all(|t| *t != Taxonomy::CompositeThree));
        }
        // The command line lists exactly these names.
        let listed: Vec<String> =
            DatasetKind::ALL.iter().map(|k| clap::ValueEnum::to_possible_value(k).unwrap().get_name().to_string()).collect();
        assert_eq!(listed, ["casme2", "samm", "mmew", "casme3", "ckplus", "interview"]);
        assert!(<DatasetKind as clap::ValueEnum>::from_str("casme", false).is_err());
        assert_eq!(DatasetKind::Mmew.taxonomies(), &[Taxonomy::MmewSix, Taxonomy::MmewFour]);
    }

    #[test]
    fn a_foreign_class_set_is_refused_with_the_valid_ones() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(DatasetKind::Casme2, dir.path(), None, Taxonomy::SammThree).unwrap_err().to_string();
        assert!(err.contains("samm-3") && err.contains("casme2-5, casme2-3"), "{err}");
    }

    #[test]
    fn a_wrong_root_says_what_was_expected() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = load(DatasetKind::Samm, &missing, None, Taxonomy::SammThree).unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("SAMM_Micro_FACS_Codes_v2.xlsx"), "{err}");
        let err = load(DatasetKind::Casme2, dir.path(), None, Taxonomy::Casme2Five).unwrap_err().to_string();
        assert!(err.contains("CASME2-coding-20140508.xlsx") && err.contains("looked for"), "{err}");
        std::fs::write(dir.path().join("CASME2-coding-20140508.xlsx"), "").unwrap();
        let err = load(DatasetKind::Casme2, dir.path(), None, Taxonomy::Casme2Five).unwrap_err().to_string();
        assert!(err.contains("CASME2_RAW_selected") && err.contains("no frame folder"), "{err}");
        let err = load(DatasetKind::Casme2, dir.path(), Some(&dir.path().join("x.xlsx")), Taxonomy::Casme2Five).unwrap_err().to_string();
        assert!(err.contains("x.xlsx") && err.contains("does not exist"), "{err}");
    }

    #[test]
    fn duplicate_ids_are_numbered_and_reported_and_samples_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (s, clip) in [("sub02", "EP01_01"), ("sub01", "EP03_02")] {
            write_frames(&root.join("CASME2_RAW_selected").join(s).join(clip), &[1, 2, 3], |n| format!("img{n}.jpg"));
        }
        let mut rows = vec![casme2_xlsx_header()];
        for (s, clip) in [(2.0, "EP01_01"), (1.0, "EP03_02"), (2.0, "EP01_01")] {
            rows.push(vec![X::N(s), X::S(clip), X::B, X::N(1.0), X::N(2.0), X::N(3.0), X::B, X::S("4"), X::S("happiness")]);
        }
        write_xlsx(&root.join("CASME2-coding-20140508.xlsx"), &[("Sheet1", rows)]);
        let d = load(DatasetKind::Casme2, root, None, Taxonomy::Casme2Five).unwrap();
        let ids: Vec<&str> = d.samples.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["sub01_EP03_02", "sub02_EP01_01", "sub02_EP01_01-2"]);
        assert_eq!(d.subjects(), ["sub01", "sub02"]);
        assert_eq!(d.repairs.len(), 1);
        assert_eq!(d.repairs[0].message, "duplicate sample id → numbered: sub02_EP01_01 → sub02_EP01_01-2");
        assert_eq!(d.repairs[0].source, "CASME2-coding-20140508.xlsx row 4");
    }

    #[test]
    fn summary_counts_classes_subjects_and_rules() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_frames(&root.join("CASME2_RAW_selected/sub01/EP01_01"), &(1..=9).collect::<Vec<_>>(), |n| format!("img{n}.jpg"));
        let mut rows = vec![casme2_xlsx_header()];
        for (apex, emotion) in [(X::S("/"), "happiness"), (X::N(4.0), "others"), (X::S("/"), "fear")] {
            rows.push(vec![X::N(1.0), X::S("EP01_01"), X::B, X::N(2.0), apex, X::N(8.0), X::B, X::S("4"), X::S(emotion)]);
        }
        write_xlsx(&root.join("CASME2-coding-20140508.xlsx"), &[("Sheet1", rows)]);
        let d = load(DatasetKind::Casme2, root, None, Taxonomy::Casme2Five).unwrap();
        let s = d.summary();
        assert!(s.starts_with("casme2 (casme2-5): 2 samples from 1 subjects"), "{s}");
        assert!(s.contains("per class: happiness 1, surprise 0, disgust 0, repression 0, others 1"), "{s}");
        assert!(s.contains("per subject: sub01 2"), "{s}");
        assert!(s.contains("excluded labels: fear 1"), "{s}");
        assert!(s.contains("1 × apex missing → middle frame of onset..offset"), "{s}");
        assert!(s.contains("1 × duplicate sample id → numbered"), "{s}");
        assert!(s.contains("skipped: 1\n    1 × label excluded from casme2-5"), "{s}");
    }
}
