//! Model push end to end on loopback: a device (store, listener, an event log being written)
//! and clients that behave, break, stall, lie or race. Every test ends by checking that the
//! device, reopened from its disk, has a complete model that verifies, and that every event
//! written meanwhile reads back.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mer_shared::bundle::SecretKey;
use mer_shared::classifier::Classifier;
use mer_shared::event::{Event, EventSource, LatencyBreakdown};
use mer_shared::manifest::InputProvenance;
use mer_shared::push::client::{Client, push};
use mer_shared::push::frame::{self, read_frame, write_frame};
use mer_shared::push::{Action, CHUNK_BYTES, Health, MAX_FRAME_BYTES, Request, Response, SignedCommand};
use mer_shared::{Error, Result};

use crate::event_log::{EventLog, FsyncPolicy, LogConfig, read_events};
use crate::model_store::{ModelStore, State, Step};
use crate::push_server::{ModelSwitch, PushServer, PushSettings};
use crate::test_bundles::{bundle, bundle_with, sha, site_key};

const TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct RecordingSwitch {
    versions: Mutex<Vec<String>>,
}

impl ModelSwitch for RecordingSwitch {
    fn switch(&self, classifier: Classifier) {
        self.versions.lock().unwrap().push(classifier.manifest().version.clone());
    }
    fn health(&self) -> Health {
        Health { frames: 7, ..Health::default() }
    }
}

struct TestDevice {
    dir: tempfile::TempDir,
    address: String,
    switch: Arc<RecordingSwitch>,
    stop_logging: Arc<AtomicBool>,
    logger: JoinHandle<u64>,
}

fn settings(dir: &Path, timeout_s: f64) -> PushSettings {
    PushSettings {
        listen: "127.0.0.1:0".into(),
        store: dir.join("models"),
        keep: 2,
        max_bundle_mb: 16,
        timeout_s,
        session_s: 3600.0,
        max_sessions: 8,
        name: Some("room-1".into()),
    }
}

/// A device running `v0`, listening on a free loopback port, with its classifier logging an
/// event every few milliseconds.
fn device(timeout_s: f64) -> TestDevice {
    device_with(|s| s.timeout_s = timeout_s)
}

/// [`device`] with settings changed from those of [`settings`].
fn device_with(change: impl FnOnce(&mut PushSettings)) -> TestDevice {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path(), 5.0);
    change(&mut settings);
    let trusted = vec![site_key().public()];
    let mut store = ModelStore::open(&settings.store, trusted.clone(), settings.keep, 1).unwrap();
    store.adopt(&bundle("v0", &site_key())).unwrap();
    let switch = Arc::new(RecordingSwitch::default());
    let server = PushServer::start(&settings, store, trusted, switch.clone()).unwrap();
    let stop_logging = Arc::new(AtomicBool::new(false));
    let log_dir = dir.path().join("events");
    let stop = stop_logging.clone();
    let logger = std::thread::spawn(move || {
        let (mut log, _) = EventLog::open(LogConfig { dir: log_dir, max_segment_bytes: 4096, fsync: FsyncPolicy::Always }).unwrap();
        let mut written = 0;
        while !stop.load(Ordering::Relaxed) {
            log.append(&event(written)).unwrap();
            written += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        written
    });
    TestDevice { address: server.address().to_string(), dir, switch, stop_logging, logger }
}

fn event(i: u64) -> Event {
    Event {
        wall_time_ms: i as i64,
        onset_s: i as f64,
        apex_s: i as f64 + 0.1,
        offset_s: i as f64 + 0.2,
        source: EventSource::Spotted,
        label: "negative".into(),
        classes: vec!["negative".into(), "positive".into()],
        probabilities: vec![0.7, 0.3],
        model_version: "v0".into(),
        latency: LatencyBreakdown::default(),
        foreign_inputs: false,
    }
}

