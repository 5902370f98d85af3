//! The capture loop of `merd run`: frames into the pipeline, events out, and the peripherals
//! (status LED, trigger button, control socket) serviced between frames.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::Instant;
use tracing::{info, warn};

use anyhow::{Context, Result};
use mer_shared::classifier::Classifier;
use mer_shared::event::Event;
use mer_shared::push::Health;

use crate::config::DaemonConfig;
use crate::control::{ControlSocket, SharedStatus, update};
use crate::event_log::Session;
use crate::face::FaceState;
use crate::gpio::{BoardLed, BoardTrigger};
use crate::pipeline::{ModelChannel, Pipeline, Stats, WorkerReport};
use crate::push_server::{ModelSwitch, PushServer};
use crate::repeats::RepeatFilter;
use crate::service::ServiceManager;
use crate::source::FrameSource;

/// What the loop services besides the pipeline; all optional.
#[derive(Default)]
pub struct Peripherals {
    pub led: Option<BoardLed>,
    pub trigger: Option<BoardTrigger>,
    pub control: Option<ControlSocket>,
    /// What `merd status` and `mer devices` report.
    pub status: SharedStatus,
    /// Seconds a triggered classification looks back.
    pub trigger_window_s: f32,
    /// Raised (by a signal) to end the run: queued windows are still classified and logged.
    pub stop: Option<Arc<AtomicBool>>,
    /// The push listener, whose probation of a new model the loop serves.
    pub push: Option<PushServer>,
    /// The session events are stamped with (`merd session new` starts the next).
    pub session: Session,
}

impl Peripherals {
    /// Claims the configured GPIO lines and opens the control socket (the model is added to the
    /// status once it is loaded).
    pub fn open(config: &DaemonConfig) -> Result<Peripherals> {
        let (led, trigger) = match &config.gpio {
            Some(gpio) => gpio.open()?,
            None => (None, None),
        };
        let status = SharedStatus::default();
        let session = Session::start();
        update(&status, |s| {
            s.source = config.source.describe();
            s.log_dir = config.log.dir.clone();
            s.session = session.id();
        });
        let control = match &config.control.socket {
            Some(path) => Some(
                ControlSocket::start(path, status.clone(), session.clone())
                    .with_context(|| format!("cannot open the control socket {}", path.display()))?,
            ),
            None => None,
        };
        Ok(Peripherals { led, trigger, control, status, trigger_window_s: config.trigger.window_s, stop: None, push: None, session })
    }

    /// The trigger button or `merd trigger`, whichever asked.
    fn triggered(&mut self, now: Instant) -> bool {
        let from_socket = self.control.as_ref().is_some_and(|c| c.take_trigger());
        let from_button = match self.trigger.as_mut().map(|t| t.poll(now)) {
            Some(Ok(pressed)) => pressed,
            Some(Err(e)) => {
                warn!("the trigger button cannot be read ({e:?}); ignoring it from now on");
                self.trigger = None;
                false
            }
            None => false,
        };
        from_socket || from_button
    }

    fn stop_requested(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed))
    }

    fn on_event(&mut self, event: &Event, now: Instant) {
        if let Some(led) = &mut self.led {
            led.event(now);
        }
        update(&self.status, |s| s.record_event(event));
    }

    fn refresh(&mut self, now: Instant, start: Instant) {
        if let Some(Err(e)) = self.led.as_mut().map(|l| l.update(now, start)) {
            warn!("the status LED cannot be set ({e:?}); ignoring it from now on");
            self.led = None;
        }
    }
}

/// How the push listener reaches the running daemon: new models go to the pipeline's classifier
/// worker, and health comes from the status the capture loop keeps.
pub struct PipelineSwitch {
    pub models: ModelChannel,
    pub status: SharedStatus,
    pub store_dir: PathBuf,
}

impl ModelSwitch for PipelineSwitch {
    fn switch(&self, classifier: Classifier) {
        let version = classifier.manifest().version.clone();
        if self.models.send(classifier) {
            update(&self.status, |s| {
                s.model_version = version;
                s.model_path = self.store_dir.clone();
            });
        }
    }

    fn health(&self) -> Health {
        let s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        Health {
            uptime_s: s.uptime_s,
            fps: s.fps,
            frames: s.frames,
            dropped_frames: s.dropped_frames,
            events: s.events,
            face: s.face.clone(),
        }
    }
}

