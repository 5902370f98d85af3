//! Frame folders: the numbered image files of one clip or video, indexed by frame number.
//!
//! Annotation sheets name frames by number (`img46.jpg` is frame 46, `006_05562.jpg` is 5562,
//! `S005_001_00000011.png` is 11), so files are indexed by the number at the end of their stem,
//! never by their position in a directory listing (where `img10` sorts before `img9`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp"];

/// The numbered frame images of one folder.
#[derive(Debug, Clone)]
pub(super) struct FrameFolder {
    dir: PathBuf,
    frames: BTreeMap<i64, PathBuf>,
}

impl FrameFolder {
    /// Lists `dir`; files that are not images or carry no trailing number are ignored.
    /// When two files share a number (`1.jpg` and `01.jpg`) the first name in byte order wins.
    pub(super) fn list(dir: &Path) -> Result<FrameFolder> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            if entry.file_type().map(|t| t.is_file() || t.is_symlink()).unwrap_or(false) {
                names.push(entry.path());
            }
        }
        names.sort();
        let mut frames = BTreeMap::new();
        for path in names {
            if let Some(n) = frame_number(&path) {
                frames.entry(n).or_insert(path);
            }
        }
        Ok(FrameFolder { dir: dir.to_path_buf(), frames })
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Smallest frame number. Panics on an empty folder (callers reject those first).
    pub(super) fn first(&self) -> i64 {
        *self.frames.keys().next().expect("frame folder is not empty")
    }

    /// Largest frame number. Panics on an empty folder (callers reject those first).
    pub(super) fn last(&self) -> i64 {
        *self.frames.keys().next_back().expect("frame folder is not empty")
    }

    pub(super) fn contains(&self, n: i64) -> bool {
        self.frames.contains_key(&n)
    }

    /// The existing frame number closest to `n`; on a tie the earlier frame.
    pub(super) fn nearest(&self, n: i64) -> i64 {
        let below = self.frames.range(..=n).next_back().map(|(k, _)| *k);
        let above = self.frames.range(n..).next().map(|(k, _)| *k);
        match (below, above) {
            (Some(b), Some(a)) => {
                if n - b <= a - n {
                    b
                } else {
                    a
                }
            }
            (Some(b), None) => b,
            (None, Some(a)) => a,
            (None, None) => panic!("nearest frame asked of an empty folder"),
        }
    }

    /// The file of frame `n`, which must exist.
    pub(super) fn path(&self, n: i64) -> &Path {
        &self.frames[&n]
    }
}

/// The frame number of an image file: the digits at the end of its stem.
pub(super) fn frame_number(path: &Path) -> Option<i64> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    if !IMAGE_EXTENSIONS.contains(&ext.as_str()) {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    let digits = stem.len() - stem.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return None;
    }
    stem[stem.len() - digits..].parse().ok()
}

/// `base` joined with `parts`, where each part matches an existing entry case-insensitively if
/// no entry has its exact name (sheets write `A` for folder `a`). Parts that match nothing are
/// kept as written, so an error can show the path that was expected.
pub(super) fn child_path(base: &Path, parts: &[&str]) -> PathBuf {
    let mut path = base.to_path_buf();
    for part in parts {
        let exact = path.join(part);
        path = if exact.exists() { exact } else { case_insensitive_child(&path, part).unwrap_or(exact) };
    }
    path
}

fn case_insensitive_child(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut matches: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .map(|e| e.path())
        .collect();
    matches.sort();
    matches.into_iter().next()
}

/// Sorted names of the sub-folders of `dir` (hidden ones left out).
pub(super) fn subdirectories(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        if entry.path().is_dir()
            && let Some(name) = entry.file_name().to_str()
            && !name.starts_with('.')
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Archives often unpack to `X/X/...`; descend into such a doubled folder.
pub(super) fn undouble(dir: PathBuf) -> PathBuf {
    match dir.file_name() {
        Some(name) if dir.join(name).is_dir() => dir.join(name),
        _ => dir,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::testdata::write_frames;

    #[test]
    fn frames_are_indexed_by_number_not_by_name_order() {
        let dir = tempfile::tempdir().unwrap();
        write_frames(dir.path(), &[9, 10, 11, 100], |n| format!("img{n}.jpg"));
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        std::fs::write(dir.path().join("cover.jpg"), "no number").unwrap();
        std::fs::write(dir.path().join("truth_onset_apex.flo"), "flow").unwrap();
        let folder = FrameFolder::list(dir.path()).unwrap();
        assert_eq!((folder.first(), folder.last()), (9, 100));
        assert_eq!(folder.nearest(50), 11);
        assert_eq!(folder.path(10), dir.path().join("img10.jpg"));
        assert!(folder.contains(11) && !folder.contains(12));
    }

    #[test]
    fn frame_numbers_come_from_the_end_of_the_stem() {
        assert_eq!(frame_number(Path::new("img46.jpg")), Some(46));
        assert_eq!(frame_number(Path::new("reg_img7.JPG")), Some(7));
        assert_eq!(frame_number(Path::new("006_05562.jpg")), Some(5562));
        assert_eq!(frame_number(Path::new("S005_001_00000011.png")), Some(11));
        assert_eq!(frame_number(Path::new("355.jpg")), Some(355));
        assert_eq!(frame_number(Path::new("img.jpg")), None);
        assert_eq!(frame_number(Path::new("12.txt")), None);
    }

    #[test]
    fn nearest_prefers_the_closer_then_the_earlier_frame() {
        let dir = tempfile::tempdir().unwrap();
        write_frames(dir.path(), &[10, 14, 20], |n| format!("{n}.png"));
        let folder = FrameFolder::list(dir.path()).unwrap();
        assert_eq!(folder.nearest(14), 14);
        assert_eq!(folder.nearest(11), 10);
        assert_eq!(folder.nearest(12), 10);
        assert_eq!(folder.nearest(13), 14);
        assert_eq!(folder.nearest(1), 10);
        assert_eq!(folder.nearest(99), 20);
    }

    #[test]
    fn child_paths_match_case_insensitively_only_when_needed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("spNO.1/a/color")).unwrap();
        assert_eq!(child_path(dir.path(), &["spNO.1", "A", "color"]), dir.path().join("spNO.1/a/color"));
        assert_eq!(child_path(dir.path(), &["spNO.2", "a"]), dir.path().join("spNO.2/a"));
        std::fs::create_dir_all(dir.path().join("X/X/sub01")).unwrap();
        assert_eq!(undouble(dir.path().join("X")), dir.path().join("X/X"));
        assert_eq!(undouble(dir.path().join("spNO.1")), dir.path().join("spNO.1"));
        assert_eq!(subdirectories(dir.path()).unwrap(), vec!["X".to_string(), "spNO.1".to_string()]);
    }
}