impl TestDevice {
    /// Stops the logger and checks the device as a restart would find it: the model the state
    /// names verifies, and every event written is in the log. Returns the state and the
    /// version that would run.
    fn finish(self) -> (State, String) {
        self.stop_logging.store(true, Ordering::Relaxed);
        let written = self.logger.join().unwrap();
        let (events, problems) = read_events(&self.dir.path().join("events")).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(events.len() as u64, written);
        assert!(events.iter().enumerate().all(|(i, e)| e.wall_time_ms == i as i64));
        let mut store = ModelStore::open(&self.dir.path().join("models"), vec![site_key().public()], 2, 1).unwrap();
        let active = store.load_active().unwrap().expect("a model that verifies");
        assert_eq!(store.state().active.as_deref(), Some(active.info.sha256.as_str()));
        (store.state().clone(), active.info.version)
    }

    fn staging_files(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("models/staging")).unwrap().count()
    }

    fn switched(&self) -> Vec<String> {
        self.switch.versions.lock().unwrap().clone()
    }
}

/// A session driven frame by frame: (stream, nonce).
fn raw_session(address: &str) -> (TcpStream, [u8; 32]) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let Response::Welcome { nonce, .. } = call(&mut stream, &Request::Hello { protocol: mer_shared::push::PROTOCOL }) else { panic!() };
    (stream, nonce)
}

fn call(stream: &mut TcpStream, request: &Request) -> Response {
    write_frame(stream, request).unwrap();
    read_frame(stream, MAX_FRAME_BYTES).unwrap()
}

