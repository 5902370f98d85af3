//! The live pipeline: each frame's face crop goes into a bounded ring and to the spotter; a
//! spotted (or triggered) window is classified on a worker thread, so capture never waits for
//! optical flow and inference, and every event is appended to the log.
//!
//! The ring holds each frame's face exactly as `mer_shared::input::face_crop` makes it for the
//! model's input spec, and the worker turns a window of them into the model input with
//! `mer_shared::input::input_from_faces`: the two steps of `model_input`, which `mer prepare`
//! and `merd classify-clip` run on the same frames, so a window's input is bit for bit the
//! training input of the same frames and box.
//!
//! A model on probation is told about every window it classifies ([`Pipeline::observe`]), and
//! may ask for windows of its own ([`Pipeline::probation_window`]), which are never logged.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, warn};

use mer_shared::classifier::Classifier;
use mer_shared::event::{Event, EventSource, LatencyBreakdown};
use mer_shared::face::FaceBox;
use mer_shared::input::{InputSpec, KeyFrames, face_crop, input_from_faces};
use mer_shared::{Error, GrayImage, Result};
use serde::Serialize;

use crate::event_log::EventLog;
use crate::face::FaceState;
pub use crate::face::{FaceSetting, Roi};
use crate::probation::WindowObserver;
use crate::repeats::RepeatFilter;
use crate::source::Frame;
use crate::spot_stream::SpotStream;
pub use crate::spotting::SPOTTING_SIDE;
use crate::spotting::SpotterConfig;

/// Where classified events go: the event log on a device, anything else in tests.
pub trait EventSink: Send {
    /// Returns the event as recorded (the log stamps it with its sequence number and ids).
    fn append(&mut self, event: &Event) -> Result<Event>;
    fn sync(&mut self) -> Result<()>;
}

impl EventSink for EventLog {
    fn append(&mut self, event: &Event) -> Result<Event> {
        EventLog::append(self, event)
    }

    fn sync(&mut self) -> Result<()> {
        EventLog::sync(self)
    }
}

/// One face crop in the ring, with the times the event record needs.
#[derive(Debug, Clone)]
pub struct Crop {
    /// Position in the pipeline's stream (0, 1, 2, … with no gaps), as the spotter counts.
    pub seq: usize,
    /// The source's frame number.
    pub frame: u64,
    /// Source timestamp, seconds.
    pub timestamp: f64,
    pub arrived: Instant,
    pub wall_ms: i64,
    /// `face_crop(spec, frame, box)` for the input spec in `spec`.
    pub image: GrayImage,
    pub spec: Arc<InputSpec>,
}

/// The last `capacity` crops; memory stays the same however long the stream runs.
#[derive(Debug)]
pub struct CropRing {
    capacity: usize,
    crops: VecDeque<Crop>,
}

impl CropRing {
    pub fn new(capacity: usize) -> CropRing {
        CropRing { capacity: capacity.max(1), crops: VecDeque::with_capacity(capacity.max(1)) }
    }

    pub fn push(&mut self, crop: Crop) {
        if self.crops.len() == self.capacity {
            self.crops.pop_front();
        }
        self.crops.push_back(crop);
    }

    pub fn get(&self, seq: usize) -> Option<&Crop> {
        let first = self.crops.front()?.seq;
        self.crops.get(seq.checked_sub(first)?)
    }

    pub fn newest(&self) -> Option<&Crop> {
        self.crops.back()
    }

    pub fn len(&self) -> usize {
        self.crops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.crops.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    pub fps: f32,
    pub face: FaceSetting,
    /// Seconds of face crops kept for classification.
    pub buffer_s: f32,
    pub spotting: SpotterConfig,
    /// Threads for the optical flows of one window.
    pub flow_threads: usize,
    /// Windows waiting for the classifier beyond this are dropped (and counted) rather than
    /// letting a backlog hold frames in memory.
    pub max_queued: usize,
}

impl PipelineConfig {
    /// Checks the settings without starting anything, so that a command can refuse them before
    /// it opens a log or a store: face and spotting settings, and a buffer that holds what the
    /// spotter reaches back to.
    pub fn check(&self) -> Result<()> {
        self.spot_stream().map(|_| ())
    }

