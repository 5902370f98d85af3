//! `merd classify`, `merd classify-clip` and `merd events` as an operator runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mer_device::event_log::{EventLog, FsyncPolicy, LogConfig};
use mer_shared::bundle::{SecretKey, read_public_key, write_public_key};
use mer_shared::classifier::{Classification, Classifier, Trust};
use mer_shared::event::{Event, EventSource, LatencyBreakdown};
use mer_shared::manifest::Probe;

fn merd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_merd")).args(args).output().expect("merd runs")
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "merd failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn err(out: &Output) -> String {
    assert!(!out.status.success(), "merd should have failed: {}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "merd panicked: {stderr}");
    stderr
}

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn classify_prints_the_classifier_s_json_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = models().join("skd-tstsan-synthetic.merb");
    let key = models().join("demo-key.pub");
    let classifier = Classifier::load(&bundle, Trust::Keys(&[read_public_key(&key).unwrap()])).unwrap();
    let shape = classifier.manifest().input_shape();
    let input = Probe::input(5, 2, shape);
    let npy = dir.path().join("two.npy");
    std::fs::write(&npy, mer_shared::npy::encode(&[2, shape[0], shape[1], shape[2]], &input)).unwrap();

    let printed: Classification =
        serde_json::from_str(&ok(&merd(&["classify", "--model", s(&bundle), "--input", s(&npy), "--pub", s(&key)]))).unwrap();
    assert_eq!(printed, classifier.classify(&input, 2).unwrap());

    let other = dir.path().join("other.pub");
    write_public_key(&other, &SecretKey::from_seed(&[3; 32]).public()).unwrap();
    let e = err(&merd(&["classify", "--model", s(&bundle), "--input", s(&npy), "--pub", s(&other)]));
    assert!(e.contains("not among the trusted keys"), "{e}");
    let wrong = dir.path().join("wrong.npy");
    std::fs::write(&wrong, mer_shared::npy::encode(&[1, 3, 48, 48], &vec![0.0; 3 * 48 * 48])).unwrap();
    let e = err(&merd(&["classify", "--model", s(&bundle), "--input", s(&wrong)]));
    assert!(e.contains("[1, 3, 48, 48]"), "{e}");
}

fn event(i: u32) -> Event {
    Event {
        wall_time_ms: 1_795_000_000_000 + 1000 * i as i64,
        onset_s: 10.0 * i as f64,
        apex_s: 10.0 * i as f64 + 0.08,
        offset_s: 10.0 * i as f64 + 0.2,
        source: EventSource::Spotted,
        label: "surprise".into(),
        classes: vec!["happiness".into(), "surprise".into()],
        probabilities: vec![0.3, 0.7],
        model_version: "skd-tstsan-synthetic-1".into(),
        latency: LatencyBreakdown { spotting_ms: 300.0, preprocess_ms: 20.0, inference_ms: 30.0, total_ms: 55.0 },
        // Every third event comes from a model trained on inputs the device cannot reproduce.
        foreign_inputs: i % 3 == 2,
        device: String::new(),
        session: String::new(),
        seq: 0,
    }
}

