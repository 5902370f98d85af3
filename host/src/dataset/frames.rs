//! Finding a dataset's folders: paths spelt case-insensitively, sub-folders, doubled archive
//! folders. The numbered frames inside a folder are `mer_shared::frames::FrameFolder`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
pub(super) use mer_shared::frames::FrameFolder;

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
