//! CK+ (Extended Cohn-Kanade): posed macro-expression sequences from neutral to peak, used to
//! pre-train. Only sequences with an emotion file are labelled.
//!
//! Layout read (ROOT = the folder given to [`super::load`]):
//! ```text
//! ROOT/cohn-kanade-images/S005/001/S005_001_00000001.png     frames; the last digits are the number
//! ROOT/Emotion/S005/001/S005_001_00000011_emotion.txt         "   3.0000000e+00": code 0-7
//! ```
//! Also found: `extended-cohn-kanade-images/cohn-kanade-images` and `Emotion_labels/Emotion`
//! (how the archives unpack). The `annotations` argument of [`super::load`] overrides the
//! `Emotion` folder. Codes: 0 neutral (excluded), 1 anger, 2 contempt, 3 disgust, 4 fear,
//! 5 happy, 6 sadness, 7 surprise (Taxonomy `ckplus-7`).
//!
//! Key frames follow the reference pre-training: onset = offset = the first frame, apex = the
//! last frame (the sequence ends at the peak). Nothing needs repairing; sequences without an
//! emotion file are reported as skipped. A label file whose image folder is missing or empty,
//! two label files for one sequence, or a code outside 0-7 is an error naming the file.
//!
//! Confirmed from public loaders and the archive documentation: folder and file naming, the
//! label file format and the code order. Assumed: the `extended-cohn-kanade-images/` wrapper.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use mer_shared::labels::{LabelMapping, Taxonomy};

use super::frames::{FrameFolder, subdirectories};
use super::{ClipSample, DatasetKind, LoadedDataset, locate_dir, safe_id};

pub(super) const LAYOUT: &str = "cohn-kanade-images/S005/001/S005_001_00000001.png and Emotion/S005/001/S005_001_00000011_emotion.txt";

const IMAGE_DIRS: &[&str] = &["cohn-kanade-images", "extended-cohn-kanade-images/cohn-kanade-images"];
const EMOTION_DIRS: &[&str] = &["Emotion", "Emotion_labels/Emotion"];
const LABEL_SUFFIX: &str = "_emotion.txt";

pub(super) fn load(root: &Path, annotations: Option<&Path>, taxonomy: Taxonomy) -> Result<LoadedDataset> {
    let kind = DatasetKind::CkPlus;
    let images = locate_dir(root, IMAGE_DIRS, kind, "image")?;
    let emotions = match annotations {
        Some(dir) if dir.is_dir() => dir.to_path_buf(),
        Some(other) => bail!("{}: the CK+ annotations must be the Emotion folder, not a file", other.display()),
        None => locate_dir(root, EMOTION_DIRS, kind, "Emotion")?,
    };
    let label_base = emotions.parent().unwrap_or(root).to_path_buf();
    let mut dataset = LoadedDataset::new(kind, taxonomy, root, Some(emotions.clone()));
    let mut labelled = HashSet::new();
    for subject in subdirectories(&emotions)? {
        for sequence in subdirectories(&emotions.join(&subject))? {
            let dir = emotions.join(&subject).join(&sequence);
            let files = label_files(&dir)?;
            let file = match files.as_slice() {
                [] => continue,
                [file] => file,
                _ => bail!("{}: {} emotion files for one sequence; expected one", dir.display(), files.len()),
            };
            labelled.insert((subject.clone(), sequence.clone()));
            let source = file.strip_prefix(&label_base).unwrap_or(file).display().to_string();
            let id = safe_id(&format!("{subject}_{sequence}"));
            let raw = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            let raw = raw.trim().to_string();
            let class = match taxonomy.map(&raw) {
                Ok(LabelMapping::Class(i)) => i,
                Ok(LabelMapping::Excluded) => {
                    dataset.tally.record(taxonomy, &raw)?;
                    dataset.skip(&id, &source, format!("label excluded from {taxonomy}: {raw}"));
                    continue;
                }
                Err(e) => bail!("{} line 1: {e}", file.display()),
            };
            let frames_dir = images.join(&subject).join(&sequence);
            if !frames_dir.is_dir() {
                bail!("{}: image sequence folder {} does not exist", file.display(), frames_dir.display());
            }
            let folder = FrameFolder::list(&frames_dir)?;
            if folder.is_empty() {
                bail!("{}: image sequence folder {} holds no numbered frame images", file.display(), frames_dir.display());
            }
            let first = folder.path(folder.first()).to_path_buf();
            dataset.tally.record(taxonomy, &raw)?;
            dataset.samples.push(ClipSample {
                id,
                subject: subject.clone(),
                raw_label: raw,
                class,
                first: first.clone(),
                onset: first.clone(),
                apex: folder.path(folder.last()).to_path_buf(),
                offset: first,
                source,
            });
        }
    }
    for subject in subdirectories(&images)? {
        for sequence in subdirectories(&images.join(&subject))? {
            if !labelled.contains(&(subject.clone(), sequence.clone())) {
                let place = images.join(&subject).join(&sequence);
                let source = place.strip_prefix(root).unwrap_or(&place).display().to_string();
                let id = safe_id(&format!("{subject}_{sequence}"));
                dataset.skip(&id, &source, "no emotion label: the sequence has no emotion file".to_string());
            }
        }
    }
    Ok(dataset)
}

