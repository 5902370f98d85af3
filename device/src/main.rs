//! `merd`: the device daemon.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use mer_device::camera::{CameraSource, V4lOpener};
use mer_device::clip::classify_clip;
use mer_device::config::{DaemonConfig, SourceConfig};
use mer_device::control::{request, update};
use mer_device::daemon::{Peripherals, PipelineSwitch, drive};
use mer_device::event_log::{EventLog, FsyncPolicy, LogConfig, Session, read_events};
use mer_device::face::TrackerSettings;
use mer_device::model_store::{ModelStore, check_compatible};
use mer_device::pipeline::{FaceSetting, Pipeline, PipelineConfig, Roi, Stats, WorkerReport};
use mer_device::push_server::{PushServer, PushSettings};
use mer_device::source::{FrameSource, RealTime, ReplaySource, SyntheticSource};
use mer_device::spotting::{Spotter, SpotterConfig, iou, score};
use mer_shared::bundle::{PublicKey, read_public_key};
use mer_shared::classifier::{Classifier, Origin, Trust, classify_file};
use mer_shared::event::Event;
use mer_shared::face::FaceBox;
use mer_shared::input::KeyFrames;
use mer_shared::manifest::Manifest;
use mer_shared::push::channel::DeviceKey;
use mer_shared::stdout::end_quietly_when_stdout_closes;
use mer_shared::synth::interview::InterviewOptions;
use signal_hook::consts::{SIGINT, SIGTERM};

#[derive(Parser)]
#[command(name = "merd", version, about = "Micro-expression recognition on the device")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum SessionCommand {
    /// Start a new session (e.g. the next interview); prints its id as JSON.
    New {
        #[arg(long)]
        socket: PathBuf,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline (frames -> face crops -> spotting -> classification -> event log) as
    /// configured in a TOML file; see device/merd.example.toml.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Offline demo: a synthetic interview through the whole pipeline with the default model,
    /// each event printed beside the ground truth.
    Demo {
        #[arg(long, default_value_t = 20.0)]
        seconds: f32,
        #[arg(long, default_value_t = 100.0)]
        fps: f32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "models/skd-tstsan-synthetic.merb")]
        model: PathBuf,
        #[arg(long = "pub", default_value = "models/demo-key.pub")]
        public_key: PathBuf,
        /// The event log goes to OUT/events (emptied first).
        #[arg(long, default_value = "out/merd-demo")]
        out: PathBuf,
        /// `detect`: find and track the face as a device without a configured box does;
        /// `fixed`: crop the scene's known face box.
        #[arg(long, value_enum, default_value_t = DemoFace::Detect)]
        face: DemoFace,
        /// Run a model trained on inputs this device cannot reproduce (e.g. the composite-image
        /// models in models/), marking every event.
        #[arg(long)]
        allow_foreign_inputs: bool,
    },
    /// Read a recorded clip (a directory of numbered frames) as the live source would deliver it.
    Replay {
        frames: PathBuf,
        #[arg(long, default_value_t = 60.0)]
        fps: f64,
    },
    /// Classify the samples of a float32 .npy file (N, C, H, W) with a model or bundle; prints
    /// the same JSON as `mer infer`.
    Classify {
        /// A signed bundle (.merb) or an ONNX model from `mer export`.
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        input: PathBuf,
        /// Public keys a bundle must be signed by (without one, only its integrity is checked).
        #[arg(long = "pub")]
        public_keys: Vec<PathBuf>,
        #[arg(long, default_value_t = 1, value_parser = thread_count())]
        threads: usize,
    },
    /// Classify one recorded window of numbered frames with the device's own preprocessing; prints
    /// `mer infer`'s JSON plus the input's SHA-256 (the hash `mer prepare` records per sample).
    ClassifyClip {
        /// A signed bundle (.merb) or an ONNX model from `mer export`.
        #[arg(long)]
        model: PathBuf,
        /// The clip's folder of numbered frames (img46.jpg and 000046.png are both frame 46).
        #[arg(long)]
        frames: PathBuf,
        /// Frame numbers of the key frames, as the file names give them.
        #[arg(long)]
        onset: i64,
        #[arg(long)]
        apex: i64,
        #[arg(long)]
        offset: i64,
        /// Face box x,y,w,h in frame pixels (default: detected on the folder's first frame, as
        /// `mer prepare --crop detect` does).
        #[arg(long)]
        roi: Option<FaceBox>,
        /// Public keys a bundle must be signed by (without one, only its integrity is checked).
        #[arg(long = "pub")]
        public_keys: Vec<PathBuf>,
        #[arg(long, default_value_t = 1, value_parser = thread_count())]
        threads: usize,
        /// Classify even with a model trained on inputs this device cannot reproduce.
        #[arg(long)]
        allow_foreign_inputs: bool,
    },
    /// Print this device's key fingerprint, for `mer devices enroll` to be checked against;
    /// makes the key (`[push] key`, by default `device.key` in the model store) if there is none.
    Key {
        #[arg(long)]
        config: PathBuf,
    },
    /// Ask a running `merd run` what it is doing (its `control.socket`); prints JSON.
    Status {
        #[arg(long)]
        socket: PathBuf,
    },
    /// Ask a running `merd run` to classify the last `trigger.window_s` seconds now.
    Trigger {
        #[arg(long)]
        socket: PathBuf,
    },
    /// Sessions of a running `merd run`: every event carries the session it was recorded in.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Print the events of an event log, oldest first.
    Events {
        /// The log directory (`log.dir` in the configuration).
        #[arg(long)]
        log: PathBuf,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Exit 0 even when part of the log is damaged (the intact records are listed either way).
        #[arg(long)]
        allow_damage: bool,
    },
}