    /// The face box and spotter, and the ring's capacity in frames.
    fn spot_stream(&self) -> Result<(SpotStream, usize)> {
        if self.max_queued == 0 || self.flow_threads == 0 {
            return Err(Error::InvalidArgument(format!(
                "buffer.max_queued and the flow threads must be at least 1, got {} and {}",
                self.max_queued, self.flow_threads
            )));
        }
        let stream = SpotStream::new(self.fps, &self.face, &self.spotting)?;
        let capacity = (self.buffer_s * self.fps).ceil() as usize;
        let needed = stream.reach_back() + 1;
        if capacity < needed {
            return Err(Error::InvalidArgument(format!(
                "buffer.seconds {} holds {capacity} frames at {} fps; the spotter needs at least {needed} ({:.2} s)",
                self.buffer_s,
                self.fps,
                needed as f32 / self.fps
            )));
        }
        Ok((stream, capacity))
    }
}

/// Counters for `merd status` and the end-of-run summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub frames: u64,
    /// Frames the source skipped (gaps in its frame numbers).
    pub dropped_frames: u64,
    pub spotted: u64,
    pub triggered: u64,
    /// Windows not classified because the classifier was too far behind.
    pub dropped_windows: u64,
    /// Frames without a face box (none detected yet, or the face was lost).
    pub faceless_frames: u64,
}

struct Job {
    source: EventSource,
    onset: Crop,
    apex: Crop,
    offset: Crop,
    chosen: Instant,
    /// A probation check: observed, never logged.
    check: bool,
}

/// Who hears about every classified window, once set.
type ObserverSlot = Arc<OnceLock<Arc<dyn WindowObserver>>>;

/// What the classifier worker did, returned when the pipeline finishes.
#[derive(Debug, Default)]
pub struct WorkerReport {
    pub events: u64,
    /// Windows or appends that failed; each was reported on stderr as it happened.
    pub failures: u64,
    pub last_failure: Option<String>,
    /// Events classified but not in the log because appends kept failing (e.g. a full disk).
    pub unlogged: Vec<Event>,
    repeats: RepeatFilter,
}

pub struct Pipeline {
    config: PipelineConfig,
    ring: CropRing,
    /// Face box and spotter; its `seq` numbers are the ring's.
    stream: SpotStream,
    jobs: Option<SyncSender<Box<Job>>>,
    /// Models pushed while running, taken by the worker before its next window.
    models: ModelChannel,
    worker: Option<JoinHandle<WorkerReport>>,
    observer: ObserverSlot,
    stats: Stats,
}

impl Pipeline {
    /// Starts the classifier worker. Classified events are appended to `log` and also sent to
    /// `events` (whose receiver may be dropped).
    pub fn new(
        config: PipelineConfig,
        classifier: Classifier,
        log: impl EventSink + 'static,
        events: std::sync::mpsc::Sender<Event>,
    ) -> Result<Pipeline> {
        let (stream, capacity) = config.spot_stream()?;
        let (tx, rx) = sync_channel(config.max_queued);
        let (models, new_models) = channel();
        let models = ModelChannel { models, crop_spec: Arc::new(Mutex::new(Arc::new(classifier.manifest().input.clone()))) };
        let flow_threads = config.flow_threads;
        let observer = ObserverSlot::default();
        let observes = Arc::clone(&observer);
        let worker = std::thread::Builder::new()
            .name("classifier".into())
            .spawn(move || classify_jobs(rx, classifier, new_models, flow_threads, log, events, observes))
            .map_err(|e| Error::InvalidArgument(format!("cannot start the classifier thread: {e}")))?;
        Ok(Pipeline {
            ring: CropRing::new(capacity),
            stream,
            jobs: Some(tx),
            models,
            worker: Some(worker),
            observer,
            stats: Stats::default(),
            config,
        })
    }

