//! Frame sources: where the device's frames come from.

use std::path::{Path, PathBuf};

use mer_shared::image::load_gray;
use mer_shared::{Error, GrayImage, Result};

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub index: u64,
    /// Seconds since the start of the stream.
    pub timestamp: f64,
    pub image: GrayImage,
}

/// Anything that yields frames in order: a camera, a replayed recording, a generator.
pub trait FrameSource {
    /// The next frame, or `None` at the end of a finite stream.
    fn next_frame(&mut self) -> Result<Option<Frame>>;
}

/// Replays a directory of numbered image files (e.g. `mer synth interview` output) at a
/// nominal frame rate; files are taken in name order.
#[derive(Debug)]
pub struct ReplaySource {
    files: Vec<PathBuf>,
    fps: f64,
    next: usize,
}

impl ReplaySource {
    pub fn open(dir: &Path, fps: f64) -> Result<ReplaySource> {
        if !(fps > 0.0) {
            return Err(Error::InvalidArgument(format!("replay fps must be positive, got {fps}")));
        }
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut files = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| Error::io(dir, e))?.path();
            let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
            if matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png" | "bmp")) {
                files.push(path);
            }
        }
        if files.is_empty() {
            return Err(Error::Data { path: dir.to_path_buf(), reason: "no .jpg/.png/.bmp frames found".into() });
        }
        files.sort();
        Ok(ReplaySource { files, fps, next: 0 })
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

impl FrameSource for ReplaySource {
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        let Some(path) = self.files.get(self.next) else { return Ok(None) };
        let image = load_gray(path)?;
        let index = self.next as u64;
        self.next += 1;
        Ok(Some(Frame { index, timestamp: index as f64 / self.fps, image }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mer_shared::image::save_gray_png;

    #[test]
    fn replays_in_name_order_with_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        for i in [2, 0, 1] {
            save_gray_png(&GrayImage::filled(4, 4, i as f32 / 4.0), &dir.path().join(format!("{i:06}.png"))).unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "not a frame").unwrap();
        let mut src = ReplaySource::open(dir.path(), 50.0).unwrap();
        assert_eq!(src.len(), 3);
        let mut seen = Vec::new();
        while let Some(f) = src.next_frame().unwrap() {
            seen.push((f.index, f.timestamp, f.image.get(0, 0)));
        }
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[2].0, 2);
        assert!((seen[2].1 - 0.04).abs() < 1e-12);
        assert!((seen[1].2 - 64.0 / 255.0).abs() < 1e-6);
    }

    #[test]
    fn empty_or_broken_directories_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ReplaySource::open(dir.path(), 30.0).unwrap_err().to_string().contains("no .jpg"));
        std::fs::write(dir.path().join("000000.jpg"), b"truncated").unwrap();
        let mut src = ReplaySource::open(dir.path(), 30.0).unwrap();
        assert!(src.next_frame().unwrap_err().to_string().contains("000000.jpg"));
        assert!(ReplaySource::open(dir.path(), 0.0).is_err());
    }
}
