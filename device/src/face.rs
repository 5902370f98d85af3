//! Where the face is in the live stream: a fixed box from the configuration, or the SeetaFace
//! detector of `mer_shared::face` run every `detect_every_s` on a background thread (it takes
//! tens of milliseconds, longer than a frame at 100–200 fps). Detections are smoothed, and the
//! crop box stays put until the smoothed face has really moved, because every move of the box
//! is motion the spotter would see.

use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};

use mer_shared::face::{DetectorSettings, FaceBox, FaceDetector};
use mer_shared::{Error, GrayImage, Result};
use serde::{Deserialize, Serialize};

/// A face box in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "[usize; 4]", into = "[usize; 4]")]
pub struct Roi {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

impl From<[usize; 4]> for Roi {
    fn from([x, y, width, height]: [usize; 4]) -> Roi {
        Roi { x, y, width, height }
    }
}

impl From<Roi> for [usize; 4] {
    fn from(r: Roi) -> [usize; 4] {
        [r.x, r.y, r.width, r.height]
    }
}

impl From<Roi> for FaceBox {
    fn from(r: Roi) -> FaceBox {
        FaceBox { x: r.x, y: r.y, width: r.width, height: r.height, score: 0.0 }
    }
}

/// Where the face crops come from.
#[derive(Debug, Clone, PartialEq)]
pub enum FaceSetting {
    /// The same box in every frame.
    Fixed(Roi),
    /// The face detector, tracked through the stream; `in_line` for sources not paced in real
    /// time (see [`InlineDetector`]).
    Detect { tracker: TrackerSettings, in_line: bool },
}

/// `[face]` settings for a detected face.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerSettings {
    /// Seconds between detector runs.
    pub detect_every_s: f64,
    /// Seconds without a detection after which the face counts as lost (no crops, no spotting).
    pub lost_after_s: f64,
    /// The crop box follows the face only when the smoothed box has moved (or changed size) by
    /// more than this fraction of the box size.
    pub move_tolerance: f64,
    /// Weight of a new detection in the smoothed box (1: no smoothing).
    pub smoothing: f64,
    /// Smallest face searched for, as a fraction of the shorter frame side.
    pub min_face_fraction: f64,
}

impl Default for TrackerSettings {
    fn default() -> TrackerSettings {
        TrackerSettings { detect_every_s: 0.5, lost_after_s: 1.5, move_tolerance: 0.15, smoothing: 0.5, min_face_fraction: 0.2 }
    }
}

impl TrackerSettings {
    pub fn validate(&self) -> Result<()> {
        let ok = self.detect_every_s > 0.0
            && self.lost_after_s >= self.detect_every_s
            && (0.0..1.0).contains(&self.move_tolerance)
            && self.smoothing > 0.0
            && self.smoothing <= 1.0
            && self.detect_every_s.is_finite()
            && self.lost_after_s.is_finite();
        if !ok {
            return Err(Error::InvalidArgument(format!(
                "face tracking needs detect_every_s > 0, lost_after_s >= detect_every_s, move_tolerance in [0, 1) and \
                 smoothing in (0, 1]; got {self:?}"
            )));
        }
        self.detector_settings().validate()
    }

    fn detector_settings(&self) -> DetectorSettings {
        DetectorSettings { min_face_fraction: self.min_face_fraction, ..DetectorSettings::default() }
    }
}

/// Something that finds the face region in a frame, possibly later than asked.
pub trait FindFaces {
    /// Hands over a frame; false when still busy with the previous one.
    fn submit(&mut self, image: &GrayImage) -> bool;
    /// The answer for the last frame handed over, once there is one: the face region, or None.
    fn poll(&mut self) -> Option<Option<FaceBox>>;
}

/// The SeetaFace detector on its own thread.
pub struct BackgroundDetector {
    frames: SyncSender<GrayImage>,
    answers: Receiver<Option<FaceBox>>,
    busy: bool,
}