#[test]
fn events_exports_every_complete_record() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let (mut log, _) = EventLog::open(LogConfig { dir: log_dir.clone(), max_segment_bytes: 300, fsync: FsyncPolicy::Never }).unwrap();
    (0..5).for_each(|i| {
        log.append(&event(i)).unwrap();
    });
    drop(log);

    let json = ok(&merd(&["events", "--log", s(&log_dir), "--json"]));
    let read: Vec<Event> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // As recorded: numbered 1, 2, 3, … in order.
    assert_eq!(read, (0..5).map(|i| Event { seq: i as u64 + 1, ..event(i) }).collect::<Vec<_>>());
    let table = ok(&merd(&["events", "--log", s(&log_dir)]));
    assert_eq!(table.lines().count(), 5);
    assert!(table.starts_with("2026-11-18T11:06:40") && table.contains("surprise") && table.contains("p 0.70"), "{table}");
    let marked: Vec<bool> = table.lines().map(|l| l.ends_with("(model trained on foreign inputs)")).collect();
    assert_eq!(marked, [false, false, true, false, false], "{table}");

    // A torn tail is reported, the records before it still come out, and the exit status says
    // the log is damaged unless that is accepted.
    let last = std::fs::read_dir(&log_dir).unwrap().flatten().map(|e| e.path()).max().unwrap();
    let bytes = std::fs::read(&last).unwrap();
    std::fs::write(&last, &bytes[..bytes.len() - 3]).unwrap();
    let out = merd(&["events", "--log", s(&log_dir), "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 4);
    let e = err(&out);
    assert!(e.contains("cut short") && e.contains("--allow-damage"), "{e}");
    let out = merd(&["events", "--log", s(&log_dir), "--json", "--allow-damage"]);
    assert_eq!(ok(&out).lines().count(), 4);
    assert!(String::from_utf8_lossy(&out.stderr).contains("damaged: "));

    let e = err(&merd(&["events", "--log", s(&dir.path().join("missing"))]));
    assert!(e.contains("no event log here"), "{e}");

    // A reader that has gone (`merd events | head`) ends the listing quietly: SIGPIPE, no panic.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_merd"))
        .args(["events", "--log", s(&log_dir), "--json", "--allow-damage"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    const SIGPIPE: i32 = 13;
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&out.status), Some(SIGPIPE), "{:?}", out.status);
}

fn write_config(dir: &Path, model: &Path, extra: &str) -> PathBuf {
    write_config_with(dir, model, "seconds = 6\nrealtime = false", extra)
}

fn write_config_with(dir: &Path, model: &Path, source: &str, extra: &str) -> PathBuf {
    let config = dir.join("merd.toml");
    let text = format!(
        r#"
[source]
kind = "synthetic"
fps = 100
width = 320
height = 240
seed = 3
{source}
[face]
roi = [115, 68, 89, 102]
[model]
path = "{}"
[log]
dir = "events"
{extra}
"#,
        model.display()
    );
    std::fs::write(&config, text).unwrap();
    config
}

#[test]
fn run_logs_the_events_it_prints_and_refuses_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &models().join("skd-tstsan-synthetic.merb"), "");
    let out = merd(&["run", "--config", s(&config)]);
    let stdout = ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("600 frames") && stderr.contains("0 failures"), "{stderr}");
    let printed = stdout.lines().filter(|l| l.contains("Spotted")).count();
    assert!(printed >= 1, "{stdout}");
    let exported = ok(&merd(&["events", "--log", s(&dir.path().join("events")), "--json"]));
    assert_eq!(exported.lines().count(), printed);

    // A second run appends after the first run's records.
    ok(&merd(&["run", "--config", s(&config)]));
    let exported = ok(&merd(&["events", "--log", s(&dir.path().join("events")), "--json"]));
    assert_eq!(exported.lines().count(), 2 * printed);

    let missing = write_config(dir.path(), &dir.path().join("absent.merb"), "");
    assert!(err(&merd(&["run", "--config", s(&missing)])).contains("absent.merb"));
    let typo = write_config(dir.path(), &models().join("skd-tstsan-synthetic.merb"), "fsink = \"always\"");
    assert!(err(&merd(&["run", "--config", s(&typo)])).contains("fsink"));
    assert!(err(&merd(&["run", "--config", s(&dir.path().join("nope.toml"))])).contains("nope.toml"));
    // Nothing logged was lost to the failed starts.
    assert_eq!(ok(&merd(&["events", "--log", s(&dir.path().join("events")), "--json"])).lines().count(), 2 * printed);
}

