//! Frame folders: the numbered image files of one clip or video, indexed by frame number.
//!
//! Annotation sheets and people name frames by number (`img46.jpg` is frame 46, `000046.png`
//! too, `006_05562.jpg` is 5562, `S005_001_00000011.png` is 11), so files are indexed by the
//! number at the end of their stem, never by their position in a directory listing (where
//! `img10` sorts before `img9`). The host's dataset loaders, `merd replay` and
//! `merd classify-clip` all read folders this way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::image::{GrayImage, load_gray};

const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp"];

/// The numbered frame images of one folder.
#[derive(Debug, Clone)]
pub struct FrameFolder {
    dir: PathBuf,
    frames: BTreeMap<i64, PathBuf>,
}

impl FrameFolder {
    /// Lists `dir`; files that are not images or carry no trailing number are ignored.
    /// When two files share a number (`1.jpg` and `01.jpg`) the first name in byte order wins.
    pub fn list(dir: &Path) -> Result<FrameFolder> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
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

    /// [`FrameFolder::list`], failing when the folder holds no numbered frame.
    pub fn open(dir: &Path) -> Result<FrameFolder> {
        let folder = FrameFolder::list(dir)?;
        if folder.is_empty() {
            return Err(Error::Data {
                path: dir.to_path_buf(),
                reason: "no numbered frames (.jpg/.jpeg/.png/.bmp files whose names end in a frame number)".into(),
            });
        }
        Ok(folder)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Smallest frame number. Panics on an empty folder (callers reject those first).
    pub fn first(&self) -> i64 {
        *self.frames.keys().next().expect("frame folder is not empty")
    }

    /// Largest frame number. Panics on an empty folder (callers reject those first).
    pub fn last(&self) -> i64 {
        *self.frames.keys().next_back().expect("frame folder is not empty")
    }

    pub fn contains(&self, n: i64) -> bool {
        self.frames.contains_key(&n)
    }

    /// The existing frame number closest to `n`; on a tie the earlier frame.
    pub fn nearest(&self, n: i64) -> i64 {
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
    pub fn path(&self, n: i64) -> &Path {
        &self.frames[&n]
    }

    /// (frame number, file) in frame order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &Path)> {
        self.frames.iter().map(|(n, p)| (*n, p.as_path()))
    }

    /// Decodes frame `n`; a number the folder lacks is an error naming the folder's range.
    pub fn load(&self, n: i64) -> Result<GrayImage> {
        match self.frames.get(&n) {
            Some(path) => load_gray(path),
            None if self.is_empty() => {
                Err(Error::Data { path: self.dir.clone(), reason: format!("no frame {n}: the folder holds no frames") })
            }
            None => Err(Error::Data {
                path: self.dir.clone(),
                reason: format!("no frame {n}: the folder holds {} frames numbered {}…{}", self.len(), self.first(), self.last()),
            }),
        }
    }
}

/// The frame number of an image file: the digits at the end of its stem.
pub fn frame_number(path: &Path) -> Option<i64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_numbers_come_from_the_end_of_the_stem() {
        assert_eq!(frame_number(Path::new("img46.jpg")), Some(46));
        assert_eq!(frame_number(Path::new("000046.png")), Some(46));
        assert_eq!(frame_number(Path::new("reg_img7.JPG")), Some(7));
        assert_eq!(frame_number(Path::new("006_05562.jpg")), Some(5562));
        assert_eq!(frame_number(Path::new("S005_001_00000011.png")), Some(11));
        assert_eq!(frame_number(Path::new("img.jpg")), None);
        assert_eq!(frame_number(Path::new("12.txt")), None);
    }

    #[test]
    fn frames_are_indexed_and_loaded_by_number() {
        let dir = tempfile::tempdir().unwrap();
        for n in [9, 10, 11, 100] {
            crate::image::save_gray_png(&GrayImage::filled(4, 3, n as f32 / 255.0), &dir.path().join(format!("img{n}.png"))).unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let folder = FrameFolder::open(dir.path()).unwrap();
        assert_eq!((folder.first(), folder.last(), folder.len()), (9, 100, 4));
        assert_eq!(folder.nearest(50), 11);
        assert_eq!((folder.nearest(10), folder.nearest(1), folder.nearest(99)), (10, 9, 100));
        assert_eq!(folder.iter().map(|(n, _)| n).collect::<Vec<_>>(), [9, 10, 11, 100]);
        assert_eq!(folder.load(10).unwrap().get(0, 0), 10.0 / 255.0);
        let err = folder.load(12).unwrap_err().to_string();
        assert!(err.contains("no frame 12") && err.contains("9…100"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        assert!(FrameFolder::open(empty.path()).unwrap_err().to_string().contains("no numbered frames"));
    }
}
