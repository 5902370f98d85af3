//! The bad-input battery for `merd`: each case builds its own damaged, truncated, foreign or
//! hostile input, runs the binary as an operator would and checks the promise of
//! docs/RELIABILITY.md — no panic, no hang, a refusal that names the file or field, nothing
//! intact lost, nothing half-written left behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mer_device::event_log::{EventLog, FsyncPolicy, LogConfig};
use mer_shared::GrayImage;
use mer_shared::event::{Event, EventSource, LatencyBreakdown};

/// Longer than any case needs by far: reaching it means the command hung.
const HANG: Duration = Duration::from_secs(120);

/// Runs merd in `dir`, killing it (and failing the test) if it runs past [`HANG`].
fn merd(dir: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_merd"))
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("merd starts");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > HANG {
            let _ = child.kill();
            panic!("merd {args:?} hung for {HANG:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The checks every case shares; returns stdout.
fn expect(out: &Output, success: bool, dir: &Path, needles: &[&str]) -> String {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert_eq!(out.status.success(), success, "exit {:?}; stderr: {stderr}", out.status);
    for needle in needles {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}: {stderr}");
    }
    assert!(stderr.len() < 20_000, "the log is flooded: {} bytes of stderr", stderr.len());
    let leftovers: Vec<PathBuf> = walk(dir).into_iter().filter(|p| p.to_string_lossy().contains(".partial")).collect();
    assert!(leftovers.is_empty(), "half-written files left: {leftovers:?}");
    stdout
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn event(i: u32) -> Event {
    Event {
        wall_time_ms: 1_795_000_000_000 + 1000 * i as i64,
        onset_s: i as f64,
        apex_s: i as f64 + 0.08,
        offset_s: i as f64 + 0.2,
        source: EventSource::Spotted,
        label: "surprise".into(),
        classes: vec!["happiness".into(), "surprise".into()],
        probabilities: vec![0.3, 0.7],
        model_version: "m-1".into(),
        latency: LatencyBreakdown { spotting_ms: 1.0, preprocess_ms: 2.0, inference_ms: 3.0, total_ms: 6.0 },
        foreign_inputs: false,
        device: String::new(),
        session: String::new(),
        seq: 0,
    }
}

/// A log of `n` events in segments of at most `max_segment_bytes`; returns its directory.
fn event_log(dir: &Path, n: u32, max_segment_bytes: u64) -> PathBuf {
    let log_dir = dir.join("log");
    let (mut log, _) = EventLog::open(LogConfig { dir: log_dir.clone(), max_segment_bytes, fsync: FsyncPolicy::Never }).unwrap();
    (0..n).for_each(|i| {
        log.append(&event(i)).unwrap();
    });
    log_dir
}

/// Byte offsets of each record of a segment (after its 8-byte header).
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut at = 8;
    let mut offsets = Vec::new();
    while at + 8 <= bytes.len() {
        offsets.push(at);
        at += 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    offsets
}

/// The onset times of the events `merd events --json` printed (event i has onset i).
fn listed(stdout: &str) -> Vec<f64> {
    stdout.lines().map(|l| serde_json::from_str::<Event>(l).unwrap().onset_s).collect()
}

#[test]
fn damaged_event_logs_cost_only_the_damaged_records() {
    type Damage = fn(&mut Vec<u8>, &[usize]);
    let damages: [(&str, Damage); 5] = [
        ("a flipped payload byte", |b, r| b[r[4] + 12] ^= 0x40),
        ("a flipped CRC byte", |b, r| b[r[4] + 5] ^= 0x01),
        ("a length of zero", |b, r| b[r[4]..r[4] + 4].copy_from_slice(&0u32.to_le_bytes())),
        ("a length of 0xFFFFFFFF", |b, r| b[r[4]..r[4] + 4].copy_from_slice(&u32::MAX.to_le_bytes())),
        ("garbage inserted between records", |b, r| {
            let at = r[4];
            b.splice(at..at, [0x5Au8; 37]);
        }),
    ];
    for (what, damage) in damages {
        let dir = tempfile::tempdir().unwrap();
        let log = event_log(dir.path(), 9, 1 << 20);
        let segment = log.join("events-000001.log");
        let mut bytes = std::fs::read(&segment).unwrap();
        let records = record_offsets(&bytes);
        assert_eq!(records.len(), 9);
        damage(&mut bytes, &records);
        std::fs::write(&segment, &bytes).unwrap();

        let out = merd(dir.path(), &["events", "--log", s(&log), "--json"]);
        let stdout = expect(&out, false, dir.path(), &["events-000001.log", "--allow-damage"]);
        let expected: Vec<f64> =
            if what.starts_with("garbage") { (0..9).map(f64::from).collect() } else { [0, 1, 2, 3, 5, 6, 7, 8].map(f64::from).to_vec() };
        assert_eq!(listed(&stdout), expected, "{what}");
        let out = merd(dir.path(), &["events", "--log", s(&log), "--json", "--allow-damage"]);
        assert_eq!(listed(&expect(&out, true, dir.path(), &["damaged"])), expected, "{what}");
    }
}

#[test]
fn a_missing_or_foreign_segment_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = event_log(dir.path(), 12, 300);
    let mut segments: Vec<PathBuf> = walk(&log);
    segments.sort();
    assert!(segments.len() >= 4, "{segments:?}");
    std::fs::remove_file(&segments[1]).unwrap();
    let out = merd(dir.path(), &["events", "--log", s(&log), "--json"]);
    let name = segments[1].file_name().unwrap().to_str().unwrap();
    let stdout = expect(&out, false, dir.path(), &[name, "missing"]);
    assert!(listed(&stdout).len() >= 8, "{stdout}");

    std::fs::write(&segments[2], b"this is not an event segment at all").unwrap();
    let out = merd(dir.path(), &["events", "--log", s(&log), "--json"]);
    expect(&out, false, dir.path(), &[segments[2].file_name().unwrap().to_str().unwrap()]);
}

#[test]
fn truncated_and_foreign_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bundle = std::fs::read(models().join("skd-tstsan-synthetic.merb")).unwrap();
    let key = models().join("demo-key.pub");
    let input = d.join("input.npy");
    std::fs::write(&input, mer_shared::npy::encode(&[1, 38, 48, 48], &vec![0.5; 38 * 48 * 48])).unwrap();
    let mut flipped = bundle.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x10;
    let png = d.join("picture.png");
    mer_shared::image::save_gray_png(&GrayImage::filled(8, 8, 0.5), &png).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("cut.merb", bundle[..bundle.len() / 3].to_vec()),
        ("flipped.merb", flipped),
        ("empty.merb", Vec::new()),
        ("picture.merb", std::fs::read(&png).unwrap()),
    ];
    for (name, bytes) in cases {
        let path = d.join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = merd(d, &["classify", "--model", s(&path), "--pub", s(&key), "--input", s(&input)]);
        expect(&out, false, d, &[name]);
    }
    let good = d.join("good.merb");
    std::fs::write(&good, &bundle).unwrap();
    let npy = std::fs::read(&input).unwrap();
    for (name, bytes) in
        [("cut.npy", npy[..npy.len() / 2].to_vec()), ("foreign.npy", std::fs::read(&png).unwrap()), ("empty.npy", Vec::new())]
    {
        let path = d.join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = merd(d, &["classify", "--model", s(&good), "--pub", s(&key), "--input", s(&path)]);
        expect(&out, false, d, &[name]);
    }
    let out = merd(d, &["classify", "--model", s(&good), "--input", s(&input), "--threads", "0"]);
    expect(&out, false, d, &["--threads", "0 is not in 1..=256"]);
    let out = merd(d, &["status", "--socket", s(&d.join("absent/merd.sock"))]);
    expect(&out, false, d, &["absent/merd.sock"]);
}