/// A model whose manifest calibrates (temperature 2) and abstains below p 0.99: `merd classify`
/// prints the scaled probabilities, and `merd run` logs its windows as `uncertain` with the
/// probabilities kept, which `merd events` shows beside the class they favour.
#[test]
fn a_calibrated_model_labels_unlikely_windows_uncertain() {
    use mer_shared::manifest::{Calibration, UNCERTAIN};
    let dir = tempfile::tempdir().unwrap();
    let calibration = Calibration { temperature: 2.0, uncertain_below: 0.99, ece_before: 0.2, ece_after: 0.05, fitted_on: "test".into() };
    let model = dir.path().join("calibrated.merb");
    let site = test_bundles::site_key();
    std::fs::write(&model, test_bundles::bundle_with("calibrated-1", &site, |m| m.calibration = Some(calibration.clone()))).unwrap();

    let plain = Classifier::load(&models().join("skd-tstsan-synthetic.merb"), Trust::IntegrityOnly).unwrap();
    let shape = plain.manifest().input_shape();
    let input = Probe::input(5, 2, shape);
    let npy = dir.path().join("two.npy");
    std::fs::write(&npy, mer_shared::npy::encode(&[2, shape[0], shape[1], shape[2]], &input)).unwrap();
    let printed: Classification = serde_json::from_str(&ok(&merd(&["classify", "--model", s(&model), "--input", s(&npy)]))).unwrap();
    let unscaled = plain.classify(&input, 2).unwrap();
    assert_eq!(printed.logits, unscaled.logits, "the temperature leaves the logits alone");
    for (row, logits) in printed.probabilities.iter().zip(&unscaled.logits) {
        let halved: Vec<f32> = logits.iter().map(|l| l / 2.0).collect();
        assert_eq!(*row, mer_shared::classifier::softmax(&halved));
    }
    assert_eq!(printed.labels, [UNCERTAIN, UNCERTAIN]);
    assert!(unscaled.labels.iter().all(|l| l != UNCERTAIN), "{:?}", unscaled.labels);

    let config = write_config(dir.path(), &model, "");
    let stdout = ok(&merd(&["run", "--config", s(&config)]));
    let spotted: Vec<&str> = stdout.lines().filter(|l| l.contains("Spotted")).collect();
    assert!(!spotted.is_empty() && spotted.iter().all(|l| l.contains("uncertain (")), "{stdout}");
    let json = ok(&merd(&["events", "--log", s(&dir.path().join("events")), "--json"]));
    let events: Vec<Event> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), spotted.len());
    for e in &events {
        assert_eq!(e.label, UNCERTAIN);
        assert_eq!(e.probabilities.len(), e.classes.len());
        assert!((e.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-5 && e.most_probable().1 < 0.99, "{e:?}");
    }
    let table = ok(&merd(&["events", "--log", s(&dir.path().join("events"))]));
    let (class, p) = events[0].most_probable();
    assert!(table.lines().next().unwrap().contains(&format!("uncertain ({class} p {p:.2})")), "{table}");
}