fn main() -> Result<()> {
    return_large_blocks_when_freed();
    mer_shared::logging::init();
    match Cli::parse().command {
        Command::Run { config } => run(&config)?,
        Command::Key { config } => device_key(&config)?,
        Command::Status { socket } => {
            end_quietly_when_stdout_closes();
            println!("{}", request(&socket, "status").with_context(|| "is merd running with this control.socket?")?)
        }
        Command::Session(SessionCommand::New { socket }) => {
            println!("{}", request(&socket, "session new").with_context(|| "is merd running with this control.socket?")?)
        }
        Command::Trigger { socket } => {
            println!("{}", request(&socket, "trigger").with_context(|| "is merd running with this control.socket?")?)
        }
        Command::Demo { seconds, fps, seed, model, public_key, out, face, allow_foreign_inputs } => {
            demo(seconds, fps, seed, &model, &public_key, &out, face, allow_foreign_inputs)?
        }
        Command::Replay { frames, fps } => {
            let mut src = ReplaySource::open(&frames, fps)?;
            let start = Instant::now();
            let (mut n, mut last) = (0u64, 0.0);
            while let Some(frame) = src.next_frame()? {
                n += 1;
                last = frame.timestamp;
            }
            let secs = start.elapsed().as_secs_f64();
            println!("{n} frames ({last:.2} s of video at {fps} fps) decoded in {secs:.2} s ({:.0} frames/s)", n as f64 / secs);
        }
        Command::ClassifyClip { model, frames, onset, apex, offset, roi, public_keys, threads, allow_foreign_inputs } => {
            let classifier = load_classifier(&model, &trusted_keys(&public_keys)?, threads)?;
            accept_inputs(classifier.manifest(), allow_foreign_inputs)?;
            let keys = KeyFrames::new(onset, apex, offset)?;
            let result = classify_clip(&classifier, &frames, keys, roi, threads)
                .with_context(|| format!("classifying frames {onset}–{offset} of {}", frames.display()))?;
            println!("{}", serde_json::to_string(&result)?);
        }
        Command::Classify { model, input, public_keys, threads } => {
            let (result, origin) = classify_file(&model, &input, &public_keys, threads)?;
            if let Origin::Bundle { signer, trusted: false } = origin {
                warn!("bundle signed by key {signer}; pass --pub KEY.pub to require a trusted signer");
            }
            println!("{}", serde_json::to_string(&result)?);
        }
        Command::Events { log, json, allow_damage } => {
            end_quietly_when_stdout_closes();
            let (events, damage) = read_events(&log)?;
            for d in &damage {
                eprintln!("damaged: {d}");
            }
            for e in &events {
                if json {
                    println!("{}", serde_json::to_string(e)?);
                } else {
                    println!(
                        "{}  onset {:.3} s  apex {:.3} s  offset {:.3} s  {:<19}  {:?}  model {}  {:.0} ms{}",
                        utc(e.wall_time_ms),
                        e.onset_s,
                        e.apex_s,
                        e.offset_s,
                        e.describe_label(),
                        e.source,
                        e.model_version,
                        e.latency.total_ms,
                        if e.foreign_inputs { "  (model trained on foreign inputs)" } else { "" }
                    );
                }
            }
            if !json {
                eprintln!("{} events", events.len());
            }
            if !damage.is_empty() && !allow_damage {
                bail!(
                    "{} damaged places in {} (listed above; every intact record was read); --allow-damage accepts them",
                    damage.len(),
                    log.display()
                );
            }
        }
    }
    Ok(())
}