impl BackgroundDetector {
    pub fn start(settings: DetectorSettings) -> Result<BackgroundDetector> {
        // Built here once to report bad settings now; the detector is not Send, so the thread
        // builds its own.
        FaceDetector::with_settings(settings)?;
        let (frames, frame_rx) = sync_channel::<GrayImage>(1);
        let (answer_tx, answers) = sync_channel(1);
        std::thread::Builder::new()
            .name("face-detector".into())
            .spawn(move || {
                let mut detector = FaceDetector::with_settings(settings).expect("settings checked above");
                for image in frame_rx {
                    if answer_tx.send(detector.face_region(&image)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::InvalidArgument(format!("cannot start the face-detector thread: {e}")))?;
        Ok(BackgroundDetector { frames, answers, busy: false })
    }
}

impl FindFaces for BackgroundDetector {
    fn submit(&mut self, image: &GrayImage) -> bool {
        if self.busy {
            return false;
        }
        self.busy = self.frames.try_send(image.clone()).is_ok();
        self.busy
    }

    fn poll(&mut self) -> Option<Option<FaceBox>> {
        match self.answers.try_recv() {
            Ok(answer) => {
                self.busy = false;
                Some(answer)
            }
            Err(TryRecvError::Empty) => None,
            // The thread is gone (it panicked): keep answering "no face" rather than stall.
            Err(TryRecvError::Disconnected) => Some(None),
        }
    }
}

/// The SeetaFace detector in the caller's thread: each answer is ready at the next frame,
/// whatever the machine's load. For sources that are not paced in real time (a replay as fast as
/// possible, the demo), where a background detector's answers would arrive a load-dependent
/// number of frames later.
pub struct InlineDetector {
    detector: FaceDetector,
    answer: Option<Option<FaceBox>>,
}

impl InlineDetector {
    pub fn new(settings: DetectorSettings) -> Result<InlineDetector> {
        Ok(InlineDetector { detector: FaceDetector::with_settings(settings)?, answer: None })
    }
}

impl FindFaces for InlineDetector {
    fn submit(&mut self, image: &GrayImage) -> bool {
        self.answer = Some(self.detector.face_region(image));
        true
    }

    fn poll(&mut self) -> Option<Option<FaceBox>> {
        self.answer.take()
    }
}

/// The face box for one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceView {
    /// Where to crop; None while no face is known.
    pub roi: Option<Roi>,
    /// The box was just placed or moved: earlier crops are not comparable with the next ones.
    pub moved: bool,
}

/// The face state shown by `merd status` and the status LED.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaceState {
    Fixed(Roi),
    /// No face seen since start.
    Searching,
    InView(Roi),
    Lost,
}

impl std::fmt::Display for FaceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = |r: &Roi| format!("[{}, {}, {}, {}]", r.x, r.y, r.width, r.height);
        match self {
            FaceState::Fixed(r) => write!(f, "fixed box {}", b(r)),
            FaceState::Searching => f.write_str("searching"),
            FaceState::InView(r) => write!(f, "in view at {}", b(r)),
            FaceState::Lost => f.write_str("lost"),
        }
    }
}

/// Follows the face through the stream with a [`FindFaces`].
pub struct FaceTracker {
    settings: TrackerSettings,
    finder: Box<dyn FindFaces>,
    /// Smoothed detection, x, y, width, height.
    smoothed: Option<[f64; 4]>,
    crop: Option<Roi>,
    last_seen: Option<f64>,
    last_submitted: Option<f64>,
}

impl FaceTracker {
    pub fn new(settings: TrackerSettings, finder: Box<dyn FindFaces>) -> Result<FaceTracker> {
        settings.validate()?;
        Ok(FaceTracker { settings, finder, smoothed: None, crop: None, last_seen: None, last_submitted: None })
    }

    /// With the SeetaFace detector, on a background thread (live sources) or in line (sources
    /// not paced in real time; see [`InlineDetector`]).
    pub fn detecting(settings: TrackerSettings, in_line: bool) -> Result<FaceTracker> {
        settings.validate()?;
        let finder: Box<dyn FindFaces> = if in_line {
            Box::new(InlineDetector::new(settings.detector_settings())?)
        } else {
            Box::new(BackgroundDetector::start(settings.detector_settings())?)
        };
        FaceTracker::new(settings, finder)
    }

    pub fn state(&self) -> FaceState {
        match (self.crop, self.last_seen) {
            (Some(roi), _) => FaceState::InView(roi),
            (None, None) => FaceState::Searching,
            (None, Some(_)) => FaceState::Lost,
        }
    }