/// What a directory holds, by name.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn run_checks_everything_before_it_creates_a_file() {
    let model = models().join("skd-tstsan-synthetic.merb");
    let key = models().join("demo-key.pub");
    let push = "[push]\nlisten = \"127.0.0.1:0\"\nstore = \"store\"\n";
    let keys = format!("public_keys = [\"{}\"]", key.display());
    for (source, extra, expect) in [
        ("kind = \"replay\"\nframes = \"absent\"", String::new(), "absent"),
        ("kind = \"synthetic\"\nseconds = 6\nwidth = 4294967296", String::new(), "4294967296"),
        ("kind = \"synthetic\"\nseconds = 6", "[spotting]\nthreshold_z = -1".to_string(), "threshold_z"),
        ("kind = \"synthetic\"\nseconds = 6", "[buffer]\nseconds = 0.05".to_string(), "buffer.seconds"),
        ("kind = \"synthetic\"\nseconds = 6", "[buffer]\nmax_queued = 0".to_string(), "max_queued"),
        ("kind = \"synthetic\"\nseconds = 6", push.to_string(), "public_keys"),
        ("kind = \"synthetic\"\nseconds = 6", format!("{push}[gpio]\nchip = \"/dev/absent-gpiochip\"\nled_line = 3"), "absent-gpiochip"),
        ("kind = \"synthetic\"\nseconds = 6", push.replace("127.0.0.1:0", "no-such-host.invalid:99999"), "push.listen"),
        ("kind = \"synthetic\"\nseconds = 6", format!("{push}[control]\nsocket = \"run/merd.sock\""), "run"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("merd.toml");
        let text = format!(
            "[source]\n{source}\nfps = 100\n[face]\nroi = [115, 68, 89, 102]\n[model]\npath = \"{}\"\n{}\n[log]\ndir = \"events\"\n{extra}\n",
            model.display(),
            if extra.contains("[push]") && !expect.contains("public_keys") { keys.as_str() } else { "" },
        );
        std::fs::write(&config, text).unwrap();
        let stderr = err(&merd(&["run", "--config", s(&config)]));
        assert!(stderr.contains(expect), "{expect}: {stderr}");
        assert_eq!(listing(dir.path()), ["merd.toml"], "{expect}: a refused start creates nothing");
    }
}

#[path = "../src/test_bundles.rs"]
mod test_bundles;

/// A clip of numbered frames as CASME II names them (img46.png …), 200×180 with texture that
/// drifts by a fraction of a pixel per frame.
fn clip(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for n in 46..=56 {
        let shift = 0.15 * (n - 46) as f32;
        let frame = mer_shared::GrayImage::from_fn(200, 180, |x, y| {
            let (x, y) = (x as f32 - shift, y as f32);
            0.5 + 0.3 * (x * 0.13).sin() * (y * 0.09).cos()
        });
        mer_shared::image::save_gray_png(&frame, &dir.join(format!("img{n}.png"))).unwrap();
    }
}

#[test]
fn classify_clip_preprocesses_a_window_and_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("EP01_01");
    clip(&frames);
    let bundle = models().join("skd-tstsan-synthetic.merb");
    let key = models().join("demo-key.pub");
    let run = |extra: &[&str]| {
        let mut args = vec!["classify-clip", "--model", s(&bundle), "--pub", s(&key), "--frames", s(&frames)];
        args.extend_from_slice(extra);
        merd(&args)
    };
    let window = ["--onset", "46", "--apex", "50", "--offset", "56", "--roi", "13,7,151,160"];
    let printed: serde_json::Value = serde_json::from_str(&ok(&run(&window))).unwrap();
    let hash = printed["input_sha256"].as_str().unwrap();
    assert!(hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()), "{printed}");
    assert_eq!(printed["face"], serde_json::json!([13, 7, 151, 160]));
    assert_eq!(printed["frames"], serde_json::json!({"onset": 46, "apex": 50, "offset": 56}));
    assert_eq!(printed["logits"][0].as_array().unwrap().len(), printed["classes"].as_array().unwrap().len());
    // The same window again gives the same input; another box another one.
    let again: serde_json::Value = serde_json::from_str(&ok(&run(&window))).unwrap();
    assert_eq!(again, printed);
    let other: serde_json::Value =
        serde_json::from_str(&ok(&run(&["--onset", "46", "--apex", "50", "--offset", "56", "--roi", "14,7,151,160"]))).unwrap();
    assert_ne!(other["input_sha256"], printed["input_sha256"]);

    for (args, needle) in [
        (["--onset", "50", "--apex", "47", "--offset", "56", "--roi", "0,0,100,100"], "out of order"),
        (["--onset", "46", "--apex", "50", "--offset", "99", "--roi", "0,0,100,100"], "no offset frame 99"),
        (["--onset", "40", "--apex", "50", "--offset", "56", "--roi", "0,0,100,100"], "frames numbered 46…56"),
        (["--onset", "46", "--apex", "50", "--offset", "56", "--roi", "150,0,100,100"], "does not lie inside the 200×180 frame"),
        (["--onset", "46", "--apex", "50", "--offset", "56", "--roi", "1,2,3"], "x,y,w,h"),
    ] {
        let e = err(&run(&args));
        assert!(e.contains(needle), "{args:?}: {e}");
    }
    // A model trained on inputs the device cannot reproduce is refused, unless allowed.
    let foreign = dir.path().join("foreign.merb");
    let site = test_bundles::site_key();
    std::fs::write(&foreign, test_bundles::bundle_with("png-1", &site, |m| m.inputs = mer_shared::manifest::InputProvenance::StstnetPng))
        .unwrap();
    let refuse = |extra: &[&str]| {
        let mut args = vec!["classify-clip", "--model", s(&foreign), "--frames", s(&frames)];
        args.extend_from_slice(&window);
        args.extend_from_slice(extra);
        merd(&args)
    };
    let e = err(&refuse(&[]));
    assert!(e.contains("ststnet-png") && e.contains("allow_foreign_inputs"), "{e}");
    let allowed = refuse(&["--allow-foreign-inputs"]);
    let printed_foreign: serde_json::Value = serde_json::from_str(&ok(&allowed)).unwrap();
    assert_eq!(printed_foreign["input_sha256"], printed["input_sha256"]);
    let stderr = String::from_utf8_lossy(&allowed.stderr);
    assert!(stderr.contains("WARN") && stderr.contains("marking every event"), "{stderr}");
}

