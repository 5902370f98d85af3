//! Middlebury `.flo` files: "PIEH" tag (float 202021.25), width, height (i32), then row-major
//! interleaved (u, v) float32, all little-endian.

use std::path::Path;

use super::Flow;
use crate::atomic_file;
use crate::error::{Error, Result};

const TAG: f32 = 202021.25;

/// The bytes of a `.flo` file holding `flow`.
pub fn encode_flo(flow: &Flow) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(12 + 8 * flow.u().len());
    bytes.extend_from_slice(&TAG.to_le_bytes());
    bytes.extend_from_slice(&(flow.width() as i32).to_le_bytes());
    bytes.extend_from_slice(&(flow.height() as i32).to_le_bytes());
    for (u, v) in flow.u().iter().zip(flow.v()) {
        bytes.extend_from_slice(&u.to_le_bytes());
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    bytes
}

/// Writes `flow` to `path` atomically: a crash never leaves a torn file under the name.
pub fn write_flo(flow: &Flow, path: &Path) -> Result<()> {
    atomic_file::write(path, &encode_flo(flow))
}

pub fn read_flo(path: &Path) -> Result<Flow> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |reason: String| Error::FloFormat { path: path.to_path_buf(), reason };
    if bytes.len() < 12 {
        return Err(bad(format!("only {} bytes, the header alone needs 12", bytes.len())));
    }
    let word = |i: usize| [bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]];
    if f32::from_le_bytes(word(0)) != TAG {
        return Err(bad("missing the PIEH tag at byte 0".into()));
    }
    let (w, h) = (i32::from_le_bytes(word(4)), i32::from_le_bytes(word(8)));
    if w <= 0 || h <= 0 || w > 1 << 15 || h > 1 << 15 {
        return Err(bad(format!("implausible size {w}x{h} at byte 4")));
    }
    let n = w as usize * h as usize;
    if bytes.len() != 12 + 8 * n {
        return Err(bad(format!("{w}x{h} needs {} bytes, the file has {}", 12 + 8 * n, bytes.len())));
    }
    let (mut u, mut v) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        u.push(f32::from_le_bytes(word(12 + 8 * i)));
        v.push(f32::from_le_bytes(word(16 + 8 * i)));
    }
    Flow::new(w as usize, h as usize, u, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.flo");
        let f = Flow::new(3, 2, vec![0.5, -1.0, 2.0, 0.0, 1e-3, 7.0], vec![1.0; 6]).unwrap();
        write_flo(&f, &path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 12 + 48);
        assert_eq!(read_flo(&path).unwrap(), f);

        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(30);
        std::fs::write(&path, &bytes).unwrap();
        let err = read_flo(&path).unwrap_err().to_string();
        assert!(err.contains("a.flo") && err.contains("needs 60 bytes"), "{err}");
        std::fs::write(&path, b"garbage-garbage-garbage").unwrap();
        assert!(read_flo(&path).unwrap_err().to_string().contains("PIEH"));
    }

    #[test]
    fn a_folder_target_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.flo");
        std::fs::create_dir(&target).unwrap();
        let err = write_flo(&Flow::zeros(2, 2), &target).unwrap_err().to_string();
        assert!(err.contains("out.flo") && err.contains("is a folder"), "{err}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["out.flo"]);
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    }
}