/// A clip of numbered PNG frames, 200×180 with a texture that drifts.
fn clip(dir: &Path, frames: std::ops::RangeInclusive<i64>) {
    std::fs::create_dir_all(dir).unwrap();
    for n in frames {
        let shift = 0.15 * n as f32;
        let frame = GrayImage::from_fn(200, 180, |x, y| 0.5 + 0.3 * ((x as f32 - shift) * 0.13).sin() * (y as f32 * 0.09).cos());
        mer_shared::image::save_gray_png(&frame, &dir.join(format!("{n:06}.png"))).unwrap();
    }
}

/// A 200×180 JPEG cut to a third of its length.
fn cut_jpeg(path: &Path) {
    let g = image::GrayImage::from_fn(200, 180, |x, y| image::Luma([((x * 7 + y * 13) % 251) as u8]));
    let mut bytes = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(g).write_to(&mut bytes, image::ImageFormat::Jpeg).unwrap();
    let bytes = bytes.into_inner();
    std::fs::write(path, &bytes[..bytes.len() / 3]).unwrap();
}

#[test]
fn cut_frames_and_frames_of_another_size_are_refused_or_skipped_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let frames = d.join("clip");
    clip(&frames, 0..=10);
    cut_jpeg(&frames.join("000004.jpg"));
    std::fs::remove_file(frames.join("000004.png")).unwrap();
    let model = models().join("skd-tstsan-synthetic.merb");
    let key = models().join("demo-key.pub");
    let classify = |apex: &str| {
        merd(
            d,
            &[
                "classify-clip",
                "--model",
                s(&model),
                "--pub",
                s(&key),
                "--frames",
                s(&frames),
                "--onset",
                "0",
                "--apex",
                apex,
                "--offset",
                "10",
                "--roi",
                "10,10,150,150",
            ],
        )
    };
    expect(&classify("4"), false, d, &["000004.jpg", "cut off"]);
    mer_shared::image::save_gray_png(&GrayImage::filled(100, 90, 0.5), &frames.join("000005.png")).unwrap();
    expect(&classify("5"), false, d, &["apex frame 5 is 100×90", "one size"]);
    expect(&classify("6"), true, d, &[]);

    // The same folder replayed by the daemon: the two bad frames are skipped and named, the
    // run ends.
    let config = replay_config(d, "clip");
    expect(&merd(d, &["run", "--config", s(&config)]), true, d, &["000004.jpg", "000005.png", "2 unreadable frames", "9 frames"]);
}