#[test]
fn demo_prints_events_beside_the_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let m = models();
    let (model, key) = (m.join("skd-tstsan-synthetic.merb"), m.join("demo-key.pub"));
    let demo = |args: &[&str]| {
        let mut all = vec!["demo", "--out", s(&out), "--model", s(&model), "--pub", s(&key)];
        all.extend_from_slice(args);
        merd(&all)
    };
    let stdout = ok(&demo(&["--seconds", "8", "--seed", "2"]));
    assert!(stdout.contains("spotting (IoU >= 0.5)") && stdout.contains("frames"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("labels: ")), "the demo scores its labels: {stdout}");
    let exported = ok(&merd(&["events", "--log", s(&out.join("events")), "--json"]));
    let events = stdout.lines().filter(|l| l.contains(" s  frames ")).count();
    assert!(events >= 1 && exported.lines().count() == events, "{stdout}\n{exported}");

    // A bad argument is refused before the previous log is touched, and a rerun clears only
    // the demo's own segments.
    let foreign = out.join("events/notes.txt");
    std::fs::write(&foreign, "mine").unwrap();
    let segments = || std::fs::read_dir(out.join("events")).unwrap().count();
    let before = segments();
    let e = err(&demo(&["--fps", "0"]));
    assert!(e.contains("fps"), "{e}");
    assert_eq!(segments(), before, "nothing removed after a refused argument");
    ok(&demo(&["--seconds", "3", "--seed", "2"]));
    assert_eq!(std::fs::read_to_string(&foreign).unwrap(), "mine");

    // The real-data model reads composite flow images the device cannot make: refused, unless
    // allowed; its three classes group the scene's emotions as the composite set does.
    let composite = m.join("flow-ensemble-casme2.merb");
    let e = err(&merd(&["demo", "--out", s(&out), "--model", s(&composite), "--pub", s(&key), "--seconds", "3"]));
    assert!(e.contains("ststnet-png") && e.contains("allow_foreign_inputs"), "{e}");
    let stdout = ok(&merd(&[
        "demo",
        "--out",
        s(&out),
        "--model",
        s(&composite),
        "--pub",
        s(&key),
        "--seconds",
        "10",
        "--seed",
        "2",
        "--allow-foreign-inputs",
    ]));
    assert!(stdout.contains("disgust, the model's negative"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("labels: ") && l.contains("of 2 spotted")), "{stdout}");
}