    /// Takes a frame at `timestamp` seconds and says where its face is.
    pub fn observe(&mut self, image: &GrayImage, timestamp: f64) -> FaceView {
        let mut moved = false;
        if let Some(Some(face)) = self.finder.poll() {
            self.last_seen = Some(timestamp);
            let seen = [face.x, face.y, face.width, face.height].map(|v| v as f64);
            let a = self.settings.smoothing;
            let smoothed = match self.smoothed {
                Some(s) => std::array::from_fn(|i| s[i] + a * (seen[i] - s[i])),
                None => seen,
            };
            self.smoothed = Some(smoothed);
            let target = to_roi(smoothed, image.width(), image.height());
            if target.is_some() && self.crop.is_none_or(|c| far_apart(c, smoothed, self.settings.move_tolerance)) {
                self.crop = target;
                moved = true;
            }
        }
        if self.last_seen.is_some_and(|seen| timestamp - seen > self.settings.lost_after_s) && self.crop.is_some() {
            self.crop = None;
            self.smoothed = None;
        }
        let due = self.last_submitted.is_none_or(|t| timestamp - t >= self.settings.detect_every_s || timestamp < t);
        if due && self.finder.submit(image) {
            self.last_submitted = Some(timestamp);
        }
        FaceView { roi: self.crop, moved }
    }
}

/// Whether the box `to` (x, y, w, h) differs from `from` by more than `tolerance` of its size.
fn far_apart(from: Roi, to: [f64; 4], tolerance: f64) -> bool {
    let (w, h) = (from.width as f64, from.height as f64);
    let (cx, cy) = (from.x as f64 + w / 2.0, from.y as f64 + h / 2.0);
    let (tcx, tcy) = (to[0] + to[2] / 2.0, to[1] + to[3] / 2.0);
    (tcx - cx).abs() > tolerance * w
        || (tcy - cy).abs() > tolerance * h
        || (to[2] - w).abs() > tolerance * w
        || (to[3] - h).abs() > tolerance * h
}