/// Keeps glibc's malloc from raising its mmap threshold as large blocks are freed. With the
/// raised threshold, the weight copies tract makes while optimising a model come from the heap,
/// and the blocks they replace stay resident after being freed: HTNet's load peaked at 1.1–1.2 GB
/// instead of 0.54 GB (docs/BENCHMARKS.md). 128 KiB is glibc's own starting value.
fn return_large_blocks_when_freed() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; it is called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// The model store's active model; on the first start, the configured model becomes the first
/// active one.
fn open_store(config: &DaemonConfig, push: &PushSettings, keys: Vec<PublicKey>) -> Result<(Classifier, ModelStore)> {
    let mut store = ModelStore::open(&push.store, keys, push.keep, config.model.threads)
        .with_context(|| format!("cannot open the model store {}", push.store.display()))?
        .allowing_foreign_inputs(config.model.allow_foreign_inputs);
    let verified = match store.load_active()? {
        Some(verified) => verified,
        None => {
            let path = &config.model.path;
            info!("model store {} is empty: starting it with {}", push.store.display(), path.display());
            store.adopt(path).with_context(|| format!("the configured model {} cannot start the store", path.display()))?
        }
    };
    let m = verified.classifier.manifest();
    info!("model {} ({}, from the store {}): classes {}", m.version, verified.info.sha256, push.store.display(), m.classes.join(", "));
    Ok((verified.classifier, store))
}

/// Refuses a model whose training inputs this device cannot reproduce, unless allowed; when
/// allowed, says so loudly (every event of such a model is marked too).
fn accept_inputs(manifest: &Manifest, allow_foreign_inputs: bool) -> Result<()> {
    check_compatible(manifest, allow_foreign_inputs)?;
    if let Some(why) = manifest.inputs.foreign_reason() {
        warn!("model {}: {why}; running it because allow_foreign_inputs is set, and marking every event", manifest.version);
    }
    Ok(())
}

fn trusted_keys(paths: &[PathBuf]) -> Result<Vec<PublicKey>> {
    Ok(paths.iter().map(|p| read_public_key(p)).collect::<mer_shared::Result<Vec<_>>>()?)
}

fn load_classifier(path: &Path, keys: &[PublicKey], threads: usize) -> Result<Classifier> {
    let classifier = Classifier::load(path, Trust::of(keys))?.with_threads(threads);
    let m = classifier.manifest();
    info!("model {} ({}): classes {}", m.version, path.display(), m.classes.join(", "));
    Ok(classifier)
}

fn open_log(config: LogConfig) -> Result<EventLog> {
    let dir = config.dir.clone();
    let (log, recovery) = EventLog::open(config).with_context(|| format!("cannot open the event log in {}", dir.display()))?;
    info!("event log {}: {} records in {} segments", dir.display(), recovery.records, recovery.segments);
    if let Some((segment, offset, bytes)) = recovery.torn_tail {
        warn!("event log: a torn record of {bytes} bytes at {offset} in {} was moved aside", segment.display());
    }
    Ok(log)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "merd".into())
}

fn print_event(e: &Event) {
    println!(
        "{:>8.3} s  onset {:.3}  offset {:.3}  {:<18}  {:?}  (spot {:.0} + flows {:.0} + inference {:.0} ms; {:.0} ms after the offset frame){}",
        e.apex_s,
        e.onset_s,
        e.offset_s,
        e.describe_label(),
        e.source,
        e.latency.spotting_ms,
        e.latency.preprocess_ms,
        e.latency.inference_ms,
        e.latency.total_ms,
        if e.foreign_inputs { "  (model trained on foreign inputs)" } else { "" }
    );
}