#[test]
fn status_and_trigger_reach_a_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let model = models().join("skd-tstsan-synthetic.merb");
    let config = write_config_with(dir.path(), &model, "seconds = 6\nrealtime = true", "[control]\nsocket = \"merd.sock\"");
    let socket = dir.path().join("merd.sock");
    let daemon = Command::new(env!("CARGO_BIN_EXE_merd"))
        .args(["run", "--config", s(&config)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        let out = merd(&["status", "--socket", s(&socket)]);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if v["frames"].as_u64().unwrap_or(0) > 50 {
                break v;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no status from the daemon");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let version = Classifier::load(&model, Trust::IntegrityOnly).unwrap().manifest().version.clone();
    assert_eq!(status["model_version"], version.as_str());
    assert!(status["fps"].as_f64().unwrap() > 50.0, "{status}");
    assert!(status["log_dir"].as_str().unwrap().ends_with("events"), "{status}");
    assert!(status["log_files"].as_u64().unwrap() >= 1 && status["log_bytes"].is_u64(), "{status}");
    assert_eq!(ok(&merd(&["trigger", "--socket", s(&socket)])).trim(), r#"{"ok":true}"#);
    let out = daemon.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!socket.exists(), "the socket is removed on exit");
    let exported = ok(&merd(&["events", "--log", s(&dir.path().join("events")), "--json"]));
    assert!(exported.contains(r#""source":"triggered""#), "{exported}");
    assert!(err(&merd(&["status", "--socket", s(&socket)])).contains("merd.sock"));
}

/// Under systemd: READY once capturing, watchdog pings from the capture loop, STOPPING at the
/// end, all to the socket systemd names; `RUST_LOG=debug` shows each step of the pipeline.
#[test]
fn run_notifies_systemd_and_logs_its_steps_at_debug() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &models().join("skd-tstsan-synthetic.merb"), "");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    // Read as systemd does, while merd runs: a full socket would block its sends.
    socket.set_read_timeout(Some(std::time::Duration::from_millis(500))).unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        std::thread::spawn(move || {
            let (mut messages, mut buf) = (Vec::new(), [0u8; 4096]);
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) => messages.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    Err(_) if done.load(std::sync::atomic::Ordering::SeqCst) => return messages,
                    Err(_) => {}
                }
            }
        })
    };
    let out = Command::new(env!("CARGO_BIN_EXE_merd"))
        .args(["run", "--config", s(&config)])
        .env("NOTIFY_SOCKET", &socket_path)
        // A 0.2 s watchdog: a ping every 50 ms of the run.
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    ok(&out);
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let messages = reader.join().unwrap();
    assert!(messages.first().is_some_and(|m| m.contains("READY=1")), "{messages:?}");
    assert!(messages.last().is_some_and(|m| m.contains("STOPPING=1")), "{messages:?}");
    let pings = messages.iter().filter(|m| m.contains("WATCHDOG=1") && m.contains("STATUS=")).count();
    assert!(pings >= 2, "{messages:?}");

    let stderr = String::from_utf8_lossy(&out.stderr);
    for step in ["spotted frames", "queued for classification", "classified the window", "logged"] {
        assert!(stderr.contains(step), "RUST_LOG=debug lacks {step:?}: {stderr}");
    }
    // At the default level the steps are not shown, and without systemd nothing is sent.
    let quiet = Command::new(env!("CARGO_BIN_EXE_merd")).args(["run", "--config", s(&config)]).env_remove("RUST_LOG").output().unwrap();
    let stderr = String::from_utf8_lossy(&quiet.stderr);
    assert!(quiet.status.success() && !stderr.contains("classified the window") && stderr.contains("600 frames"), "{stderr}");
}