/// `DIR/merd.toml` replaying `DIR/FRAMES` as fast as it decodes, through the default model.
fn replay_config(dir: &Path, frames: &str) -> PathBuf {
    let config = dir.join("merd.toml");
    let text = format!(
        "[source]\nkind = \"replay\"\nframes = \"{frames}\"\nfps = 100\nrealtime = false\n[face]\nroi = [10, 10, 150, 150]\n\
         [model]\npath = \"{}\"\npublic_keys = [\"{}\"]\n[log]\ndir = \"events\"\n",
        models().join("skd-tstsan-synthetic.merb").display(),
        models().join("demo-key.pub").display()
    );
    std::fs::write(&config, text).unwrap();
    config
}

#[test]
fn a_folder_of_broken_frames_is_reported_once_then_counted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let frames = d.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for n in 0..3000 {
        std::fs::write(frames.join(format!("{n:06}.jpg")), b"\xFF\xD8\xFF\xE0 not really a jpeg").unwrap();
    }
    let config = replay_config(d, "frames");
    let out = merd(d, &["run", "--config", s(&config)]);
    expect(&out, true, d, &["000000.jpg", "more like this since", "3000 unreadable frames"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.lines().count() < 20, "{stderr}");
}

#[test]
fn hostile_configurations_are_refused_before_anything_is_created() {
    let model = models().join("skd-tstsan-synthetic.merb");
    for (setting, needle) in [
        ("[source]\nkind = \"synthetic\"\nseconds = 5\nfps = 100\nwidth = 4294967296", "4294967296"),
        ("[source]\nkind = \"synthetic\"\nseconds = inf\nfps = 100", "seconds"),
        ("[source]\nkind = \"synthetic\"\nseconds = 5\nfps = nan", "fps"),
        ("[source]\nkind = \"synthetic\"\nseconds = 5\nfps = 100\n[buffer]\nmax_queued = 0", "buffer.max_queued"),
        ("[source]\nkind = \"synthetic\"\nseconds = 5\nfps = 100\n[buffer]\nseconds = 1e9", "buffer.seconds"),
        ("[source]\nkind = \"synthetic\"\nseconds = 5\nfps = 100\n[log]\ndir = \"e\"\nmax_segment_bytes = 0", "log.max_segment_bytes"),
        ("[source]\nkind = \"camera\"\ndevice = \"/dev/video0\"\nwidth = 4294967296\nheight = 480\nformat = \"grey\"", "4294967296"),
        (
            "[source]\nkind = \"camera\"\ndevice = \"/dev/video0\"\nwidth = 100000\nheight = 480\nformat = \"grey\"\nfps = 30",
            "camera width",
        ),
        ("[source]\nkind = \"synthetic\"\nseconds = 5\nfps = 100\n[model]\npath = \"m\"\nthreads = 0", "model.threads"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let sections = |name: &str| setting.contains(&format!("[{name}]"));
        let mut text = format!("{setting}\n[face]\nroi = [10, 10, 100, 100]\n");
        if !sections("model") {
            text += &format!("[model]\npath = \"{}\"\n", model.display());
        }
        if !sections("log") {
            text += "[log]\ndir = \"events\"\n";
        }
        let config = dir.path().join("merd.toml");
        std::fs::write(&config, text).unwrap();
        expect(&merd(dir.path(), &["run", "--config", s(&config)]), false, dir.path(), &["merd.toml", needle]);
        assert_eq!(walk(dir.path()), [config], "{needle}: a refused start creates nothing");
    }
}
