//! `merd classify-clip`: one recorded window classified with the device's own preprocessing —
//! `mer_shared::input::model_input`, the function `mer prepare` makes training inputs with — so
//! a clip prepared on the host and classified here give the same input hash and the same logits.

use std::path::Path;

use mer_shared::classifier::{Classification, Classifier};
use mer_shared::face::{DetectorSettings, FaceBox, FaceDetector};
use mer_shared::frames::FrameFolder;
use mer_shared::input::{KeyFrames, model_input};
use mer_shared::{Error, Result};
use serde::Serialize;

/// What `merd classify-clip` prints: `mer infer`'s JSON plus what identifies the input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClipClassification {
    #[serde(flatten)]
    pub result: Classification,
    /// SHA-256 of the float32 input tensor's bytes (C order, little-endian), as `mer prepare`
    /// records it per sample.
    pub input_sha256: String,
    /// The face box cut from every key frame, x,y,w,h in frame pixels.
    pub face: [usize; 4],
    /// The key frames by frame number.
    pub frames: KeyFrames,
}

/// Classifies the window `keys` of the numbered frames in `dir`. Without `roi` the face box is
/// found on the folder's first frame, by the same detector and margin as `mer prepare --crop
/// detect` and `merd run`'s tracker, and used for every key frame.
pub fn classify_clip(
    classifier: &Classifier,
    dir: &Path,
    keys: KeyFrames,
    roi: Option<FaceBox>,
    threads: usize,
) -> Result<ClipClassification> {
    let folder = FrameFolder::open(dir)?;
    for (what, n) in [("onset", keys.onset), ("apex", keys.apex), ("offset", keys.offset)] {
        if !folder.contains(n) {
            return Err(Error::Data {
                path: dir.to_path_buf(),
                reason: format!(
                    "no {what} frame {n}: the folder holds {} frames numbered {}…{}",
                    folder.len(),
                    folder.first(),
                    folder.last()
                ),
            });
        }
    }
    let face = match roi {
        Some(b) => b,
        None => {
            let first = folder.load(folder.first())?;
            let mut detector = FaceDetector::with_settings(DetectorSettings::default())?;
            detector.face_region(&first).ok_or_else(|| Error::Data {
                path: folder.path(folder.first()).to_path_buf(),
                reason: format!("no face found in this {}×{} first frame; give the box with --roi x,y,w,h", first.width(), first.height()),
            })?
        }
    };
    let spec = &classifier.manifest().input;
    let input = model_input(spec, &folder, Some(&face), keys, threads)?;
    let result = classifier.classify(&input.data, 1)?;
    Ok(ClipClassification { result, input_sha256: input.sha256(), face: [face.x, face.y, face.width, face.height], frames: keys })
}
