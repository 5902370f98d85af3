//! `merd run`'s configuration file (TOML). Every field is described in
//! `device/merd.example.toml`; relative paths are taken from the file's own directory.

use std::path::{Path, PathBuf};

use mer_shared::synth::interview::InterviewOptions;
use mer_shared::{Error, Result};
use serde::Deserialize;

use crate::camera::CameraSettings;
use crate::event_log::{FsyncPolicy, LogConfig, Retention};
use crate::face::TrackerSettings;
use crate::gpio::GpioConfig;
use crate::pipeline::{FaceSetting, Roi};
use crate::push_server::PushSettings;
use crate::spotting::SpotterConfig;

/// Bounds on sizes taken from the file, checked before anything is allocated.
const MAX_BUFFERED_FRAMES: u64 = 16_384;
const MAX_QUEUED: usize = 256;
const MAX_THREADS: usize = 256;
const MAX_PRERENDER_BYTES: u64 = 8 << 30;
const MIN_SEGMENT_BYTES: u64 = 4096;
const MAX_SEGMENT_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    pub source: SourceConfig,
    #[serde(default)]
    pub face: FaceConfig,
    #[serde(default)]
    pub buffer: BufferConfig,
    #[serde(default)]
    pub spotting: SpotterConfig,
    #[serde(default)]
    pub trigger: TriggerConfig,
    pub model: ModelConfig,
    pub log: LogSection,
    /// Status LED and trigger button; absent on a machine without them.
    #[serde(default)]
    pub gpio: Option<GpioConfig>,
    #[serde(default)]
    pub control: ControlConfig,
    /// The model-push listener (`mer push`); absent, models change only by editing `[model]`.
    #[serde(default)]
    pub push: Option<PushSettings>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Unix socket for `merd status` and `merd trigger`; none when absent.
    pub socket: Option<PathBuf>,
}