fn summary(stats: &Stats, report: &WorkerReport, seconds: f64) {
    info!(
        "{} frames in {seconds:.1} s ({:.0} frames/s), {} dropped by the source, {} without a face; {} spotted, {} triggered, {} events logged, {} windows dropped, {} failures",
        stats.frames,
        stats.frames as f64 / seconds.max(1e-9),
        stats.dropped_frames,
        stats.faceless_frames,
        stats.spotted,
        stats.triggered,
        report.events - report.unlogged.len() as u64,
        stats.dropped_windows,
        report.failures
    );
    if !report.unlogged.is_empty() {
        error!("{} events could not be written to the log:", report.unlogged.len());
        for e in &report.unlogged {
            error!("{}", serde_json::to_string(e).unwrap_or_default());
        }
    }
}

/// `--threads`: 1 to 256 (0 is refused rather than read as "all cores" or "none").
fn thread_count() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..=256)
}

/// Everything that can be checked is checked before the first file is created: the
/// configuration, keys, frame source, pipeline settings and peripherals come first, then the
/// model store (which may copy the configured bundle into it) and the event log.
fn run(config_path: &Path) -> Result<()> {
    let config = DaemonConfig::load(config_path)?;
    let keys = trusted_keys(&config.model.public_keys)?;
    let fps = config.source.fps();
    let pipeline_config = PipelineConfig {
        fps: fps as f32,
        face: config.face.setting(config.source.realtime()),
        buffer_s: config.buffer.seconds,
        spotting: config.spotting.clone(),
        flow_threads: config.model.threads,
        max_queued: config.buffer.max_queued,
    };
    pipeline_config.check().with_context(|| format!("{}", config_path.display()))?;
    let mut source = open_source(&config.source)?;
    let push_listener = config.push.as_ref().map(PushServer::bind).transpose()?;
    let mut peripherals = Peripherals::open(&config)?;
    peripherals.stop = Some(stop_on_signals()?);

    let (classifier, store) = match &config.push {
        Some(push) => {
            let (classifier, store) = open_store(&config, push, keys)?;
            (classifier, Some(store))
        }
        None => (load_classifier(&config.model.path, &keys, config.model.threads)?, None),
    };
    accept_inputs(classifier.manifest(), config.model.allow_foreign_inputs)?;
    let model_path = store.as_ref().map_or_else(|| config.model.path.clone(), |s| s.dir().to_path_buf());
    let version = classifier.manifest().version.clone();
    update(&peripherals.status, |s| {
        s.model_path = model_path.clone();
        s.model_version = version;
    });
    let mut log = open_log(config.log_config())?.with_retention(config.retention())?;
    let device = match &config.push {
        Some(push) => DeviceKey::load_or_create(&push.key_path())?.0.public().fingerprint(),
        None => host_name(),
    };
    log.identify(&device, peripherals.session.clone());
    info!("device {device}, session {}", peripherals.session.id());
    update(&peripherals.status, |s| s.device = device.clone());
    let (tx, rx) = channel();
    let pipeline = Pipeline::new(pipeline_config, classifier, log, tx)?;
    if let (Some(listener), Some(store)) = (push_listener, store) {
        let switch = PipelineSwitch { models: pipeline.model_switch(), status: peripherals.status.clone(), store_dir: model_path };
        let server = listener.with_event_log(&config.log.dir).serve(store, trusted_keys(&config.model.public_keys)?, Arc::new(switch))?;
        info!("listening for model pushes on {}", server.address());
        if let Some(observer) = server.window_observer() {
            pipeline.observe(observer);
        }
        peripherals.push = Some(server);
    }
    let (stats, report, seconds) = drive(&mut source, pipeline, rx, &mut peripherals, print_event)?;
    summary(&stats, &report, seconds);
    Ok(())
}

