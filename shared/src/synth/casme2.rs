//! Synthetic data in CASME II's native layout, so the real dataset loader is what reads it:
//! `CASME2_RAW_selected/subXX/EPxx_yy/imgN.jpg` frames at 200 fps plus a coding sheet
//! (`CASME2-coding.csv`) with Subject, Filename, OnsetFrame, ApexFrame, OffsetFrame,
//! Action Units and Estimated Emotion.

use std::path::{Path, PathBuf};

use rand::Rng;
use rayon::prelude::*;
use serde::Serialize;

use super::face::FaceIdentity;
use super::motion::Emotion;
use super::rng_for;
use super::scene::{Event, Scene};
use crate::error::{Error, Result};
use crate::flow::write_flo;
use crate::image::GrayImage;

pub const FRAMES_DIR: &str = "CASME2_RAW_selected";
pub const CODING_SHEET: &str = "CASME2-coding.csv";
pub const FPS: f32 = 200.0;

#[derive(Debug, Clone, Serialize)]
pub struct Casme2Options {
    pub subjects: usize,
    pub per_subject: usize,
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    /// Also write the true onset→apex and apex→offset flows as `.flo` beside the frames.
    pub with_flow: bool,
}

impl Default for Casme2Options {
    fn default() -> Self {
        Casme2Options { subjects: 8, per_subject: 5, seed: 1, width: 140, height: 170, with_flow: false }
    }
}

/// One coding-sheet row, with what the generator knows beyond it.
#[derive(Debug, Clone, Serialize)]
pub struct Casme2Sample {
    pub subject: String,
    pub filename: String,
    pub onset_frame: usize,
    pub apex_frame: usize,
    pub offset_frame: usize,
    pub emotion: Emotion,
    pub action_units: Vec<u8>,
    pub amplitude_px: f32,
}

impl Casme2Sample {
    pub fn frame_path(&self, root: &Path, frame: usize) -> PathBuf {
        root.join(FRAMES_DIR).join(format!("sub{}", self.subject)).join(&self.filename).join(format!("img{frame}.jpg"))
    }
}

/// The identity of subject `s` (1-based) under `seed`.
pub fn subject_identity(seed: u64, s: usize) -> FaceIdentity {
    FaceIdentity::random(&mut rng_for(seed, 1, s as u64))
}

/// The scene of sample `k` (0-based) of subject `s` (1-based); scene frame 0 is the onset.
pub fn sample_scene(opts: &Casme2Options, s: usize, k: usize) -> (Scene, Casme2Sample) {
    let mut rng = rng_for(opts.seed, 2, (s * 10_000 + k) as u64);
    // Per-subject expressivity makes subjects differ, as real ones do.
    let expressivity = rng_for(opts.seed, 3, s as u64).random_range(0.7..1.2f32);
    let emotion = Emotion::CYCLE[(k + 3 * s) % Emotion::CYCLE.len()];
    let rise = rng.random_range(16..=40);
    let fall = rng.random_range(24..=60);
    let frames = rise + fall + 1;
    let (w, h) = (opts.width as f32, opts.height as f32);
    let face = (w / 2.0 + rng.random_range(-2.0..2.0), h / 2.0 + rng.random_range(-2.0..2.0), 0.55 * w, 0.47 * h);
    let mut scene =
        Scene::new(opts.seed ^ ((s as u64) << 32 | k as u64), opts.width, opts.height, FPS, frames, subject_identity(opts.seed, s), face);
    let amplitude = (rng.random_range(0.6..2.0f32) * expressivity).min(2.2);
    scene.events.push(Event::new(&mut rng, emotion, (0, rise, frames - 1), amplitude, face.2));
    if rng.random_bool(0.25) {
        let start = rng.random_range(0..frames.saturating_sub(30).max(1));
        scene.blinks.push((start, rng.random_range(20..40)));
    }
    let first = rng.random_range(1..=80);
    let event = &scene.events[0];
    let sample = Casme2Sample {
        subject: format!("{s:02}"),
        filename: format!("EP{:02}_{:02}", k + 1, rng.random_range(1..=9)),
        onset_frame: first,
        apex_frame: first + rise,
        offset_frame: first + frames - 1,
        emotion,
        action_units: event.action_units.clone(),
        amplitude_px: amplitude,
    };
    (scene, sample)
}