/// Where frames come from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// A V4L2 camera (`/dev/videoN`), reopened whenever it is lost.
    Camera(CameraSettings),
    /// A directory of numbered frames, e.g. the `frames/` of `mer synth interview`.
    Replay {
        frames: PathBuf,
        fps: f64,
        /// Deliver frames at `fps` as a camera would (true) or as fast as they decode (false).
        #[serde(default = "yes")]
        realtime: bool,
    },
    /// A synthetic interview rendered on the fly.
    Synthetic {
        seconds: f32,
        fps: f32,
        #[serde(default = "default_width")]
        width: usize,
        #[serde(default = "default_height")]
        height: usize,
        #[serde(default = "one")]
        seed: u64,
        #[serde(default = "yes")]
        realtime: bool,
        /// Render the whole clip into memory before the run (benchmarks: the renderer is
        /// slower than the pipeline it feeds).
        #[serde(default)]
        prerender: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaceConfig {
    /// Fixed face box [x, y, width, height] in frame pixels; without it the face is detected.
    pub roi: Option<Roi>,
    /// Detection and tracking settings (`[face.detect]`), only without `roi`.
    pub detect: Option<TrackerSettings>,
}

impl FaceConfig {
    /// What the file alone can tell is wrong: a fixed box and detection settings together, or
    /// unusable detection settings.
    pub fn check(&self) -> std::result::Result<(), String> {
        match (&self.roi, &self.detect) {
            (Some(_), Some(_)) => Err("give either face.roi (a fixed box) or [face.detect] (detection), not both".into()),
            (None, Some(detect)) => detect.validate().map_err(|e| format!("face.detect: {e}")),
            _ => Ok(()),
        }
    }

    /// Detection runs in line for a source that is not paced in real time.
    pub fn setting(&self, realtime_source: bool) -> FaceSetting {
        match self.roi {
            Some(roi) => FaceSetting::Fixed(roi),
            None => FaceSetting::Detect { tracker: self.detect.clone().unwrap_or_default(), in_line: !realtime_source },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    /// Seconds of 128×128 face crops kept in memory for classification.
    pub seconds: f32,
    /// Spotted windows allowed to wait for the classifier; more are dropped and counted.
    pub max_queued: usize,
}

impl Default for BufferConfig {
    fn default() -> BufferConfig {
        BufferConfig { seconds: 2.0, max_queued: 4 }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TriggerConfig {
    /// Seconds before the trigger that a triggered classification looks at.
    pub window_s: f32,
}

impl Default for TriggerConfig {
    fn default() -> TriggerConfig {
        TriggerConfig { window_s: 0.5 }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A signed bundle (.merb) or an ONNX export.
    pub path: PathBuf,
    /// Public keys a bundle must be signed by; empty checks only the bundle's integrity.
    #[serde(default)]
    pub public_keys: Vec<PathBuf>,
    /// Threads for inference and for the optical flows of one window.
    #[serde(default = "one_thread")]
    pub threads: usize,
    /// Run a model whose training inputs this device cannot reproduce (e.g. trained on the
    /// published STSTNet flow images); it is warned about at start and every event is marked.
    #[serde(default)]
    pub allow_foreign_inputs: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub dir: PathBuf,
    #[serde(default = "default_segment_bytes")]
    pub max_segment_bytes: u64,
    #[serde(default = "default_fsync")]
    pub fsync: FsyncPolicy,
    /// Segments whose events have all been pulled (`mer events pull`) are removed once older
    /// than this many days (default: kept).
    pub keep_days: Option<f64>,
    /// The log's size limit: above it the oldest segments are removed, pulled or not (default:
    /// none).
    pub max_bytes: Option<u64>,
}

fn yes() -> bool {
    true
}
fn one() -> u64 {
    1
}
fn one_thread() -> usize {
    1
}
fn default_width() -> usize {
    640
}
fn default_height() -> usize {
    480
}
fn default_segment_bytes() -> u64 {
    16 << 20
}
fn default_fsync() -> FsyncPolicy {
    FsyncPolicy::Always
}

impl DaemonConfig {
    /// Reads and checks a configuration file; errors name the file and the offending field.
    pub fn load(path: &Path) -> Result<DaemonConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut config: DaemonConfig =
            toml::from_str(&text).map_err(|e| Error::Data { path: path.to_path_buf(), reason: e.to_string() })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.check().map_err(|reason| Error::Data { path: path.to_path_buf(), reason })?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let SourceConfig::Replay { frames, .. } = &mut self.source {
            fix(frames);
        }
        fix(&mut self.model.path);
        self.model.public_keys.iter_mut().for_each(fix);
        fix(&mut self.log.dir);
        if let Some(socket) = &mut self.control.socket {
            fix(socket);
        }
        if let Some(push) = &mut self.push {
            fix(&mut push.store);
            if let Some(key) = &mut push.key {
                fix(key);
            }
        }
    }

    fn check(&self) -> std::result::Result<(), String> {
        let fps = self.source.fps();
        if !(fps > 0.0 && fps <= 1000.0) {
            return Err(format!("source fps must lie in (0, 1000], got {fps}"));
        }
        if !(self.buffer.seconds > 0.0 && self.buffer.seconds <= 60.0) {
            return Err(format!("buffer.seconds must lie in (0, 60], got {}", self.buffer.seconds));
        }
        if !(self.trigger.window_s > 0.0 && self.trigger.window_s <= self.buffer.seconds) {
            return Err(format!("trigger.window_s must lie in (0, buffer.seconds], got {}", self.trigger.window_s));
        }
        // Face crops are held as 128×128 floats (64 KiB) per buffered frame.
        let buffered = (f64::from(self.buffer.seconds) * fps).ceil();
        if buffered > MAX_BUFFERED_FRAMES as f64 {
            return Err(format!(
                "buffer.seconds × source fps = {buffered} frames of face crops ({} MiB); at most {MAX_BUFFERED_FRAMES} ({} MiB)",
                (buffered as u64 * 64) >> 10,
                (MAX_BUFFERED_FRAMES * 64) >> 10
            ));
        }
        if !(1..=MAX_QUEUED).contains(&self.buffer.max_queued) {
            return Err(format!("buffer.max_queued must lie in 1..={MAX_QUEUED}, got {}", self.buffer.max_queued));
        }
        match &self.source {
            SourceConfig::Camera(camera) => camera.validate().map_err(|e| e.to_string())?,
            SourceConfig::Synthetic { prerender, .. } => {
                let options = self.source.interview_options().expect("a synthetic source");
                options.validate().map_err(|e| format!("source: {e}"))?;
                let bytes = options.frames() as u64 * options.width as u64 * options.height as u64;
                if *prerender && bytes > MAX_PRERENDER_BYTES {
                    return Err(format!(
                        "source.prerender would hold {} MiB of frames; at most {} MiB (shorten seconds or set prerender = false)",
                        bytes >> 20,
                        MAX_PRERENDER_BYTES >> 20
                    ));
                }
            }
            SourceConfig::Replay { .. } => {}
        }
        self.face.check()?;
        if !(1..=MAX_THREADS).contains(&self.model.threads) {
            return Err(format!("model.threads must lie in 1..={MAX_THREADS}, got {}", self.model.threads));
        }
        if let Some(days) = self.log.keep_days
            && !(days > 0.0 && days.is_finite())
        {
            return Err(format!("log.keep_days must be a positive number of days, got {days}"));
        }
        if let Some(max) = self.log.max_bytes
            && max < 2 * self.log.max_segment_bytes
        {
            return Err(format!(
                "log.max_bytes {max} must hold at least two segments of log.max_segment_bytes ({})",
                self.log.max_segment_bytes
            ));
        }
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.log.max_segment_bytes) {
            return Err(format!(
                "log.max_segment_bytes must lie in {MIN_SEGMENT_BYTES}..={MAX_SEGMENT_BYTES}, got {}",
                self.log.max_segment_bytes
            ));
        }
        if let Some(push) = &self.push {
            if self.model.public_keys.is_empty() {
                return Err("[push] needs model.public_keys: the keys allowed to sign bundles and the commands that activate them".into());
            }
            if push.max_bundle_mb == 0 {
                return Err("push.max_bundle_mb must be positive".into());
            }
            for (key, seconds) in [("timeout_s", push.timeout_s), ("session_s", push.session_s)] {
                if !(seconds > 0.0 && seconds.is_finite()) {
                    return Err(format!("push.{key} must be a positive number of seconds, got {seconds}"));
                }
            }
            if push.max_sessions == 0 {
                return Err("push.max_sessions must be at least 1".into());
            }
            if !(push.probation_s >= 0.0 && push.probation_s.is_finite()) {
                return Err(format!("push.probation_s must be 0 (no probation) or a number of seconds, got {}", push.probation_s));
            }
            if push.probation_s > 0.0 {
                if push.keep == 0 {
                    return Err("push.keep = 0 leaves no model to return to when a new one fails its probation: keep at least 1, \
                                or set push.probation_s = 0"
                        .into());
                }
                if !(push.max_window_ms > 0.0 && push.max_window_ms.is_finite()) {
                    return Err(format!("push.max_window_ms must be a positive number of milliseconds, got {}", push.max_window_ms));
                }
            }
        }
        Ok(())
    }

    pub fn retention(&self) -> Retention {
        Retention { keep_days: self.log.keep_days, max_bytes: self.log.max_bytes }
    }

    pub fn log_config(&self) -> LogConfig {
        LogConfig { dir: self.log.dir.clone(), max_segment_bytes: self.log.max_segment_bytes, fsync: self.log.fsync }
    }
}

impl SourceConfig {
    pub fn fps(&self) -> f64 {
        match self {
            SourceConfig::Camera(camera) => f64::from(camera.fps),
            SourceConfig::Replay { fps, .. } => *fps,
            SourceConfig::Synthetic { fps, .. } => *fps as f64,
        }
    }

    /// Whether frames arrive at the source's own pace (a camera, or replay with `realtime`).
    pub fn realtime(&self) -> bool {
        match self {
            SourceConfig::Camera(_) => true,
            SourceConfig::Replay { realtime, .. } | SourceConfig::Synthetic { realtime, .. } => *realtime,
        }
    }

    /// One line for `merd status`.
    pub fn describe(&self) -> String {
        match self {
            SourceConfig::Camera(c) => format!("camera {} ({:?}, {}×{} at {} fps)", c.device.display(), c.format, c.width, c.height, c.fps),
            SourceConfig::Replay { frames, fps, .. } => format!("replay of {} at {fps} fps", frames.display()),
            SourceConfig::Synthetic { seconds, fps, width, height, seed, .. } => {
                format!("synthetic interview, {seconds} s at {fps} fps, {width}×{height}, seed {seed}")
            }
        }
    }

    pub fn interview_options(&self) -> Option<InterviewOptions> {
        match *self {
            SourceConfig::Synthetic { seconds, fps, width, height, seed, .. } => {
                Some(InterviewOptions { seconds, fps, width, height, seed })
            }
            SourceConfig::Replay { .. } | SourceConfig::Camera(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::camera::PixelFormat;

    #[test]
    fn the_example_configuration_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("merd.example.toml");
        let config = DaemonConfig::load(&path).unwrap();
        assert!(config.model.path.is_absolute());
        assert_eq!(config.spotting.threshold_z, 6.0);
        assert_eq!(config.log.fsync, FsyncPolicy::Always);
        assert!(config.push.is_none());

        // The commented [push] section, switched on.
        let text = std::fs::read_to_string(&path).unwrap();
        let start = text.find("# [push]").unwrap();
        let enabled: String = text[start..].lines().map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l))).collect();
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("merd.toml");
        std::fs::write(&copy, format!("{}{enabled}", &text[..start])).unwrap();
        let push = DaemonConfig::load(&copy).unwrap().push.unwrap();
        assert_eq!((push.listen.as_str(), push.keep, push.max_sessions), ("0.0.0.0:7878", 3, 4));
        assert_eq!((push.timeout_s, push.session_s), (30.0, 3600.0));
        assert_eq!(push.store, dir.path().join("../out/merd-models"));
    }

    #[test]
    fn the_deployment_configurations_parse() {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let usb = DaemonConfig::load(&deploy.join("merd.jetson.toml")).unwrap();
        assert!(matches!(&usb.source, SourceConfig::Camera(c) if c.format == PixelFormat::Mjpeg));
        let csi = DaemonConfig::load(&deploy.join("merd.jetson-csi.toml")).unwrap();
        let SourceConfig::Camera(camera) = &csi.source else { panic!("{:?}", csi.source) };
        assert_eq!(camera.format, PixelFormat::try_from("rggb10".to_string()).unwrap());
        assert_eq!((camera.width, camera.height, camera.raw_shift), (1280, 720, 0));
        // The face box is in the half-size frame.
        let roi = csi.face.roi.unwrap();
        assert!(roi.x + roi.width <= 640 && roi.y + roi.height <= 360, "{roi:?}");
    }

    #[test]
    fn mistakes_are_reported_with_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("merd.toml");
        let base = r#"
            [source]
            kind = "synthetic"
            seconds = 5
            fps = 100
            [face]
            roi = [10, 10, 100, 120]
            [model]
            path = "m.merb"
            [log]
            dir = "events"
        "#;
        std::fs::write(&path, base).unwrap();
        let config = DaemonConfig::load(&path).unwrap();
        assert_eq!(config.log.dir, dir.path().join("events"));
        assert_eq!(config.face.setting(true), FaceSetting::Fixed(Roi { x: 10, y: 10, width: 100, height: 120 }));
        assert_eq!(config.buffer, BufferConfig::default());

        let camera = base.replace(
            "kind = \"synthetic\"\n            seconds = 5",
            "kind = \"camera\"\ndevice = \"/dev/video2\"\nwidth = 640\nheight = 480\nformat = \"mjpeg\"",
        );
        std::fs::write(&path, &camera).unwrap();
        let config = DaemonConfig::load(&path).unwrap();
        let SourceConfig::Camera(settings) = &config.source else { panic!("{:?}", config.source) };
        assert_eq!((settings.device.as_path(), settings.format, settings.stall_s), (Path::new("/dev/video2"), PixelFormat::Mjpeg, 2.0));

        let with_keys = base.replace("[log]", "public_keys = [\"k.pub\"]\n[log]");
        for (broken, expect) in [
            (base.replace("fps = 100", "fps = 100\nfsp = 3"), "fsp"),
            (base.replace("[log]", "[log]\nfsync = \"sometimes\""), "sometimes"),
            (base.replace("fps = 100", "fps = 0"), "fps"),
            (base.replace("[model]", "[spotting]\nthreshold = 3\n[model]"), "threshold"),
            (base.replace("roi = [10, 10, 100, 120]", "roi = [10, 10]"), "roi"),
            (format!("{base}\n[push]\nlisten = \"127.0.0.1:0\"\nstore = \"models\""), "model.public_keys"),
            (
                format!("{with_keys}\n[push]\nlisten = \"127.0.0.1:0\"\nstore = \"models\"\nsession_s = 0"),
                "push.session_s must be a positive",
            ),
            (format!("{with_keys}\n[push]\nlisten = \"127.0.0.1:0\"\nstore = \"models\"\nkeep = 0"), "push.keep = 0"),
            (format!("{with_keys}\n[push]\nlisten = \"127.0.0.1:0\"\nstore = \"models\"\nmax_window_ms = -1"), "push.max_window_ms"),
            (base.replace("[model]", "[face.detect]\nsmoothing = 0.5\n[model]"), "not both"),
            (base.replace("roi = [10, 10, 100, 120]", "[face.detect]\nsmoothing = 2.0"), "face.detect"),
            (camera.replace("\"mjpeg\"", "\"h264\""), "h264"),
            (camera.replace("width = 640", "width = 640\nexposure = 3"), "exposure"),
            (camera.replace("width = 640", "width = 0"), "width"),
            (base.replace("fps = 100", "fps = 100\nwidth = 4294967296"), "4294967296×480"),
            (base.replace("seconds = 5", "seconds = 86400\nprerender = true"), "source.prerender"),
            (base.replace("[model]", "[buffer]\nmax_queued = 0\n[model]"), "buffer.max_queued"),
            (base.replace("[model]", "[buffer]\nseconds = 60\n[model]").replace("fps = 100", "fps = 1000"), "buffer.seconds × source fps"),
            (base.replace("path = \"m.merb\"", "path = \"m.merb\"\nthreads = 0"), "model.threads"),
            (base.replace("[log]", "[log]\nmax_segment_bytes = 0"), "log.max_segment_bytes"),
            (base.replace("[log]", "[log]\nkeep_days = -1"), "log.keep_days"),
            (base.replace("[log]", "[log]\nmax_bytes = 1000"), "log.max_bytes"),
        ] {
            std::fs::write(&path, broken).unwrap();
            let e = DaemonConfig::load(&path).unwrap_err().to_string();
            assert!(e.contains("merd.toml") && e.contains(expect), "{e}");
        }
        assert!(DaemonConfig::load(&dir.path().join("absent.toml")).unwrap_err().to_string().contains("absent.toml"));
    }
}