    /// Tells `observer` about every window classified from now on (set once).
    pub fn observe(&self, observer: Arc<dyn WindowObserver>) {
        let _ = self.observer.set(observer);
    }

    /// Hands new models to the running pipeline: capture never waits for a model change.
    pub fn model_switch(&self) -> ModelChannel {
        self.models.clone()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn ring(&self) -> &CropRing {
        &self.ring
    }

    pub fn face_state(&self) -> FaceState {
        self.stream.face_state()
    }

    /// Takes one frame: crop, ring, spotter, and a classification job when a window is spotted.
    pub fn push(&mut self, frame: &Frame) -> Result<()> {
        let seen = self.stream.push(frame)?;
        let counts = self.stream.counts();
        (self.stats.frames, self.stats.dropped_frames, self.stats.faceless_frames) =
            (counts.frames, counts.dropped_frames, counts.faceless_frames);
        let (Some(roi), Some(seq)) = (seen.roi, seen.seq) else { return Ok(()) };
        let arrived = Instant::now();
        let wall_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let spec = self.models.crop_spec();
        let face = face_crop(&spec, &frame.image, Some(&FaceBox::from(roi)))?;
        self.ring.push(Crop { seq, frame: frame.index, timestamp: frame.timestamp, arrived, wall_ms, image: face, spec });
        if let Some(spot) = seen.spot {
            debug!("spotted frames {}–{} (apex {}) at {:.3} s", spot.onset, spot.offset, spot.apex, frame.timestamp);
            self.stats.spotted += 1;
            self.submit(EventSource::Spotted, spot.onset, spot.apex, spot.offset);
        }
        Ok(())
    }

    /// Classifies the last `window_s` seconds on demand (the trigger): the oldest frame of the
    /// window is the onset, the newest the offset, and the apex is the frame that differs most
    /// from the onset. The window never reaches back past a move of the face box (one box per
    /// window, as in training). Returns false when fewer than three such frames are buffered.
    pub fn trigger(&mut self, window_s: f32) -> bool {
        let Some((onset, apex, offset)) = self.last_window(window_s) else { return false };
        self.stats.triggered += 1;
        self.submit(EventSource::Triggered, onset, apex, offset);
        true
    }

    /// A window for the probation of a new model, never logged: the last `window_s` seconds of
    /// live frames as the trigger takes them, or a built-in synthetic clip when too few frames
    /// are buffered (no face in view). False when the classifier is too far behind to take it.
    pub fn probation_window(&mut self, window_s: f32) -> bool {
        let keys = self.last_window(window_s);
        let crops = match keys {
            Some((onset, apex, offset)) => [onset, apex, offset].map(|seq| self.ring.get(seq).cloned()),
            None => [None, None, None],
        };
        let job = match crops {
            [Some(onset), Some(apex), Some(offset)] => {
                Job { source: EventSource::Triggered, onset, apex, offset, chosen: Instant::now(), check: true }
            }
            _ => match synthetic_check(self.models.crop_spec()) {
                Ok(job) => job,
                Err(e) => {
                    warn!("cannot make the synthetic probation window: {e}");
                    return false;
                }
            },
        };
        let sent = self.jobs.as_ref().is_some_and(|tx| tx.try_send(Box::new(job)).is_ok());
        debug!("probation window {}", if sent { "queued" } else { "dropped: the classifier is behind" });
        sent
    }

    /// (onset, apex, offset) of the last `window_s` seconds; see [`Pipeline::trigger`].
    fn last_window(&self, window_s: f32) -> Option<(usize, usize, usize)> {
        let newest = self.ring.newest()?.seq;
        let span = ((window_s * self.config.fps).round() as usize).clamp(2, self.ring.len().saturating_sub(1).max(2));
        let span = span.min(newest.saturating_sub(self.stream.spotting_base()));
        if span < 2 {
            return None;
        }
        let onset = newest.checked_sub(span)?;
        let first = self.ring.get(onset)?;
        let apex = (onset + 1..newest)
            .filter_map(|s| self.ring.get(s).map(|c| (s, mean_abs_difference(&first.image, &c.image))))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(onset + span / 2, |(s, _)| s);
        Some((onset, apex, newest))
    }

    /// Classifies the window whose key frames are the source's frames `keys` (by frame number),
    /// as if the spotter had found it: for replaying annotated clips. Returns false when a key
    /// frame is not in the buffer or the window spans a restart of spotting (a moved face box).
    pub fn classify_window(&mut self, keys: KeyFrames) -> bool {
        let seq_of = |n: i64| u64::try_from(n).ok().and_then(|n| self.ring.crops.iter().find(|c| c.frame == n)).map(|c| c.seq);
        let (Some(onset), Some(apex), Some(offset)) = (seq_of(keys.onset), seq_of(keys.apex), seq_of(keys.offset)) else {
            return false;
        };
        if onset < self.stream.spotting_base() {
            return false;
        }
        self.stats.triggered += 1;
        self.submit(EventSource::Triggered, onset, apex, offset);
        true
    }

    fn submit(&mut self, source: EventSource, onset: usize, apex: usize, offset: usize) {
        let (Some(o), Some(a), Some(f)) = (self.ring.get(onset), self.ring.get(apex), self.ring.get(offset)) else {
            debug!("{source:?} window {onset}–{offset} dropped: its frames left the buffer");
            self.stats.dropped_windows += 1;
            return;
        };
        let job = Box::new(Job { source, onset: o.clone(), apex: a.clone(), offset: f.clone(), chosen: Instant::now(), check: false });
        let sent = self.jobs.as_ref().is_some_and(|tx| tx.try_send(job).is_ok());
        if sent {
            debug!("{source:?} window {onset}–{offset} queued for classification");
        } else {
            // The classifier is behind (or gone): drop the window, never stall capture.
            debug!("{source:?} window {onset}–{offset} dropped: the classifier is behind");
            self.stats.dropped_windows += 1;
        }
    }

    /// Waits for the queued windows to be classified and logged.
    pub fn finish(mut self) -> (Stats, WorkerReport) {
        self.jobs = None;
        let report = self.worker.take().and_then(|w| w.join().ok()).unwrap_or_else(|| WorkerReport {
            failures: 1,
            last_failure: Some("the classifier thread panicked".into()),
            ..WorkerReport::default()
        });
        (self.stats.clone(), report)
    }
}

/// Gives a running pipeline a new model: capture cuts faces for its input spec from the next
/// frame on, and the classifier worker uses it from its next window.
#[derive(Clone)]
pub struct ModelChannel {
    models: Sender<Classifier>,
    crop_spec: Arc<Mutex<Arc<InputSpec>>>,
}

impl ModelChannel {
    /// False when the pipeline has finished and takes no more models.
    pub fn send(&self, classifier: Classifier) -> bool {
        *self.crop_spec.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(classifier.manifest().input.clone());
        self.models.send(classifier).is_ok()
    }