/// Writes the dataset; `progress` is called once per finished sample.
pub fn write_casme2(out: &Path, opts: &Casme2Options, progress: &(dyn Fn() + Sync)) -> Result<Vec<Casme2Sample>> {
    if opts.subjects == 0 || opts.per_subject == 0 || opts.subjects > 99 || opts.per_subject > 99 {
        return Err(Error::InvalidArgument("subjects and per-subject counts must be between 1 and 99".into()));
    }
    if opts.width < 48 || opts.height < 48 {
        return Err(Error::InvalidArgument("frames must be at least 48x48".into()));
    }
    let jobs: Vec<(usize, usize)> = (1..=opts.subjects).flat_map(|s| (0..opts.per_subject).map(move |k| (s, k))).collect();
    let samples = jobs
        .par_iter()
        .map(|&(s, k)| {
            let (scene, sample) = sample_scene(opts, s, k);
            let dir = out.join(FRAMES_DIR).join(format!("sub{}", sample.subject)).join(&sample.filename);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            for t in 0..scene.frames {
                write_jpeg(&scene.render(t), &sample.frame_path(out, sample.onset_frame + t), 92)?;
            }
            if opts.with_flow {
                let rise = sample.apex_frame - sample.onset_frame;
                write_flo(&scene.true_flow(0, rise), &dir.join("truth_onset_apex.flo"))?;
                write_flo(&scene.true_flow(rise, scene.frames - 1), &dir.join("truth_apex_offset.flo"))?;
            }
            progress();
            Ok(sample)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut csv = String::from("Subject,Filename,OnsetFrame,ApexFrame,OffsetFrame,Action Units,Estimated Emotion\n");
    for s in &samples {
        let aus: Vec<String> = s.action_units.iter().map(|a| a.to_string()).collect();
        csv += &format!(
            "{},{},{},{},{},{},{}\n",
            s.subject,
            s.filename,
            s.onset_frame,
            s.apex_frame,
            s.offset_frame,
            aus.join("+"),
            s.emotion.name()
        );
    }
    let sheet = out.join(CODING_SHEET);
    crate::atomic_file::write(&sheet, csv.as_bytes())?;
    let meta = out.join("synth.json");
    let json = serde_json::json!({ "generator": "mer synth casme2", "options": opts, "fps": FPS, "samples": samples });
    crate::atomic_file::write(&meta, serde_json::to_string_pretty(&json).expect("plain data").as_bytes())?;
    Ok(samples)
}

/// Writes an 8-bit gray JPEG at `quality`. Not atomic: synthetic frames are many and cheap to
/// make again, and the sheet or truth file written after them marks a dataset complete. Encoded
/// in memory first so that a failed write is reported, not lost in a buffer's drop.
pub fn write_jpeg(img: &GrayImage, path: &Path, quality: u8) -> Result<()> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode(&img.to_u8(), img.width() as u32, img.height() as u32, image::ExtendedColorType::L8)
        .map_err(|e| Error::Encode { path: path.to_path_buf(), reason: e.to_string() })?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::load_gray;

    #[test]
    fn writes_the_native_layout_and_a_consistent_sheet() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Casme2Options { subjects: 2, per_subject: 2, seed: 5, width: 64, height: 72, with_flow: true };
        let samples = write_casme2(dir.path(), &opts, &|| {}).unwrap();
        assert_eq!(samples.len(), 4);
        let sheet = std::fs::read_to_string(dir.path().join(CODING_SHEET)).unwrap();
        assert_eq!(sheet.lines().count(), 5);
        assert!(sheet.starts_with("Subject,Filename,OnsetFrame,ApexFrame,OffsetFrame"));
        for s in &samples {
            assert!(s.onset_frame < s.apex_frame && s.apex_frame < s.offset_frame);
            for f in [s.onset_frame, s.apex_frame, s.offset_frame] {
                let img = load_gray(&s.frame_path(dir.path(), f)).unwrap();
                assert_eq!((img.width(), img.height()), (64, 72));
            }
            assert!(!s.frame_path(dir.path(), s.offset_frame + 1).exists());
            let flo = s.frame_path(dir.path(), 0).with_file_name("truth_onset_apex.flo");
            assert!(crate::flow::read_flo(&flo).is_ok());
        }
        // same seed, same data
        let again = tempfile::tempdir().unwrap();
        write_casme2(again.path(), &opts, &|| {}).unwrap();
        assert_eq!(std::fs::read_to_string(again.path().join(CODING_SHEET)).unwrap(), sheet);
    }
}