fn device_key(config_path: &Path) -> Result<()> {
    let config = DaemonConfig::load(config_path)?;
    let Some(push) = &config.push else {
        bail!("{} has no [push] section: the device key is only for the fleet channel", config_path.display());
    };
    let path = push.key_path();
    let (key, made) = DeviceKey::load_or_create(&path)?;
    println!("device key  {}{}", path.display(), if made { " (made now)" } else { "" });
    println!("fingerprint {}", key.public().fingerprint());
    println!("public key  {}", key.public().to_hex());
    Ok(())
}

/// The configured frame source, opened (a camera is opened on its first frame).
fn open_source(config: &SourceConfig) -> Result<Box<dyn FrameSource + Send>> {
    Ok(match config {
        SourceConfig::Camera(settings) => {
            let retry_max = Duration::from_secs_f64(settings.retry_max_s);
            Box::new(CameraSource::new(V4lOpener { settings: settings.clone() }, config.fps(), retry_max))
        }
        SourceConfig::Replay { frames, fps, realtime } => {
            let replay = ReplaySource::open(frames, *fps)?;
            if *realtime { Box::new(RealTime::new(replay)) } else { Box::new(replay) }
        }
        SourceConfig::Synthetic { realtime, prerender, .. } => {
            let mut synthetic = SyntheticSource::new(&config.interview_options().expect("synthetic"))?;
            if *prerender {
                let started = Instant::now();
                synthetic.prerender();
                info!("rendered {} frames ahead in {:.1} s", synthetic.scene().frames, started.elapsed().as_secs_f64());
            }
            if *realtime { Box::new(RealTime::new(synthetic)) } else { Box::new(synthetic) }
        }
    })
}

/// A flag raised by SIGTERM (systemd stopping the service) or SIGINT (Ctrl-C): the loop then
/// stops taking frames, lets the classifier finish the queued windows and logs them. A second
/// signal while it does so exits at once.
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop)).context("installing a signal handler")?;
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("installing a signal handler")?;
    }
    Ok(stop)
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DemoFace {
    Detect,
    Fixed,
}