    fn crop_spec(&self) -> Arc<InputSpec> {
        self.crop_spec.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A probation window from a synthetic face (the first sample of the synthetic CASME II
/// layout), cut whole for `spec`: it exercises the model's preprocessing and inference on this
/// board when the room offers no face.
fn synthetic_check(spec: Arc<InputSpec>) -> Result<Job> {
    use mer_shared::synth::casme2::{Casme2Options, sample_scene};
    let (scene, sample) = sample_scene(&Casme2Options::default(), 0, 0);
    let now = Instant::now();
    let wall_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let crop = |frame: usize| -> Result<Crop> {
        let image = face_crop(&spec, &scene.render(frame), None)?;
        Ok(Crop { seq: 0, frame: frame as u64, timestamp: 0.0, arrived: now, wall_ms, image, spec: Arc::clone(&spec) })
    };
    Ok(Job {
        source: EventSource::Triggered,
        onset: crop(sample.onset_frame)?,
        apex: crop(sample.apex_frame)?,
        offset: crop(sample.offset_frame)?,
        chosen: now,
        check: true,
    })
}

/// Whether faces cut for `a` are the faces `b` needs.
fn same_face_crops(a: &InputSpec, b: &InputSpec) -> bool {
    (a.face_size, a.face_resize, a.face_quantisation) == (b.face_size, b.face_resize, b.face_quantisation)
}

fn mean_abs_difference(a: &GrayImage, b: &GrayImage) -> f32 {
    a.data().iter().zip(b.data()).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.data().len().max(1) as f32
}

fn millis(from: Instant, to: Instant) -> f32 {
    to.saturating_duration_since(from).as_secs_f32() * 1000.0
}

/// Events that could not be appended are kept (up to this many) and retried before the next.
const MAX_UNLOGGED: usize = 10_000;

impl WorkerReport {
    fn fail(&mut self, what: String) {
        self.repeats.report(&what, Instant::now()).iter().for_each(|line| warn!("{line}"));
        self.failures += 1;
        self.last_failure = Some(what);
    }
}

fn classify_jobs(
    jobs: Receiver<Box<Job>>,
    mut classifier: Classifier,
    new_models: Receiver<Classifier>,
    flow_threads: usize,
    mut log: impl EventSink,
    events: std::sync::mpsc::Sender<Event>,
    observer: ObserverSlot,
) -> WorkerReport {
    let observe = |version: &str, outcome: std::result::Result<f64, String>| {
        if let Some(observer) = observer.get() {
            observer.classified(version, outcome);
        }
    };
    let mut report = WorkerReport::default();
    let mut unlogged: VecDeque<Event> = VecDeque::new();
    for job in jobs {
        if let Some(newest) = new_models.try_iter().last() {
            debug!("classifying with model {} from now on", newest.manifest().version);
            classifier = newest;
        }
        let spec = &classifier.manifest().input;
        if [&job.onset, &job.apex, &job.offset].iter().any(|c| !same_face_crops(&c.spec, spec)) {
            report.fail(format!("the window at {:.3} s was cut for the previous model's face crops; skipped", job.apex.timestamp));
            continue;
        }
        let started = Instant::now();
        let version = classifier.manifest().version.clone();
        let input = match input_from_faces(spec, &job.onset.image, &job.apex.image, Some(&job.offset.image), flow_threads) {
            Ok(input) => input,
            Err(e) => {
                observe(&version, Err(format!("preprocessing: {e}")));
                report.fail(format!("preprocessing the window at {:.3} s: {e}", job.apex.timestamp));
                continue;
            }
        };
        let preprocessed = Instant::now();
        let result = match classifier.classify(&input.data, 1) {
            Ok(r) => r,
            Err(e) => {
                observe(&version, Err(format!("inference: {e}")));
                report.fail(format!("classifying the window at {:.3} s: {e}", job.apex.timestamp));
                continue;
            }
        };
        let inferred = Instant::now();
        observe(&version, Ok(millis(started, inferred) as f64));
        if job.check {
            debug!("probation window classified by {version} in {:.1} ms", millis(started, inferred));
            continue;
        }
        let probabilities = result.probabilities.into_iter().next().unwrap_or_default();
        let event = Event {
            wall_time_ms: job.offset.wall_ms,
            onset_s: job.onset.timestamp,
            apex_s: job.apex.timestamp,
            offset_s: job.offset.timestamp,
            source: job.source,
            label: result.labels.into_iter().next().unwrap_or_default(),
            classes: result.classes,
            probabilities,
            model_version: classifier.manifest().version.clone(),
            latency: LatencyBreakdown {
                spotting_ms: millis(job.offset.arrived, job.chosen),
                preprocess_ms: millis(started, preprocessed),
                inference_ms: millis(preprocessed, inferred),
                total_ms: millis(job.offset.arrived, Instant::now()),
            },
            foreign_inputs: !classifier.manifest().inputs.device_faithful(),
            // Stamped by the log as it appends.
            device: String::new(),
            session: String::new(),
            seq: 0,
        };
        debug!(
            "classified the window at {:.3} s as {} (flows and input {:.1} ms, inference {:.1} ms)",
            event.apex_s, event.label, event.latency.preprocess_ms, event.latency.inference_ms
        );
        // Events waiting from earlier failed appends go first; the newest is passed on as
        // recorded when it could be, else as classified.
        let mut latest = event.clone();
        unlogged.push_back(event);
        while let Some(pending) = unlogged.front() {
            match log.append(pending) {
                Ok(recorded) => {
                    debug!("event at {:.3} s logged as record {}", recorded.apex_s, recorded.seq);
                    unlogged.pop_front();
                    if unlogged.is_empty() {
                        latest = recorded;
                    }
                }
                Err(e) => {
                    report.fail(format!("appending to the event log (kept in memory, retried with the next event): {e}"));
                    if unlogged.len() > MAX_UNLOGGED {
                        unlogged.pop_front();
                    }
                    break;
                }
            }
        }
        report.events += 1;
        let _ = events.send(latest);
    }
    if let Err(e) = log.sync() {
        report.fail(format!("syncing the event log: {e}"));
    }
    report.unlogged = unlogged.into();
    report.repeats.flush(Instant::now(), true).iter().for_each(|line| warn!("{line}"));
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_log::{FsyncPolicy, LogConfig, read_events};
    use crate::source::{FrameSource, SyntheticSource};
    use mer_shared::classifier::Trust;
    use mer_shared::input::{ClipFrames, model_input};
    use mer_shared::synth::interview::InterviewOptions;
    use std::path::Path;

    /// A synthetic scene's frames by number, rendered as the synthetic source delivers them.
    struct Rendered(mer_shared::synth::Scene);

    impl ClipFrames for Rendered {
        fn frame(&self, number: i64) -> Result<GrayImage> {
            Ok(self.0.render(number as usize))
        }
    }

    fn crop(seq: usize) -> Crop {
        let spec = Arc::new(InputSpec::skd_tstsan());
        Crop {
            seq,
            frame: seq as u64,
            timestamp: seq as f64,
            arrived: Instant::now(),
            wall_ms: 0,
            image: GrayImage::filled(2, 2, seq as f32),
            spec,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_frames_only() {
        let mut ring = CropRing::new(3);
        for seq in 0..10 {
            ring.push(crop(seq));
        }
        assert_eq!((ring.len(), ring.capacity()), (3, 3));
        assert!(ring.get(6).is_none());
        assert_eq!(ring.get(7).unwrap().image.get(0, 0), 7.0);
        assert_eq!(ring.newest().unwrap().seq, 9);
        assert!(ring.get(10).is_none());
    }

    fn default_model() -> Classifier {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/skd-tstsan-synthetic.merb");
        Classifier::load(&path, Trust::IntegrityOnly).expect("the default model in models/")
    }

    fn config(fps: f32, face: FaceSetting) -> PipelineConfig {
        PipelineConfig { fps, face, buffer_s: 2.0, spotting: SpotterConfig::for_fps(fps), flow_threads: 1, max_queued: 16 }
    }

    fn face_roi(source: &SyntheticSource) -> Roi {
        let (cx, cy, rx, ry) = source.scene().face;
        Roi { x: (cx - rx) as usize, y: (cy - ry) as usize, width: (2.0 * rx) as usize, height: (2.0 * ry) as usize }
    }

    /// The pipeline's events carry exactly what classifying the same three frames by hand gives,
    /// and every event reaches the log.
    #[test]
    fn spotted_windows_are_classified_and_logged() {
        let dir = tempfile::tempdir().unwrap();
        let fps = 100.0;
        let mut source = SyntheticSource::new(&InterviewOptions { seconds: 7.0, fps, width: 320, height: 240, seed: 3 }).unwrap();
        let roi = face_roi(&source);
        let log = EventLog::open(LogConfig { dir: dir.path().into(), max_segment_bytes: 1 << 20, fsync: FsyncPolicy::Never }).unwrap().0;
        let (tx, rx) = std::sync::mpsc::channel();
        let mut pipeline = Pipeline::new(config(fps, FaceSetting::Fixed(roi)), default_model(), log, tx).unwrap();
        while let Some(mut frame) = source.next_frame().unwrap() {
            // A long gap in the frame numbers after 1 s (a camera outage): spotting restarts,
            // and windows found after it must still point at the right crops.
            if frame.index >= 100 {
                frame.index += 5000;
            }
            pipeline.push(&frame).unwrap();
        }
        assert_eq!(pipeline.ring().len(), 200, "two seconds of crops, however long the stream");
        let (stats, report) = pipeline.finish();
        let events: Vec<Event> = rx.try_iter().collect();
        assert_eq!((stats.frames, stats.dropped_frames, report.failures), (700, 5000, 0));
        assert!(events.iter().any(|e| e.onset_s > 1.0), "{events:?}");
        assert!(stats.spotted >= 1 && events.len() as u64 == stats.spotted, "{stats:?}");

        let classifier = default_model();
        let spec = classifier.manifest().input.clone();
        // The same frames through the one function the host prepares training data with.
        let frames = Rendered(source.scene().clone());
        let frame_of = |t: f64| (t * fps as f64).round() as i64;
        for e in &events {
            let keys = KeyFrames::new(frame_of(e.onset_s), frame_of(e.apex_s), frame_of(e.offset_s)).unwrap();
            let input = model_input(&spec, &frames, Some(&FaceBox::from(roi)), keys, 1).unwrap();
            let expected = classifier.classify(&input.data, 1).unwrap();
            assert_eq!(e.probabilities, expected.probabilities[0], "{e:?}");
            assert_eq!(e.source, EventSource::Spotted);
            assert!(e.onset_s < e.apex_s && e.apex_s < e.offset_s);
            assert_eq!(e.model_version, classifier.manifest().version);
            let l = e.latency;
            assert!(l.spotting_ms > 0.0 && l.preprocess_ms > 0.0 && l.inference_ms > 0.0);
            assert!(l.total_ms >= l.spotting_ms + l.preprocess_ms + l.inference_ms - 1.0, "{l:?}");
        }
        let (logged, problems) = read_events(dir.path()).unwrap();
        assert!(problems.is_empty());
        assert_eq!(logged, events);
    }

    #[test]
    fn a_trigger_classifies_the_last_window() {
        let dir = tempfile::tempdir().unwrap();
        let mut source = SyntheticSource::new(&InterviewOptions { seconds: 1.0, fps: 50.0, width: 320, height: 240, seed: 4 }).unwrap();
        let roi = face_roi(&source);
        let log = EventLog::open(LogConfig { dir: dir.path().into(), max_segment_bytes: 1 << 20, fsync: FsyncPolicy::Always }).unwrap().0;
        let (tx, rx) = std::sync::mpsc::channel();
        let mut pipeline = Pipeline::new(config(50.0, FaceSetting::Fixed(roi)), default_model(), log, tx).unwrap();
        assert!(!pipeline.trigger(0.5), "nothing buffered yet");
        for _ in 0..40 {
            pipeline.push(&source.next_frame().unwrap().unwrap()).unwrap();
        }
        assert!(pipeline.trigger(0.5));
        let (stats, _) = pipeline.finish();
        assert_eq!(stats.triggered, 1);
        let event = rx.recv().unwrap();
        assert_eq!(event.source, EventSource::Triggered);
        assert!((event.offset_s - 39.0 / 50.0).abs() < 1e-9 && (event.onset_s - 14.0 / 50.0).abs() < 1e-9, "{event:?}");
        assert!(event.onset_s < event.apex_s && event.apex_s < event.offset_s);
        assert_eq!(read_events(dir.path()).unwrap().0, vec![event]);
    }

    #[test]
    fn bad_settings_and_frames_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let log = || EventLog::open(LogConfig { dir: dir.path().into(), max_segment_bytes: 1 << 20, fsync: FsyncPolicy::Never }).unwrap().0;
        let roi = Roi { x: 100, y: 100, width: 100, height: 100 };
        let short = PipelineConfig { buffer_s: 0.2, ..config(100.0, FaceSetting::Fixed(roi)) };
        let e = Pipeline::new(short, default_model(), log(), std::sync::mpsc::channel().0).err().unwrap().to_string();
        assert!(e.contains("buffer.seconds") && e.contains("at least"), "{e}");

        let mut pipeline =
            Pipeline::new(config(100.0, FaceSetting::Fixed(roi)), default_model(), log(), std::sync::mpsc::channel().0).unwrap();
        let frame = Frame { index: 0, timestamp: 0.0, image: GrayImage::filled(160, 120, 0.5) };
        let e = pipeline.push(&frame).unwrap_err().to_string();
        assert!(e.contains("outside the 160×120 frame"), "{e}");
        // Gaps in the source's frame numbers are counted as dropped frames.
        for index in [0, 1, 5] {
            pipeline.push(&Frame { index, timestamp: 0.0, image: GrayImage::filled(320, 240, 0.5) }).unwrap();
        }
        assert_eq!(pipeline.stats().dropped_frames, 3);
    }

    /// Fails its first `failures` appends (a full disk), then works.
    struct FlakySink {
        failures: usize,
        written: std::sync::Arc<std::sync::Mutex<Vec<Event>>>,
    }

    impl EventSink for FlakySink {
        fn append(&mut self, event: &Event) -> Result<Event> {
            if self.failures > 0 {
                self.failures -= 1;
                return Err(Error::InvalidArgument("No space left on device".into()));
            }
            self.written.lock().unwrap().push(event.clone());
            Ok(event.clone())
        }

        fn sync(&mut self) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn events_that_cannot_be_logged_are_kept_and_retried() {
        for (failures, logged, unlogged) in [(1, 3, 0), (usize::MAX, 0, 3)] {
            let mut source = SyntheticSource::new(&InterviewOptions { seconds: 1.0, fps: 50.0, width: 320, height: 240, seed: 4 }).unwrap();
            let roi = face_roi(&source);
            let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = FlakySink { failures, written: written.clone() };
            let (tx, rx) = std::sync::mpsc::channel();
            let mut pipeline = Pipeline::new(config(50.0, FaceSetting::Fixed(roi)), default_model(), sink, tx).unwrap();
            for _ in 0..30 {
                pipeline.push(&source.next_frame().unwrap().unwrap()).unwrap();
            }
            let mut received = Vec::new();
            for _ in 0..3 {
                assert!(pipeline.trigger(0.2));
                pipeline.push(&source.next_frame().unwrap().unwrap()).unwrap();
                received.push(rx.recv().unwrap());
            }
            let (_, report) = pipeline.finish();
            assert_eq!((report.events, written.lock().unwrap().len(), report.unlogged.len()), (3, logged, unlogged));
            assert!(report.failures >= 1 && report.last_failure.unwrap().contains("No space left"));
            if logged == 3 {
                // The first event failed, was retried before the second and kept its place.
                assert_eq!(*written.lock().unwrap(), received);
            } else {
                assert_eq!(report.unlogged, received);
            }
        }
    }
}