fn label_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
        if path.is_file() && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(LABEL_SUFFIX)) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::testdata::write_frames;
    use crate::dataset::{DatasetKind, load};

    fn sequence(root: &Path, subject: &str, seq: &str, frames: i64, code: Option<&str>) -> PathBuf {
        let dir = root.join("cohn-kanade-images").join(subject).join(seq);
        write_frames(&dir, &(1..=frames).collect::<Vec<_>>(), |n| format!("{subject}_{seq}_{n:08}.png"));
        std::fs::write(dir.join(".DS_Store"), "x").unwrap();
        if let Some(code) = code {
            let labels = root.join("Emotion").join(subject).join(seq);
            std::fs::create_dir_all(&labels).unwrap();
            std::fs::write(labels.join(format!("{subject}_{seq}_{frames:08}_emotion.txt")), code).unwrap();
        }
        dir
    }

    #[test]
    fn labelled_sequences_become_first_to_last_frame_samples() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let a = sequence(root, "S005", "001", 11, Some("   3.0000000e+00\n"));
        let b = sequence(root, "S010", "002", 14, Some("   5.0000000e+00"));
        sequence(root, "S010", "001", 6, Some("   0.0000000e+00\n"));
        sequence(root, "S010", "003", 9, None);
        std::fs::create_dir_all(root.join("Emotion/S010/004")).unwrap();

        let d = load(DatasetKind::CkPlus, root, None, Taxonomy::CkPlusSeven).unwrap();
        // The same tree through `mer prepare`, in every input layout.
        crate::prepare::pipeline::assert_prepares_in_every_layout(DatasetKind::CkPlus, root, Taxonomy::CkPlusSeven);
        assert_eq!(d.annotations.as_deref(), Some(root.join("Emotion").as_path()));
        let got: Vec<(&str, &str, usize)> = d.samples.iter().map(|s| (s.id.as_str(), s.subject.as_str(), s.class)).collect();
        assert_eq!(got, [("S005_001", "S005", 2), ("S010_002", "S010", 4)]);
        let s = &d.samples[0];
        assert_eq!(s.raw_label, "3.0000000e+00");
        assert_eq!(s.first, a.join("S005_001_00000001.png"));
        assert_eq!(s.onset, s.first);
        assert_eq!(s.offset, s.first);
        assert_eq!(s.apex, a.join("S005_001_00000011.png"));
        assert_eq!(s.source, "Emotion/S005/001/S005_001_00000011_emotion.txt");
        assert_eq!(d.samples[1].apex, b.join("S010_002_00000014.png"));
        assert!(d.repairs.is_empty());
        let skipped: Vec<(&str, &str)> = d.skipped.iter().map(|n| (n.sample.as_str(), n.message.as_str())).collect();
        assert_eq!(
            skipped,
            [
                ("S010_001", "label excluded from ckplus-7: 0.0000000e+00"),
                ("S010_003", "no emotion label: the sequence has no emotion file"),
            ]
        );
        assert_eq!(d.tally.kept["disgust"], 1);
        assert_eq!(d.tally.kept["happiness"], 1);
    }

    #[test]
    fn label_folder_override_and_archive_wrappers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let wrapped = root.join("extended-cohn-kanade-images");
        sequence(&wrapped, "S005", "001", 4, Some("7"));
        let labels = root.join("labels/Emotion");
        std::fs::create_dir_all(labels.parent().unwrap()).unwrap();
        std::fs::rename(wrapped.join("Emotion"), &labels).unwrap();
        let d = load(DatasetKind::CkPlus, root, Some(&labels), Taxonomy::CkPlusSeven).unwrap();
        assert_eq!(d.samples[0].class, 6);
        assert_eq!(d.samples[0].apex, wrapped.join("cohn-kanade-images/S005/001/S005_001_00000004.png"));
        let err = load(DatasetKind::CkPlus, root, None, Taxonomy::CkPlusSeven).unwrap_err().to_string();
        assert!(err.contains("no Emotion folder") && err.contains("Emotion_labels/Emotion"), "{err}");
    }

    #[test]
    fn a_bad_code_or_a_missing_image_folder_names_the_label_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        sequence(root, "S005", "001", 4, Some("9.0000000e+00"));
        let err = load(DatasetKind::CkPlus, root, None, Taxonomy::CkPlusSeven).unwrap_err().to_string();
        assert!(err.contains("S005_001_00000004_emotion.txt line 1") && err.contains("\"9.0000000e+00\""), "{err}");

        std::fs::write(root.join("Emotion/S005/001/S005_001_00000004_emotion.txt"), "1").unwrap();
        std::fs::create_dir_all(root.join("Emotion/S007/002")).unwrap();
        std::fs::write(root.join("Emotion/S007/002/S007_002_00000009_emotion.txt"), "2").unwrap();
        let err = load(DatasetKind::CkPlus, root, None, Taxonomy::CkPlusSeven).unwrap_err().to_string();
        assert!(err.contains("S007_002_00000009_emotion.txt"), "{err}");
        assert!(err.contains(&root.join("cohn-kanade-images/S007/002").display().to_string()), "{err}");
    }
}
