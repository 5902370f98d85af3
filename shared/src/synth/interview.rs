//! Long synthetic "interview" clips for the device: a face in a 640×480 frame, several
//! micro-expressions and blinks at known times, written as numbered JPEG frames plus a
//! ground-truth JSON.

use std::path::Path;

use rand::Rng;
use serde::Serialize;

use super::motion::Emotion;
use super::scene::{Event, Scene};
use super::{FaceIdentity, casme2::write_jpeg, rng_for};
use crate::error::{Error, Result};

pub const FRAMES_DIR: &str = "frames";
pub const TRUTH_FILE: &str = "truth.json";

#[derive(Debug, Clone, Serialize)]
pub struct InterviewOptions {
    pub seconds: f32,
    pub fps: f32,
    pub width: usize,
    pub height: usize,
    pub seed: u64,
}

impl Default for InterviewOptions {
    fn default() -> Self {
        InterviewOptions { seconds: 20.0, fps: 60.0, width: 640, height: 480, seed: 1 }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Blink {
    pub start_frame: usize,
    pub frames: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct InterviewTruth {
    pub fps: f32,
    pub width: usize,
    pub height: usize,
    pub frames: usize,
    /// Nominal face box (x, y, width, height) in pixels; the head jitters around it by < 1 px.
    pub face_box: [usize; 4],
    pub events: Vec<Event>,
    pub blinks: Vec<Blink>,
    pub seed: u64,
    /// Frame file name pattern, e.g. frames/000123.jpg.
    pub frame_pattern: String,
}

impl InterviewOptions {
    /// Largest frame side: 8K video. Checked before anything is allocated.
    pub const MAX_SIDE: usize = 8192;
    /// Longest interview: a day.
    pub const MAX_SECONDS: f32 = 86_400.0;

    pub fn validate(&self) -> Result<()> {
        if !(10.0..=1000.0).contains(&self.fps) {
            return Err(Error::InvalidArgument(format!("interview fps must lie in 10..=1000, got {}", self.fps)));
        }
        if !(self.seconds > 0.0 && self.seconds <= Self::MAX_SECONDS) {
            return Err(Error::InvalidArgument(format!("interview seconds must lie in (0, {}], got {}", Self::MAX_SECONDS, self.seconds)));
        }
        let sides = 160..=Self::MAX_SIDE;
        if !sides.contains(&self.width) || !sides.contains(&self.height) {
            return Err(Error::InvalidArgument(format!(
                "interview frames must be 160 to {} pixels on each side, got {}×{}",
                Self::MAX_SIDE,
                self.width,
                self.height
            )));
        }
        Ok(())
    }

    /// Frames in the interview.
    pub fn frames(&self) -> usize {
        (self.seconds * self.fps).round().max(1.0) as usize
    }
}

/// The scene behind a clip (for true flows and tests).
pub fn interview_scene(opts: &InterviewOptions) -> Result<Scene> {
    opts.validate()?;
    let frames = opts.frames();
    let mut rng = rng_for(opts.seed, 20, 0);
    let identity = FaceIdentity::random(&mut rng);
    let (w, h) = (opts.width as f32, opts.height as f32);
    let rx = (0.14 * w).min(0.22 * h);
    let face = (w / 2.0 + rng.random_range(-0.06..0.06) * w, h / 2.0 + rng.random_range(-0.05..0.05) * h, rx, rx * 1.15);
    let mut scene = Scene::new(opts.seed, opts.width, opts.height, opts.fps, frames, identity, face);
    let secs = |s: f32| ((s * opts.fps).round() as usize).max(1);
    // One micro-expression every 2.5-4.5 s, never overlapping.
    let mut t = secs(rng.random_range(0.8..2.0));
    let mut k = rng.random_range(0..Emotion::CYCLE.len());
    loop {
        let rise = secs(rng.random_range(0.07..0.2));
        let fall = secs(rng.random_range(0.1..0.3));
        if t + rise + fall + 1 >= frames {
            break;
        }
        let emotion = Emotion::CYCLE[k % Emotion::CYCLE.len()];
        k += 1;
        let amplitude = rng.random_range(1.0..2.5);
        scene.events.push(Event::new(&mut rng, emotion, (t, t + rise, t + rise + fall), amplitude, rx));
        t += rise + fall + secs(rng.random_range(2.5..4.5));
    }
    let mut b = secs(rng.random_range(0.5..3.0));
    while b + secs(0.3) < frames {
        scene.blinks.push((b, secs(rng.random_range(0.15..0.3))));
        b += secs(rng.random_range(2.5..6.0));
    }
    Ok(scene)
}

pub fn write_interview(out: &Path, opts: &InterviewOptions, progress: &(dyn Fn() + Sync)) -> Result<InterviewTruth> {
    let scene = interview_scene(opts)?;
    let dir = out.join(FRAMES_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    for t in 0..scene.frames {
        write_jpeg(&scene.render(t), &dir.join(format!("{t:06}.jpg")), 90)?;
        progress();
    }
    let (cx, cy, rx, ry) = scene.face;
    let truth = InterviewTruth {
        fps: opts.fps,
        width: opts.width,
        height: opts.height,
        frames: scene.frames,
        face_box: [(cx - rx).max(0.0) as usize, (cy - ry).max(0.0) as usize, (2.0 * rx) as usize, (2.0 * ry) as usize],
        events: scene.events.clone(),
        blinks: scene.blinks.iter().map(|&(start_frame, frames)| Blink { start_frame, frames }).collect(),
        seed: opts.seed,
        frame_pattern: format!("{FRAMES_DIR}/{{frame:06}}.jpg"),
    };
    let path = out.join(TRUTH_FILE);
    crate::atomic_file::write(&path, serde_json::to_string_pretty(&truth).expect("plain data").as_bytes())?;
    Ok(truth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_has_events_blinks_and_frames() {
        let dir = tempfile::tempdir().unwrap();
        let opts = InterviewOptions { seconds: 6.0, fps: 30.0, width: 320, height: 240, seed: 3 };
        let truth = write_interview(dir.path(), &opts, &|| {}).unwrap();
        assert_eq!(truth.frames, 180);
        assert!(!truth.events.is_empty());
        for e in &truth.events {
            assert!(e.onset < e.apex && e.apex < e.offset && e.offset < truth.frames);
        }
        assert!(dir.path().join("frames/000179.jpg").exists());
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join(TRUTH_FILE)).unwrap()).unwrap();
        assert_eq!(json["events"][0]["onset"], truth.events[0].onset);
        assert!(interview_scene(&InterviewOptions { fps: 0.0, ..opts }).is_err());
        let err = interview_scene(&InterviewOptions { width: 4_294_967_296, ..opts }).err().unwrap().to_string();
        assert!(err.contains("4294967296×240") && err.contains("8192"), "{err}");
        assert!(interview_scene(&InterviewOptions { seconds: f32::INFINITY, ..opts }).is_err());
        assert!(interview_scene(&InterviewOptions { seconds: f32::NAN, ..opts }).is_err());
    }
}