/// How often `merd status`'s disk use of the event log is refreshed.
const LOG_USAGE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Bytes and files directly in `dir` (the event log keeps no subfolders); an unreadable folder
/// counts as empty.
fn disk_use(dir: &std::path::Path) -> (u64, u64) {
    let files = std::fs::read_dir(dir).into_iter().flatten().flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file());
    files.fold((0, 0), |(bytes, n), m| (bytes + m.len(), n + 1))
}

/// Feeds every frame of `source` through `pipeline`, handing each finished event to `on_event`
/// as it arrives, until the source ends or a stop is requested. A frame the source cannot
/// deliver (and a lost camera) is reported and skipped; a face box that does not fit the frames
/// stops the run. Returns the counters and the seconds it ran.
pub fn drive(
    source: &mut dyn FrameSource,
    mut pipeline: Pipeline,
    events: Receiver<Event>,
    peripherals: &mut Peripherals,
    mut on_event: impl FnMut(&Event),
) -> Result<(Stats, WorkerReport, f64)> {
    let started = Instant::now();
    let mut source_errors = 0u64;
    let mut repeats = RepeatFilter::default();
    // Frame rate over the last status interval.
    let (mut rate_since, mut rate_frames) = (started, 0u64);
    let mut log_checked: Option<Instant> = None;
    let mut service = ServiceManager::from_env();
    service.ready();
    loop {
        if peripherals.stop_requested() {
            info!("stopping: finishing the queued windows");
            break;
        }
        match source.next_frame() {
            Ok(Some(frame)) => pipeline.push(&frame)?,
            Ok(None) => break,
            Err(e) => {
                source_errors += 1;
                repeats.report(&e.to_string(), Instant::now()).iter().for_each(|line| warn!("{line}"));
            }
        }
        let now = Instant::now();
        if peripherals.triggered(now) && !pipeline.trigger(peripherals.trigger_window_s) {
            info!("trigger ignored: no frames buffered yet");
        }
        if let Some(push) = &peripherals.push
            && push.watch_probation(now)
            && pipeline.probation_window(peripherals.trigger_window_s)
        {
            push.window_asked(now);
        }
        while let Ok(event) = events.try_recv() {
            peripherals.on_event(&event, now);
            on_event(&event);
        }
        let face = pipeline.face_state();
        if let Some(led) = &mut peripherals.led {
            led.set_face_lost(matches!(face, FaceState::Searching | FaceState::Lost));
        }
        peripherals.refresh(now, started);
        service.alive(now, || {
            let s = peripherals.status.lock().unwrap_or_else(|p| p.into_inner());
            format!("{:.0} frames/s, {} events, face {}", s.fps, s.events, s.face)
        });
        {
            let elapsed = now.duration_since(rate_since).as_secs_f64();
            if elapsed >= 1.0 {
                repeats.flush(now, false).iter().for_each(|line| warn!("{line}"));
                let stats = pipeline.stats().clone();
                let fps = (stats.frames - rate_frames) as f64 / elapsed;
                (rate_since, rate_frames) = (now, stats.frames);
                let refresh_log_use = log_checked.is_none_or(|at| now.duration_since(at) >= LOG_USAGE_EVERY);
                let probation = peripherals.push.as_ref().and_then(PushServer::probation_report);
                let last_pull = peripherals.push.as_ref().and_then(PushServer::last_pull);
                if refresh_log_use {
                    log_checked = Some(now);
                }
                update(&peripherals.status, |s| {
                    s.uptime_s = now.duration_since(started).as_secs_f64();
                    s.fps = fps;
                    s.frames = stats.frames;
                    s.dropped_frames = stats.dropped_frames;
                    s.spotted = stats.spotted;
                    s.triggered = stats.triggered;
                    s.dropped_windows = stats.dropped_windows;
                    s.faceless_frames = stats.faceless_frames;
                    s.face = face.to_string();
                    s.probation = probation;
                    s.last_pull = last_pull;
                    if refresh_log_use {
                        (s.log_bytes, s.log_files) = disk_use(&s.log_dir);
                    }
                });
            }
        }
    }
    service.stopping();
    let seconds = started.elapsed().as_secs_f64();
    let (stats, report) = pipeline.finish();
    for event in events.try_iter() {
        on_event(&event);
    }
    repeats.flush(Instant::now(), true).iter().for_each(|line| warn!("{line}"));
    if source_errors > 0 {
        warn!("the source reported {source_errors} unreadable frames or outages");
    }
    Ok((stats, report, seconds))
}