/// Removes the event segments (and torn tails) an earlier demo left in `dir`, and nothing else.
fn clear_demo_log(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries {
        let path = entry.with_context(|| format!("reading {}", dir.display()))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("events-") && (name.ends_with(".log") || name.contains(".log.torn-")) {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one per command-line option
fn demo(
    seconds: f32,
    fps: f32,
    seed: u64,
    model: &Path,
    public_key: &Path,
    out: &Path,
    face: DemoFace,
    allow_foreign_inputs: bool,
) -> Result<()> {
    if !model.exists() {
        bail!("no model at {} (run from the repository root, or pass --model)", model.display());
    }
    let classifier = load_classifier(model, &trusted_keys(&[public_key.to_path_buf()])?, 1)?;
    accept_inputs(classifier.manifest(), allow_foreign_inputs)?;
    let manifest = classifier.manifest().clone();
    // Everything is checked before the previous demo's log is cleared.
    let mut source = SyntheticSource::new(&InterviewOptions { seconds, fps, width: 640, height: 480, seed })?;
    Spotter::new(SpotterConfig::for_fps(fps))?;
    let dir = out.join("events");
    clear_demo_log(&dir)?;
    let mut log = open_log(LogConfig { dir, max_segment_bytes: 16 << 20, fsync: FsyncPolicy::Never })?;
    log.identify(&host_name(), Session::start());
    let scene = source.scene().clone();
    let (cx, cy, rx, ry) = scene.face;
    let roi =
        Roi { x: (cx - rx).max(0.0) as usize, y: (cy - ry).max(0.0) as usize, width: (2.0 * rx) as usize, height: (2.0 * ry) as usize };
    let (face, face_text) = match face {
        // The demo runs as fast as it can: detection in line keeps its output independent of load.
        DemoFace::Detect => {
            (FaceSetting::Detect { tracker: TrackerSettings::default(), in_line: true }, "face detected and tracked".to_string())
        }
        DemoFace::Fixed => (FaceSetting::Fixed(roi), format!("fixed face box {:?}", <[usize; 4]>::from(roi))),
    };
    eprintln!(
        "synthetic interview: {seconds} s at {fps} fps, 640×480, seed {seed}: {} micro-expressions, {} blinks; {face_text}",
        scene.events.len(),
        scene.blinks.len(),
    );
    let (tx, rx_events) = channel();
    let pipeline = Pipeline::new(
        PipelineConfig { fps, face, buffer_s: 2.0, spotting: SpotterConfig::for_fps(fps), flow_threads: 1, max_queued: 16 },
        classifier,
        log,
        tx,
    )?;
    let truth: Vec<(usize, usize)> = scene.events.iter().map(|e| (e.onset, e.offset)).collect();
    let frame_of = |s: f64| (s * fps as f64).round() as usize;
    let mut found = Vec::new();
    // Spotted true expressions whose emotion is one of the model's classes, and how many of
    // those were labelled right.
    let (mut classifiable, mut right, mut uncertain) = (0usize, 0usize, 0usize);
    println!("   apex     spotted interval      label                        truth");
    let (stats, report, secs) = drive(&mut source, pipeline, rx_events, &mut Peripherals::default(), |e| {
        let interval = (frame_of(e.onset_s), frame_of(e.offset_s));
        found.push(interval);
        let matched = scene.events.iter().map(|t| (t, iou(interval, (t.onset, t.offset)))).max_by(|a, b| a.1.total_cmp(&b.1));
        let expected = matched.and_then(|(t, _)| class_of_emotion(&manifest, t.emotion.name()));
        if let Some((_, overlap)) = matched
            && overlap >= 0.5
            && let Some(class) = &expected
        {
            classifiable += 1;
            right += usize::from(e.label == *class);
            uncertain += usize::from(e.label == mer_shared::manifest::UNCERTAIN);
        }
        let truth = match matched {
            Some((t, overlap)) if overlap > 0.0 => format!(
                "{}{} (frames {}–{}, IoU {overlap:.2}{})",
                t.emotion.name(),
                match &expected {
                    Some(class) if class != t.emotion.name() => format!(", the model's {class}"),
                    Some(_) => String::new(),
                    None => ", not a class of this model".into(),
                },
                t.onset,
                t.offset,
                if overlap >= 0.5 { "" } else { ", too little overlap" }
            ),
            _ => "none: a false alarm".into(),
        };
        println!("{:>7.3} s  frames {:>5}–{:<5}  {:<27}  {truth}", e.apex_s, interval.0, interval.1, e.describe_label());
    })?;
    let s = score(&found, &truth);
    println!(
        "spotting (IoU >= 0.5): {} of {} micro-expressions found, {} false alarms; precision {:.2}, recall {:.2}, F1 {:.2}",
        s.true_positives,
        truth.len(),
        s.false_positives,
        s.precision,
        s.recall,
        s.f1
    );
    if classifiable > 0 {
        println!(
            "labels: {right} of {classifiable} spotted expressions of the model's classes labelled right ({:.0} %){}",
            100.0 * right as f64 / classifiable as f64,
            if uncertain > 0 { format!(", {uncertain} called uncertain (below the model's threshold)") } else { String::new() }
        );
    } else {
        println!("labels: no spotted expression of the model's classes to score");
    }
    summary(&stats, &report, secs);
    println!("events logged in {}; read them with: merd events --log {}", out.join("events").display(), out.join("events").display());
    Ok(())
}

/// The model's class for a true emotion of the synthetic scene, if it has one, by its own
/// taxonomy; a composite model's classes group emotions as the MEGC 2019 composite set did its
/// CASME II and SAMM parts.
fn class_of_emotion(manifest: &Manifest, emotion: &str) -> Option<String> {
    use mer_shared::labels::{LabelMapping, Taxonomy};
    let taxonomy: Taxonomy = manifest.taxonomy.parse().ok()?;
    let groupings = if taxonomy == Taxonomy::CompositeThree { vec![Taxonomy::Casme2Three, Taxonomy::SammThree] } else { vec![taxonomy] };
    groupings
        .into_iter()
        .find_map(|t| match t.map(emotion) {
            Ok(LabelMapping::Class(i)) => t.classes().get(i).map(|c| c.to_string()),
            _ => None,
        })
        .filter(|class| manifest.classes.contains(class))
}

/// RFC 3339 UTC time of a Unix time in milliseconds.
fn utc(unix_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{unix_ms} ms"))
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks, which otherwise only fire when the faulty subcommand is run.
    #[test]
    fn the_command_line_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
