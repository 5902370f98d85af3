//! Model push against the real `merd` process: a transfer cut by SIGKILL resumes after the
//! restart, a pushed model takes over the running pipeline while capture goes on, a daemon
//! killed during a new model's probation comes back on the model before it, one killed after
//! the probation comes back with the new model and an intact log, and a model that fails on the
//! board returns to the one before by itself.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use mer_shared::bundle::SecretKey;
use mer_shared::push::channel::{self, DevicePublicKey};
use mer_shared::push::client::{Client, Credentials, Expect, push};
use mer_shared::push::{CHUNK_BYTES, MAX_FRAME_BYTES, Request, Response, authenticate};

#[path = "../src/test_bundles.rs"]
mod test_bundles;
use test_bundles::{bundle, models, sha, site_key};

const TIMEOUT: Duration = Duration::from_secs(30);

/// The version the default model's manifest gives.
fn default_version() -> String {
    let bundle = models().join("skd-tstsan-synthetic.merb");
    mer_shared::classifier::Classifier::load(&bundle, mer_shared::classifier::Trust::IntegrityOnly).unwrap().manifest().version.clone()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn merd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_merd")).args(args).output().expect("merd runs")
}

/// A daemon configuration in `dir`, with `push_extra` lines added to its `[push]` section.
fn write_config(dir: &Path, push_extra: &str) -> PathBuf {
    let config = dir.join("merd.toml");
    let text = format!(
        r#"
[source]
kind = "synthetic"
fps = 100
width = 320
height = 240
seconds = 600
realtime = true
[face]
roi = [115, 68, 89, 102]
[model]
path = "{}"
public_keys = ["{}"]
[log]
dir = "events"
[control]
socket = "merd.sock"
[push]
listen = "127.0.0.1:0"
store = "models"
timeout_s = 2.0
name = "bench-device"
{push_extra}
"#,
        s(&models().join("skd-tstsan-synthetic.merb")),
        s(&models().join("demo-key.pub")),
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// The device key `merd key` reports for this configuration (made by the first call).
fn device_key(config: &Path) -> DevicePublicKey {
    let out = merd(&["key", "--config", s(config)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let public = text.lines().find_map(|l| l.strip_prefix("public key  ")).unwrap_or_else(|| panic!("{text}"));
    DevicePublicKey::from_hex(public).unwrap()
}

/// A running daemon, its push address, and its stderr lines as they come.
struct Daemon {
    child: Child,
    address: String,
    stderr: Receiver<String>,
}

fn enrolled(key: &DevicePublicKey) -> Credentials<'static> {
    static SITE: std::sync::OnceLock<SecretKey> = std::sync::OnceLock::new();
    Credentials { key: SITE.get_or_init(site_key), expect: Expect::Key(*key) }
}

fn start(config: &Path) -> Daemon {
    let mut child = Command::new(env!("CARGO_BIN_EXE_merd"))
        .args(["run", "--config", s(config)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Some((_, address)) = line.split_once("listening for model pushes on ") {
            return Daemon { child, address: address.to_string(), stderr: rx };
        }
        seen.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("merd did not start listening for pushes: {seen:?}");
}

impl Daemon {
    fn kill(mut self) -> Vec<String> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.stderr.try_iter().collect()
    }
}

fn status(dir: &Path) -> serde_json::Value {
    let out = merd(&["status", "--socket", s(&dir.join("merd.sock"))]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn pushes_reach_a_running_daemon_and_survive_it_being_killed() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "probation_s = 3.0\nprobation_windows = 2\nmax_window_ms = 10000");
    let v1 = bundle("v1", &site_key());

    // The device key exists before the first start (an installer reads it to enrol the device)
    // and stays the same across restarts.
    let key = device_key(&config);

    // Three chunks of v1 arrive, then the daemon is killed mid-transfer.
    let daemon = start(&config);
    let stream = TcpStream::connect(&daemon.address).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (mut channel, seen) = channel::connect(&mut &stream, &mut &stream).unwrap();
    assert_eq!(seen, key);
    let proof = authenticate(channel.handshake_hash(), &site_key());
    let mut call = |request: &Request| {
        channel.send(&mut &stream, request).unwrap();
        channel.receive::<Response>(&mut &stream, MAX_FRAME_BYTES).unwrap()
    };
    assert!(matches!(call(&proof), Response::Welcome { .. }));
    assert_eq!(call(&Request::Upload { sha256: sha(&v1), size: v1.len() as u64 }), Response::UploadFrom { offset: 0 });
    for i in 0..3 {
        let offset = (i * CHUNK_BYTES) as u64;
        assert!(matches!(
            call(&Request::Chunk { offset, data: v1[i * CHUNK_BYTES..(i + 1) * CHUNK_BYTES].to_vec() }),
            Response::Ack { .. }
        ));
    }
    daemon.kill();

    // After the restart the default model runs, and the push resumes where it stopped.
    let daemon = start(&config);
    wait_for("frames", || status(dir.path())["frames"].as_u64().unwrap_or(0) > 50);
    assert_eq!(status(dir.path())["model_version"], default_version().as_str());
    let mut first = None;
    let pushed = push(&daemon.address, &v1, enrolled(&key), TIMEOUT, |offset, _| {
        first.get_or_insert(offset);
    })
    .unwrap();
    assert_eq!(first, Some(3 * CHUNK_BYTES as u64));
    assert_eq!((pushed.device.as_str(), pushed.status.active.unwrap().version.as_str()), ("bench-device", "v1"));

    // Killed while v1 is on probation: it comes back on the default model, the last that passed.
    daemon.kill();
    let daemon = start(&config);
    wait_for("frames", || status(dir.path())["frames"].as_u64().unwrap_or(0) > 10);
    assert_eq!(status(dir.path())["model_version"], default_version().as_str());
    let st = Client::connect(&daemon.address, enrolled(&key), TIMEOUT).unwrap().status().unwrap();
    let probation = st.probation.unwrap();
    assert!(probation.reason.contains("stopped before the probation was over"), "{probation:?}");

    // Pushed again (the bundle is still on the device): the daemon asks for windows itself, and
    // v1 passes its probation.
    let pushed = push(&daemon.address, &v1, enrolled(&key), TIMEOUT, |_, _| {}).unwrap();
    assert_eq!(pushed.status.active.unwrap().version, "v1");
    wait_for("v1 to pass its probation", || status(dir.path())["probation"]["state"] == "Passed");
    assert_eq!(status(dir.path())["probation"]["version"], "v1");

    // The pipeline changed model while capture went on; a triggered window is classified by v1.
    // (Whether a frame was dropped meanwhile depends on the machine's load, not on the push:
    // capture keeping pace is measured by scripts/bench-device.sh, docs/BENCHMARKS.md.)
    let frames_at_push = status(dir.path())["frames"].as_u64().unwrap();
    assert!(merd(&["trigger", "--socket", s(&dir.path().join("merd.sock"))]).status.success());
    wait_for("an event from v1", || {
        let st = status(dir.path());
        st["last_events"].as_array().unwrap().iter().any(|e| e["model_version"] == "v1")
    });
    wait_for("more frames", || status(dir.path())["frames"].as_u64().unwrap() > frames_at_push + 100);
    let after = status(dir.path());
    assert_eq!(after["model_version"], "v1");
    let health = Client::connect(&daemon.address, enrolled(&key), TIMEOUT).unwrap().status().unwrap().health;
    assert!(health.frames > frames_at_push && health.events >= 1, "{health:?}");

    // Killed after the probation: it comes back running v1, with v0 to roll back to.
    daemon.kill();
    let daemon = start(&config);
    wait_for("frames", || status(dir.path())["frames"].as_u64().unwrap_or(0) > 10);
    assert_eq!(status(dir.path())["model_version"], "v1");
    let back = Client::connect(&daemon.address, enrolled(&key), TIMEOUT).unwrap().rollback(&site_key()).unwrap();
    assert_eq!(back.active.unwrap().version, default_version());
    assert_eq!(status(dir.path())["model_version"], default_version().as_str());
    let lines = daemon.kill();
    assert!(lines.iter().all(|l| !l.contains("panicked")), "{lines:?}");

    // Every complete event written across the three runs reads back, v1's among them.
    let out = merd(&["events", "--log", s(&dir.path().join("events")), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(events.iter().any(|e| e["model_version"] == "v1"), "{events:?}");
}

#[test]
fn a_model_that_fails_on_the_board_returns_to_the_one_before_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    // No window on this machine takes under a millisecond: every new model fails here, at its
    // first window (asked for after 30 / (9 + 1) = 3 s), long before its probation would end
    // even on a loaded machine.
    let config = write_config(dir.path(), "probation_s = 30.0\nprobation_windows = 9\nmax_window_ms = 1");
    let key = device_key(&config);
    let daemon = start(&config);
    wait_for("frames", || status(dir.path())["frames"].as_u64().unwrap_or(0) > 10);
    let pushed = push(&daemon.address, &bundle("v1", &site_key()), enrolled(&key), TIMEOUT, |_, _| {}).unwrap();
    let activated = Instant::now();
    assert_eq!(pushed.status.active.unwrap().version, "v1");
    wait_for("v1 to fail its probation", || status(dir.path())["probation"]["state"] == "Failed");
    assert!(activated.elapsed() < Duration::from_secs(30), "returned within probation_s ({:?})", activated.elapsed());
    let st = status(dir.path());
    assert_eq!(st["model_version"], default_version().as_str());
    let reason = st["probation"]["reason"].as_str().unwrap();
    assert!(reason.contains("max_window_ms = 1"), "{reason}");
    let devices = Client::connect(&daemon.address, enrolled(&key), TIMEOUT).unwrap().status().unwrap();
    assert_eq!(devices.active.unwrap().version, default_version());
    let lines = daemon.kill();
    assert!(lines.iter().any(|l| l.contains("failed its probation")), "{lines:?}");
}