fn refusal(response: Response) -> String {
    match response {
        Response::Refused { reason, .. } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn push_to(device: &TestDevice, bytes: &[u8]) -> Result<mer_shared::push::client::Pushed> {
    push(&device.address, bytes, &site_key(), TIMEOUT, |_, _| {})
}

#[test]
fn a_push_activates_and_rollback_goes_back() {
    let device = device(5.0);
    let v1 = bundle("v1", &site_key());
    let pushed = push_to(&device, &v1).unwrap();
    assert_eq!((pushed.device.as_str(), pushed.connections), ("room-1", 1));
    let status = pushed.status;
    assert_eq!(status.active.as_ref().unwrap().version, "v1");
    assert_eq!(status.active.as_ref().unwrap().bytes, v1.len() as u64);
    assert_eq!(status.previous.iter().map(|m| m.version.as_str()).collect::<Vec<_>>(), ["v0"]);
    assert_eq!(status.health.frames, 7);

    // The same bundle again: nothing to send, nothing changes.
    let again = push_to(&device, &v1).unwrap();
    assert_eq!(again.status.previous.len(), 1);

    let mut client = Client::connect(&device.address, TIMEOUT).unwrap();
    let back = client.rollback(&site_key()).unwrap();
    assert_eq!(back.active.unwrap().version, "v0");
    assert!(back.previous.is_empty());
    let e = client.rollback(&site_key()).unwrap_err().to_string();
    assert!(e.contains("no earlier model"), "{e}");
    assert_eq!(device.switched(), ["v1", "v0"]);
    assert_eq!(device.finish().1, "v0");
}

#[test]
fn only_the_newest_earlier_models_are_kept() {
    let device = device(5.0);
    for v in ["v1", "v2", "v3"] {
        push_to(&device, &bundle(v, &site_key())).unwrap();
    }
    let status = Client::connect(&device.address, TIMEOUT).unwrap().status().unwrap();
    assert_eq!(status.previous.iter().map(|m| m.version.as_str()).collect::<Vec<_>>(), ["v2", "v1"]);
    let kept = std::fs::read_dir(device.dir.path().join("models"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "merb"))
        .count();
    assert_eq!(kept, 3);
    assert_eq!(device.finish().1, "v3");
}

#[test]
fn an_interrupted_transfer_resumes_from_the_last_acknowledged_offset() {
    let device = device(5.0);
    let v1 = bundle("v1", &site_key());
    let (mut stream, _) = raw_session(&device.address);
    assert_eq!(call(&mut stream, &Request::Upload { sha256: sha(&v1), size: v1.len() as u64 }), Response::UploadFrom { offset: 0 });
    for i in 0..3 {
        let data = v1[i * CHUNK_BYTES..(i + 1) * CHUNK_BYTES].to_vec();
        let offset = (i * CHUNK_BYTES) as u64;
        assert_eq!(call(&mut stream, &Request::Chunk { offset, data }), Response::Ack { offset: offset + CHUNK_BYTES as u64 });
    }
    // Half of the fourth chunk, then the connection drops.
    let mut frame = mer_shared::push::frame::encode(&Request::Chunk {
        offset: 3 * CHUNK_BYTES as u64,
        data: v1[3 * CHUNK_BYTES..4 * CHUNK_BYTES].to_vec(),
    });
    frame.truncate(frame.len() / 2);
    std::io::Write::write_all(&mut stream, &frame).unwrap();
    drop(stream);
    assert_eq!(device.active_version(), "v0");

    let mut first = None;
    let pushed = push(&device.address, &v1, &site_key(), TIMEOUT, |offset, _| {
        first.get_or_insert(offset);
    })
    .unwrap();
    assert_eq!(first, Some(3 * CHUNK_BYTES as u64), "the upload resumes after the three acknowledged chunks");
    assert_eq!(pushed.status.active.unwrap().version, "v1");
    assert_eq!(device.staging_files(), 0);
    assert_eq!(device.finish().1, "v1");
}

impl TestDevice {
    /// The active model's version, asked over the wire while the test goes on.
    fn active_version(&self) -> String {
        Client::connect(&self.address, TIMEOUT).unwrap().status().unwrap().active.unwrap().version
    }
}

#[test]
fn damaged_and_untrusted_bundles_are_refused_and_discarded() {
    let device = device(5.0);
    let v1 = bundle("v1", &site_key());
    let mut flipped = v1.clone();
    let at = v1.len() - 500; // inside the ONNX model
    flipped[at] ^= 0x10;

    // Damaged in transit: the bytes do not match the digest announced.
    let (mut stream, _) = raw_session(&device.address);
    assert!(matches!(call(&mut stream, &Request::Upload { sha256: sha(&v1), size: v1.len() as u64 }), Response::UploadFrom { offset: 0 }));
    let mut offset = 0;
    let last = loop {
        let end = (offset + CHUNK_BYTES).min(flipped.len());
        match call(&mut stream, &Request::Chunk { offset: offset as u64, data: flipped[offset..end].to_vec() }) {
            Response::Ack { offset: next } => offset = next as usize,
            other => break other,
        }
    };
    let reason = refusal(last);
    assert!(reason.contains("not the") && reason.contains("announced"), "{reason}");
    assert_eq!(device.staging_files(), 0);

    // Tampered with before sending: the digest matches but the signature does not.
    let e = push_to(&device, &flipped).unwrap_err().to_string();
    assert!(e.contains("signature does not match"), "{e}");
    // Signed by a key the device does not trust.
    let e = push_to(&device, &bundle("v1", &SecretKey::from_seed(&[9; 32]))).unwrap_err().to_string();
    assert!(e.contains("not among the trusted keys"), "{e}");
    // Not a bundle at all.
    let e = push_to(&device, b"MERB but not really").unwrap_err().to_string();
    assert!(e.contains("discarded"), "{e}");

    assert_eq!(device.staging_files(), 0);
    assert!(device.switched().is_empty());
    assert_eq!(device.finish().1, "v0");
}

#[test]
fn commands_need_a_trusted_key_and_the_current_nonce() {
    let device = device(5.0);
    let v1 = bundle("v1", &site_key());
    let digest = sha(&v1);
    let mut client = Client::connect(&device.address, TIMEOUT).unwrap();
    client.upload(&v1, |_, _| {}).unwrap();

    let (mut stream, nonce) = raw_session(&device.address);
    let stranger = SecretKey::from_seed(&[9; 32]);
    let reason = refusal(call(&mut stream, &Request::Command(SignedCommand::sign(Action::Activate { sha256: digest }, nonce, &stranger))));
    assert!(reason.contains("does not trust"), "{reason}");
    // The refusal used up the nonce: a correctly signed command with it is now stale.
    let reason =
        refusal(call(&mut stream, &Request::Command(SignedCommand::sign(Action::Activate { sha256: digest }, nonce, &site_key()))));
    assert!(reason.contains("stale nonce"), "{reason}");

    let (mut stream, nonce) = raw_session(&device.address);
    let command = Request::Command(SignedCommand::sign(Action::Activate { sha256: digest }, nonce, &site_key()));
    let Response::Done { status, .. } = call(&mut stream, &command) else { panic!("a signed command with the nonce is carried out") };
    assert_eq!(status.active.unwrap().version, "v1");
    // Rolled back by someone else, then the recorded activation replayed: in the same session
    // and in a new one.
    Client::connect(&device.address, TIMEOUT).unwrap().rollback(&site_key()).unwrap();
    assert!(refusal(call(&mut stream, &command)).contains("stale nonce"));
    let (mut other, _) = raw_session(&device.address);
    assert!(refusal(call(&mut other, &command)).contains("stale nonce"));
    // A command whose action was changed after signing.
    let Request::Command(mut changed) = command else { unreachable!() };
    let (mut third, nonce) = raw_session(&device.address);
    changed.nonce = nonce;
    changed.action = Action::Rollback;
    assert!(refusal(call(&mut third, &Request::Command(changed))).contains("does not match"));

    assert_eq!(device.switched(), ["v1", "v0"]);
    assert_eq!(device.finish().1, "v0");
}

#[test]
fn oversized_malformed_and_out_of_order_frames_are_refused() {
    let device = device(5.0);
    let send_raw = |bytes: &[u8]| {
        let mut stream = TcpStream::connect(&device.address).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        std::io::Write::write_all(&mut stream, bytes).unwrap();
        let reply = read_frame::<Response>(&mut stream, MAX_FRAME_BYTES);
        // Whatever it said, the device then hangs up.
        let closed = read_frame::<Response>(&mut stream, MAX_FRAME_BYTES);
        (reply, closed)
    };
    let (reply, closed) = send_raw(&(1u32 << 30).to_le_bytes());
    assert!(refusal(reply.unwrap()).contains("at most"));
    assert!(closed.is_err());
    let mut garbage = 12u32.to_le_bytes().to_vec();
    garbage.extend_from_slice(&[0xff; 12]);
    assert!(refusal(send_raw(&garbage).0.unwrap()).contains("not a valid message"));
    let status_first = mer_shared::push::frame::encode(&Request::Status);
    assert!(refusal(send_raw(&status_first).0.unwrap()).contains("starts with Hello"));

    let (mut stream, _) = raw_session(&device.address);
    let reason = refusal(call(&mut stream, &Request::Upload { sha256: [1; 32], size: 17 << 20 }));
    assert!(reason.contains("at most 16777216"), "{reason}");
    assert!(refusal(call(&mut stream, &Request::Chunk { offset: 0, data: vec![1] })).contains("no upload in progress"));
    call(&mut stream, &Request::Upload { sha256: [1; 32], size: 10 });
    assert!(refusal(call(&mut stream, &Request::Chunk { offset: 4, data: vec![1] })).contains("continues at 0"));
    assert!(refusal(call(&mut stream, &Request::Chunk { offset: 0, data: vec![1; 11] })).contains("does not fit"));
    assert!(refusal(call(&mut stream, &Request::Hello { protocol: 1 })).contains("already open"));

    // A client speaking another protocol version is told which one the device speaks.
    let mut old = TcpStream::connect(&device.address).unwrap();
    match call(&mut old, &Request::Hello { protocol: 99 }) {
        Response::Welcome { protocol, .. } => assert_eq!(protocol, mer_shared::push::PROTOCOL),
        other => panic!("{other:?}"),
    }

    push_to(&device, &bundle("v1", &site_key())).unwrap();
    assert_eq!(device.finish().1, "v1");
}

#[test]
fn a_stalled_client_is_cut_off_and_its_upload_taken_over() {
    let device = device(0.5);
    let v1 = bundle("v1", &site_key());
    let (mut stalled, _) = raw_session(&device.address);
    call(&mut stalled, &Request::Upload { sha256: sha(&v1), size: v1.len() as u64 });
    call(&mut stalled, &Request::Chunk { offset: 0, data: v1[..CHUNK_BYTES].to_vec() });
    // Meanwhile another client pushes the same bundle: busy until the stalled one is cut off.
    let started = Instant::now();
    let pushed = push_to(&device, &v1).unwrap();
    assert!(pushed.connections >= 2, "the second client waited for the first ({} connections)", pushed.connections);
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(pushed.status.active.unwrap().version, "v1");
    let cut = read_frame::<Response>(&mut stalled, MAX_FRAME_BYTES).unwrap_err();
    assert!(matches!(cut, mer_shared::push::frame::FrameError::Closed), "{cut:?}");
    assert_eq!(device.finish().1, "v1");
}

#[test]
fn pushes_at_once_leave_one_complete_model_active() {
    let device = device(5.0);
    let bundles = [bundle("v1", &site_key()), bundle("v2", &site_key()), bundle("v1", &site_key())];
    let outcomes: Vec<Result<_>> = std::thread::scope(|s| {
        let handles: Vec<_> = bundles.iter().map(|b| s.spawn(|| push_to(&device, b))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for outcome in &outcomes {
        assert!(outcome.is_ok(), "{outcomes:?}");
    }
    let (state, version) = device.finish();
    assert!(version == "v1" || version == "v2");
    assert_eq!(state.previous.len(), 2, "the other pushed model and v0 are kept: {state:?}");
}

#[test]
fn an_activation_cut_short_at_any_step_leaves_a_complete_model() {
    let key = site_key();
    let v1 = bundle("v1", &key);
    for (step, expected) in [(Step::BundleInPlace, "v0"), (Step::StateWritten, "v0"), (Step::StateRenamed, "v1")] {
        let dir = tempfile::tempdir().unwrap();
        let open = || ModelStore::open(dir.path(), vec![key.public()], 2, 1).unwrap();
        let mut store = open();
        store.adopt(&bundle("v0", &key)).unwrap();
        let staged = store.staging_path(&mer_shared::push::digest_hex(&sha(&v1)));
        std::fs::write(&staged, &v1).unwrap();
        store.verify(&sha(&v1)).unwrap();
        store.crash_at = Some(step);
        if step != Step::StateRenamed {
            assert!(store.activate(&sha(&v1)).is_err());
        } else {
            let _ = store.activate(&sha(&v1));
        }
        drop(store);

        let temporaries = || {
            let names = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name());
            names.filter(|n| mer_shared::atomic_file::is_temporary(n)).count()
        };
        assert_eq!(temporaries(), usize::from(step == Step::StateWritten), "cut after {step:?}");

        // The restart: leftovers go, the state names a model that verifies.
        let mut store = open();
        let running = store.load_active().unwrap().unwrap();
        assert_eq!(running.info.version, expected, "cut after {step:?}");
        assert_eq!(temporaries(), 0, "cut after {step:?}");
        // And the push can be finished: activation goes through now.
        store.activate(&sha(&v1)).unwrap();
        drop(store);
        assert_eq!(open().load_active().unwrap().unwrap().info.version, "v1");
    }
}

#[test]
fn a_store_that_cannot_verify_its_active_model_falls_back() {
    let key = site_key();
    let dir = tempfile::tempdir().unwrap();
    let mut store = ModelStore::open(dir.path(), vec![key.public()], 2, 1).unwrap();
    store.adopt(&bundle("v0", &key)).unwrap();
    let v1 = bundle("v1", &key);
    let active = store.adopt(&v1).unwrap();
    drop(store);
    // The active bundle damaged on disk (a bad sector, an operator's edit).
    let path = dir.path().join(format!("{}.merb", active.info.sha256));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let mut store = ModelStore::open(dir.path(), vec![key.public()], 2, 1).unwrap();
    assert_eq!(store.load_active().unwrap().unwrap().info.version, "v0");
    assert!(store.state().previous.is_empty());
    let _: Error = ModelStore::open(&dir.path().join("state.json"), vec![], 2, 1).err().unwrap();
}

/// A model trained on inputs the device cannot reproduce (the composite set's flow images, or a
/// manifest that does not say) is refused, naming the setting that would run it anyway.
#[test]
fn models_with_foreign_inputs_are_refused_unless_allowed() {
    let key = site_key();
    let dir = tempfile::tempdir().unwrap();
    let mut store = ModelStore::open(dir.path(), vec![key.public()], 2, 1).unwrap();
    store.adopt(&bundle("v0", &key)).unwrap();
    for (version, inputs) in [("png", InputProvenance::StstnetPng), ("old", InputProvenance::Unknown)] {
        let foreign = bundle_with(version, &key, |m| m.inputs = inputs);
        let err = store.adopt(&foreign).err().unwrap().to_string();
        assert!(err.contains("allow_foreign_inputs = true") && err.contains(version), "{err}");
        assert_eq!(store.load_active().unwrap().unwrap().info.version, "v0");
    }
    let mut lenient = ModelStore::open(dir.path(), vec![key.public()], 2, 1).unwrap().allowing_foreign_inputs(true);
    let foreign = bundle_with("png", &key, |m| m.inputs = InputProvenance::StstnetPng);
    assert_eq!(lenient.adopt(&foreign).unwrap().info.version, "png");
    let older = bundle_with("v-old", &key, |m| m.preprocessing_version = 1);
    assert!(lenient.adopt(&older).err().unwrap().to_string().contains("preprocessing version 1"));
}

#[test]
fn clients_beyond_the_session_limit_are_told_the_device_is_busy() {
    let device = device(5.0);
    let open: Vec<_> = (0..8).map(|_| raw_session(&device.address)).collect();
    // The ninth gets the management slot: status and commands, but no uploads.
    let mut manager = Client::connect(&device.address, TIMEOUT).unwrap();
    assert_eq!(manager.status().unwrap().device, "room-1");
    let e = manager.upload(&bundle("v1", &site_key()), |_, _| {}).unwrap_err();
    assert!(matches!(&e, Error::PushBusy(r) if r.contains("all 8 upload slots are in use")), "{e}");
    // The tenth is turned away.
    let e = Client::connect(&device.address, TIMEOUT).err().unwrap();
    assert!(matches!(&e, Error::PushBusy(r) if r.contains("all 8 upload slots and the management slot are in use")), "{e}");
    drop(open);
    drop(manager);
    // Once they are gone, pushes go through again (the client retries while the device is busy).
    assert_eq!(push_to(&device, &bundle("v1", &site_key())).unwrap().status.active.unwrap().version, "v1");
    assert_eq!(device.finish().1, "v1");
}

/// A client that starts a frame announcing 1000 bytes on `stream` and sends one byte of it
/// every `every`, far inside any per-read timeout, until the device hangs up; returns how long
/// that took.
fn trickle(mut stream: TcpStream, every: Duration) -> JoinHandle<Duration> {
    std::thread::spawn(move || {
        let started = Instant::now();
        stream.set_read_timeout(Some(every)).unwrap();
        let _ = std::io::Write::write_all(&mut stream, &1000u32.to_le_bytes());
        loop {
            let sent = std::io::Write::write_all(&mut stream, &[0]).is_ok();
            match std::io::Read::read(&mut stream, &mut [0u8; 1]) {
                Ok(0) => return started.elapsed(),
                Ok(_) => panic!("the device answered a request it has not had"),
                Err(e) if sent && matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                // Reset: the device closed with our bytes unread.
                Err(_) => return started.elapsed(),
            }
            assert!(started.elapsed() < Duration::from_secs(8), "a trickling client was never cut off");
        }
    })
}

fn assert_cut_near(cut: Duration, deadline: Duration) {
    let fair = cut >= deadline.mul_f64(0.8) && cut < deadline + Duration::from_millis(1500);
    assert!(fair, "cut off after {cut:?}, the deadline is {deadline:?}");
}

#[test]
fn slow_clients_in_every_upload_slot_leave_status_and_commands_to_the_management_slot() {
    // Long enough that the slow sessions still hold their slots when the manager asks for an
    // upload, even on a loaded machine (the assertions below need them held).
    let timeout = Duration::from_secs(4);
    let device = device_with(|s| {
        s.timeout_s = timeout.as_secs_f64();
        s.max_sessions = 4;
    });
    push_to(&device, &bundle("v1", &site_key())).unwrap();
    // Four sessions holding every upload slot, and two connections still in their Hello, each
    // sending a byte every 100 ms.
    let every = Duration::from_millis(100);
    let slow: Vec<_> = (0..4).map(|_| trickle(raw_session(&device.address).0, every)).collect();
    let silent: Vec<_> = (0..2).map(|_| trickle(TcpStream::connect(&device.address).unwrap(), every)).collect();
    std::thread::sleep(Duration::from_millis(300));

    // What `mer devices` does: connect, Hello, Status. Answered at once, not when a slot frees.
    let asked = Instant::now();
    let mut manager = Client::connect(&device.address, TIMEOUT).unwrap();
    assert_eq!(manager.status().unwrap().active.unwrap().version, "v1");
    assert!(asked.elapsed() < timeout / 2, "status took {:?}", asked.elapsed());
    // The management slot serves one client, signed commands, and no uploads.
    let e = Client::connect(&device.address, TIMEOUT).err().unwrap();
    assert!(matches!(&e, Error::PushBusy(r) if r.contains("management slot")), "{e}");
    let e = manager.upload(&bundle("v2", &site_key()), |_, _| {}).unwrap_err();
    assert!(matches!(&e, Error::PushBusy(r) if r.contains("upload slots are in use")), "{e}");
    assert_eq!(manager.rollback(&site_key()).unwrap().active.unwrap().version, "v0");
    drop(manager);

    // However they trickle, every request (and every Hello) is cut off at its deadline.
    for handle in slow.into_iter().chain(silent) {
        assert_cut_near(handle.join().unwrap(), timeout);
    }
    assert_eq!(push_to(&device, &bundle("v2", &site_key())).unwrap().status.active.unwrap().version, "v2");
    assert_eq!(device.switched(), ["v1", "v0", "v2"]);
    assert_eq!(device.finish().1, "v2");
}

#[test]
fn a_trickled_request_is_cut_off_at_its_deadline_and_the_upload_resumes() {
    let device = device(1.0);
    let v1 = bundle("v1", &site_key());
    let (mut stream, _) = raw_session(&device.address);
    assert_eq!(call(&mut stream, &Request::Upload { sha256: sha(&v1), size: v1.len() as u64 }), Response::UploadFrom { offset: 0 });
    let data = v1[..CHUNK_BYTES].to_vec();
    assert_eq!(call(&mut stream, &Request::Chunk { offset: 0, data }), Response::Ack { offset: CHUNK_BYTES as u64 });
    // The next request comes a byte every tenth of the deadline: the deadline counts from the
    // last answer, not from the last byte.
    assert_cut_near(trickle(stream, Duration::from_millis(100)).join().unwrap(), Duration::from_secs(1));

    let mut first = None;
    push(&device.address, &v1, &site_key(), TIMEOUT, |offset, _| {
        first.get_or_insert(offset);
    })
    .unwrap();
    assert_eq!(first, Some(CHUNK_BYTES as u64), "the upload resumes after the acknowledged chunk");
    assert_eq!(device.finish().1, "v1");
}

#[test]
fn a_session_ends_after_session_s_and_its_upload_resumes_in_the_next() {
    let device = device_with(|s| s.session_s = 1.0);
    let v1 = bundle("v1", &site_key());
    let (mut stream, _) = raw_session(&device.address);
    let opened = Instant::now();
    call(&mut stream, &Request::Upload { sha256: sha(&v1), size: v1.len() as u64 });
    let first = Request::Chunk { offset: 0, data: v1[..CHUNK_BYTES].to_vec() };
    assert_eq!(call(&mut stream, &first), Response::Ack { offset: CHUNK_BYTES as u64 });
    // A client that keeps asking, each request prompt, still has its session closed in time.
    let closed = loop {
        let sent = write_frame(&mut stream, &Request::Status).is_ok();
        let answer = sent.then(|| read_frame::<Response>(&mut stream, MAX_FRAME_BYTES).ok()).flatten();
        match answer {
            Some(Response::Status(_)) => std::thread::sleep(Duration::from_millis(100)),
            Some(other) => panic!("{other:?}"),
            None => break opened.elapsed(),
        }
        assert!(opened.elapsed() < Duration::from_secs(5), "the session was never closed");
    };
    assert_cut_near(closed, Duration::from_secs(1));
    let (mut next, _) = raw_session(&device.address);
    let resumed = call(&mut next, &Request::Upload { sha256: sha(&v1), size: v1.len() as u64 });
    assert_eq!(resumed, Response::UploadFrom { offset: CHUNK_BYTES as u64 }, "the upload resumes in a new session");
    drop(next);
    assert_eq!(device.finish().1, "v0");
}

#[test]
fn a_connection_lost_before_the_activation_is_answered_is_retried() {
    let device = device(5.0);
    let v1 = bundle("v1", &site_key());
    // Everything the upload sends, then a few bytes of the activation: the connection breaks
    // inside the command (as when the device closes a session that reached its session_s).
    let mut upload = frame::encode(&Request::Hello { protocol: mer_shared::push::PROTOCOL }).len();
    upload += frame::encode(&Request::Upload { sha256: sha(&v1), size: v1.len() as u64 }).len();
    for (i, data) in v1.chunks(CHUNK_BYTES).enumerate() {
        upload += frame::encode(&Request::Chunk { offset: (i * CHUNK_BYTES) as u64, data: data.to_vec() }).len();
    }
    let relay = breaking_relay(device.address.clone(), upload + 10, 1);
    let pushed = push(&relay, &v1, &site_key(), TIMEOUT, |_, _| {}).unwrap();
    assert!(pushed.connections >= 2, "{} connections", pushed.connections);
    assert_eq!(pushed.status.active.unwrap().version, "v1");
    assert_eq!(device.switched(), ["v1"]);
    assert_eq!(device.finish().1, "v1");
}

#[test]
fn connections_that_never_say_hello_are_bounded_and_cut_off() {
    let device = device_with(|s| {
        s.timeout_s = 1.0;
        s.max_sessions = 2;
    });
    // Two per slot, the management slot included, may wait for their Hello at once.
    let started = Instant::now();
    let silent: Vec<_> = (0..6).map(|_| TcpStream::connect(&device.address).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(&device.address).unwrap();
    extra.set_read_timeout(Some(TIMEOUT)).unwrap();
    match read_frame::<Response>(&mut extra, MAX_FRAME_BYTES).unwrap() {
        Response::Busy { reason } => assert!(reason.contains("6 connections are already waiting to say Hello"), "{reason}"),
        other => panic!("{other:?}"),
    }
    for mut stream in silent {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        assert!(matches!(std::io::Read::read(&mut stream, &mut [0u8; 1]), Ok(0) | Err(_)));
    }
    assert_cut_near(started.elapsed(), Duration::from_secs(1));
    assert_eq!(device.active_version(), "v0");
    assert_eq!(device.finish().1, "v0");
}

/// A loopback relay to `target` that cuts each of the first `cuts` connections after
/// `bytes` bytes from the client: a network that breaks mid-transfer.
fn breaking_relay(target: String, bytes: usize, cuts: usize) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().flatten().enumerate() {
            let server = TcpStream::connect(&target).unwrap();
            let limit = if n < cuts { bytes } else { usize::MAX };
            let (mut from_client, mut to_server) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut from_server, mut to_client) = (server, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_server, &mut to_client);
            });
            std::thread::spawn(move || {
                let mut sent = 0;
                let mut buffer = [0u8; 8192];
                while let Ok(n) = std::io::Read::read(&mut from_client, &mut buffer) {
                    let n = n.min(limit - sent);
                    if n == 0 || std::io::Write::write_all(&mut to_server, &buffer[..n]).is_err() {
                        break;
                    }
                    sent += n;
                }
                let _ = to_server.shutdown(std::net::Shutdown::Both);
                let _ = from_client.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    address
}

#[test]
fn a_push_over_a_breaking_network_reconnects_and_resumes() {
    let device = device(5.0);
    let v1 = bundle("v1", &site_key());
    // Each of the first two connections dies after 1.5 chunks of bundle bytes.
    let relay = breaking_relay(device.address.clone(), CHUNK_BYTES * 3 / 2, 2);
    let mut offsets = Vec::new();
    let pushed = push(&relay, &v1, &site_key(), TIMEOUT, |offset, _| offsets.push(offset)).unwrap();
    assert_eq!(pushed.connections, 3);
    assert_eq!(pushed.status.active.unwrap().version, "v1");
    // A new connection reports again the offset the broken one could not finish: the upload
    // resumed there each time, after one more acknowledged chunk, never from 0.
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
    let resumed: Vec<u64> = offsets.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect();
    assert_eq!(resumed, [CHUNK_BYTES as u64, 2 * CHUNK_BYTES as u64], "{offsets:?}");
    assert_eq!(device.finish().1, "v1");
}