fn to_roi(b: [f64; 4], width: usize, height: usize) -> Option<Roi> {
    let x = (b[0].round().max(0.0) as usize).min(width);
    let y = (b[1].round().max(0.0) as usize).min(height);
    let w = (b[2].round().max(0.0) as usize).min(width - x);
    let h = (b[3].round().max(0.0) as usize).min(height - y);
    (w >= 8 && h >= 8).then_some(Roi { x, y, width: w, height: h })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Answers at once from a script: one entry per submitted frame.
    struct Scripted {
        answers: Arc<Mutex<Vec<Option<FaceBox>>>>,
        pending: Option<Option<FaceBox>>,
        submitted: Arc<Mutex<usize>>,
    }

    impl FindFaces for Scripted {
        fn submit(&mut self, _: &GrayImage) -> bool {
            *self.submitted.lock().unwrap() += 1;
            let mut answers = self.answers.lock().unwrap();
            self.pending = Some(if answers.is_empty() { None } else { answers.remove(0) });
            true
        }
        fn poll(&mut self) -> Option<Option<FaceBox>> {
            self.pending.take()
        }
    }

    fn face(x: usize, y: usize, side: usize) -> Option<FaceBox> {
        Some(FaceBox { x, y, width: side, height: side, score: 5.0 })
    }

    #[test]
    fn the_box_holds_still_through_jitter_follows_real_moves_and_is_lost() {
        let answers = vec![
            face(100, 100, 200),
            face(104, 98, 202),
            face(97, 103, 199),
            face(200, 100, 200),
            face(200, 100, 200),
            face(200, 100, 200),
        ];
        let submitted = Arc::new(Mutex::new(0));
        let finder = Scripted { answers: Arc::new(Mutex::new(answers)), pending: None, submitted: submitted.clone() };
        let settings = TrackerSettings { detect_every_s: 0.5, lost_after_s: 1.0, ..TrackerSettings::default() };
        let mut tracker = FaceTracker::new(settings, Box::new(finder)).unwrap();
        let image = GrayImage::filled(640, 480, 0.5);
        assert_eq!(tracker.state(), FaceState::Searching);

        // 100 fps; the detector runs every 0.5 s and answers by the next frame.
        let mut views = Vec::new();
        for i in 0..500 {
            views.push(tracker.observe(&image, i as f64 / 100.0));
        }
        assert_eq!(*submitted.lock().unwrap(), 10, "one detection every 0.5 s");
        let roi_at = |i: usize| views[i].roi;
        assert_eq!(roi_at(0), None, "the first answer comes with the next frame");
        assert_eq!(roi_at(1), Some(Roi { x: 100, y: 100, width: 200, height: 200 }));
        assert!(views[1].moved);
        // Jitter of a few pixels leaves the box where it is.
        assert_eq!(roi_at(120), roi_at(1));
        assert!(views[2..151].iter().all(|v| !v.moved));
        // A real move (100 px) is followed, smoothed half way first.
        assert!(views[151].moved);
        assert_eq!(roi_at(151).unwrap().x, 150);
        assert!(roi_at(251).unwrap().x > 170);
        // No face from 3.0 s on: lost once more than 1 s has passed since the last sighting.
        assert!(roi_at(345).is_some());
        assert_eq!(roi_at(360), None);
        assert_eq!(tracker.state(), FaceState::Lost);
    }

    #[test]
    fn a_busy_detector_is_not_queued_up() {
        struct Slow(usize);
        impl FindFaces for Slow {
            fn submit(&mut self, _: &GrayImage) -> bool {
                self.0 += 1;
                false
            }
            fn poll(&mut self) -> Option<Option<FaceBox>> {
                None
            }
        }
        let mut tracker = FaceTracker::new(TrackerSettings::default(), Box::new(Slow(0))).unwrap();
        let image = GrayImage::filled(64, 48, 0.5);
        for i in 0..10 {
            assert_eq!(tracker.observe(&image, i as f64 * 0.01).roi, None);
        }
        assert_eq!(tracker.state(), FaceState::Searching);
    }

    #[test]
    fn the_detector_finds_the_face_of_a_synthetic_interview() {
        use crate::source::SyntheticSource;
        use mer_shared::synth::interview::InterviewOptions;
        let source = SyntheticSource::new(&InterviewOptions { seconds: 1.0, fps: 100.0, width: 640, height: 480, seed: 1 }).unwrap();
        let frame = source.scene().render(0);
        let (cx, cy, rx, ry) = source.scene().face;
        let mut tracker = FaceTracker::detecting(TrackerSettings::default(), false).unwrap();
        let started = std::time::Instant::now();
        let roi = loop {
            if let Some(roi) = tracker.observe(&frame, started.elapsed().as_secs_f64()).roi {
                break roi;
            }
            assert!(started.elapsed().as_secs() < 20, "no face found: {:?}", tracker.state());
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        eprintln!("face {roi:?} found in {:?}; the scene's face ellipse: centre ({cx}, {cy}), radii ({rx}, {ry})", started.elapsed());
        let (bx, by) = (roi.x as f64 + roi.width as f64 / 2.0, roi.y as f64 + roi.height as f64 / 2.0);
        assert!((bx - cx as f64).abs() < 0.2 * rx as f64 && (by - cy as f64).abs() < 0.3 * ry as f64, "{roi:?}");
        assert!(roi.width as f64 > rx as f64 && (roi.width as f64) < 3.0 * rx as f64, "{roi:?}");
        assert_eq!(tracker.state(), FaceState::InView(roi));
    }

    #[test]
    fn in_line_detection_answers_at_the_next_frame() {
        use crate::source::SyntheticSource;
        use mer_shared::synth::interview::InterviewOptions;
        let source = SyntheticSource::new(&InterviewOptions { seconds: 1.0, fps: 100.0, width: 640, height: 480, seed: 1 }).unwrap();
        let frame = source.scene().render(0);
        let mut tracker = FaceTracker::detecting(TrackerSettings::default(), true).unwrap();
        assert_eq!(tracker.observe(&frame, 0.0).roi, None);
        let view = tracker.observe(&frame, 0.01);
        assert!(view.moved && view.roi.is_some(), "{view:?}");
    }

    #[test]
    fn settings_are_checked() {
        assert!(TrackerSettings::default().validate().is_ok());
        for bad in [
            TrackerSettings { detect_every_s: 0.0, ..TrackerSettings::default() },
            TrackerSettings { lost_after_s: 0.1, ..TrackerSettings::default() },
            TrackerSettings { move_tolerance: 1.0, ..TrackerSettings::default() },
            TrackerSettings { smoothing: 0.0, ..TrackerSettings::default() },
            TrackerSettings { min_face_fraction: 2.0, ..TrackerSettings::default() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn boxes_are_kept_inside_the_frame() {
        assert_eq!(to_roi([-5.0, 10.4, 100.0, 50.0], 80, 60), Some(Roi { x: 0, y: 10, width: 80, height: 50 }));
        assert_eq!(to_roi([78.0, 0.0, 10.0, 10.0], 80, 60), None);
        assert!(!far_apart(Roi { x: 0, y: 0, width: 100, height: 100 }, [10.0, 0.0, 100.0, 100.0], 0.15));
        assert!(far_apart(Roi { x: 0, y: 0, width: 100, height: 100 }, [0.0, 0.0, 120.0, 100.0], 0.15));
    }
}
