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
use mer_shared::push::channel::{self, Channel, DevicePublicKey};
use mer_shared::push::client::{Client, Credentials, Expect, push};
use mer_shared::push::frame::{self, FrameError};
use mer_shared::push::{
    Action, CHUNK_BYTES, Health, MAX_FRAME_BYTES, Nonce, ProbationState, Request, Response, SignedCommand, authenticate,
};
use mer_shared::{Error, Result};

use crate::event_log::{EventLog, FsyncPolicy, LogConfig, read_events};
use crate::model_store::{ModelStore, State, Step};
use crate::push_server::{ModelSwitch, PushServer, PushSettings};
use crate::test_bundles::{bundle, bundle_with, sha, site_key};
use crate::test_relay::{Cut, breaking_relay};

const TIMEOUT: Duration = Duration::from_secs(20);

/// [`ModelStore::adopt`] of a bundle given as bytes, from a file outside the store.
fn adopt(store: &mut ModelStore, bytes: &[u8]) -> Result<crate::model_store::Verified> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    store.adopt(file.path())
}

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
    key: DevicePublicKey,
    server: PushServer,
    switch: Arc<RecordingSwitch>,
    stop_logging: Arc<AtomicBool>,
    logger: JoinHandle<u64>,
}

fn settings(dir: &Path, timeout_s: f64) -> PushSettings {
    PushSettings {
        listen: "127.0.0.1:0".into(),
        store: dir.join("models"),
        key: None,
        keep: 2,
        max_bundle_mb: 16,
        timeout_s,
        session_s: 3600.0,
        max_sessions: 8,
        name: Some("room-1".into()),
        // Probation has tests of its own below; here a push is final once activated.
        probation_s: 0.0,
        probation_windows: 3,
        max_window_ms: 2000.0,
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
    adopt(&mut store, &bundle("v0", &site_key())).unwrap();
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
    TestDevice { address: server.address().to_string(), key: server.device_key(), server, dir, switch, stop_logging, logger }
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
        device: String::new(),
        session: String::new(),
        seq: 0,
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

    /// What an enrolled host with the site key connects with.
    fn credentials(&self) -> Credentials<'static> {
        Credentials { key: site_key_ref(), expect: Expect::Key(self.key) }
    }

    /// The status once a probation that ended has been settled (on its own thread).
    fn settled(&self) -> mer_shared::push::DeviceStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let status = self.connect().unwrap().status().unwrap();
            if status.probation.as_ref().is_some_and(|p| p.state != ProbationState::Running) || Instant::now() > deadline {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn connect(&self) -> Result<Client> {
        Client::connect(&self.address, self.credentials(), TIMEOUT)
    }

    fn staging_files(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("models/staging")).unwrap().count()
    }

    fn switched(&self) -> Vec<String> {
        self.switch.versions.lock().unwrap().clone()
    }
}

fn site_key_ref() -> &'static SecretKey {
    static KEY: std::sync::OnceLock<SecretKey> = std::sync::OnceLock::new();
    KEY.get_or_init(site_key)
}

/// An open channel, not yet authenticated.
fn raw_channel(address: &str) -> (TcpStream, Channel) {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (channel, _) = channel::connect(&mut &stream, &mut &stream).unwrap();
    (stream, channel)
}

/// A session driven frame by frame.
struct RawSession {
    stream: TcpStream,
    channel: Channel,
    nonce: Nonce,
}

impl RawSession {
    /// Opened and authenticated with the site key.
    fn open(address: &str) -> RawSession {
        let (stream, channel) = raw_channel(address);
        let mut session = RawSession { stream, channel, nonce: [0; 32] };
        let proof = authenticate(session.channel.handshake_hash(), &site_key());
        let Response::Welcome { nonce, .. } = session.call(&proof) else { panic!("not welcomed") };
        session.nonce = nonce;
        session
    }

    fn call(&mut self, request: &Request) -> Response {
        self.send_bytes(&frame::encode(request)).unwrap();
        self.receive().unwrap()
    }

    fn send_bytes(&mut self, bytes: &[u8]) -> std::result::Result<(), FrameError> {
        self.channel.send_bytes(&mut &self.stream, bytes)
    }

    fn receive(&mut self) -> std::result::Result<Response, FrameError> {
        self.channel.receive(&mut &self.stream, MAX_FRAME_BYTES)
    }
}

fn refusal(response: Response) -> String {
    match response {
        Response::Refused { reason, .. } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn push_to(device: &TestDevice, bytes: &[u8]) -> Result<mer_shared::push::client::Pushed> {
    push(&device.address, bytes, device.credentials(), TIMEOUT, |_, _| {})
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

    let mut client = device.connect().unwrap();
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
    let status = device.connect().unwrap().status().unwrap();
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
    let mut stream = RawSession::open(&device.address);
    assert_eq!(stream.call(&Request::Upload { sha256: sha(&v1), size: v1.len() as u64 }), Response::UploadFrom { offset: 0 });
    for i in 0..3 {
        let data = v1[i * CHUNK_BYTES..(i + 1) * CHUNK_BYTES].to_vec();
        let offset = (i * CHUNK_BYTES) as u64;
        assert_eq!(stream.call(&Request::Chunk { offset, data }), Response::Ack { offset: offset + CHUNK_BYTES as u64 });
    }
    // Half of the fourth chunk, then the connection drops.
    let mut frame = mer_shared::push::frame::encode(&Request::Chunk {
        offset: 3 * CHUNK_BYTES as u64,
        data: v1[3 * CHUNK_BYTES..4 * CHUNK_BYTES].to_vec(),
    });
    frame.truncate(frame.len() / 2);
    stream.send_bytes(&frame).unwrap();
    drop(stream);
    assert_eq!(device.active_version(), "v0");

    let mut first = None;
    let pushed = push(&device.address, &v1, device.credentials(), TIMEOUT, |offset, _| {
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
        self.connect().unwrap().status().unwrap().active.unwrap().version
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
    let mut stream = RawSession::open(&device.address);
    assert!(matches!(stream.call(&Request::Upload { sha256: sha(&v1), size: v1.len() as u64 }), Response::UploadFrom { offset: 0 }));
    let mut offset = 0;
    let last = loop {
        let end = (offset + CHUNK_BYTES).min(flipped.len());
        match stream.call(&Request::Chunk { offset: offset as u64, data: flipped[offset..end].to_vec() }) {
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
    let mut client = device.connect().unwrap();
    client.upload(&v1, |_, _| {}).unwrap();

    let mut stream = RawSession::open(&device.address);
    let nonce = stream.nonce;
    let stranger = SecretKey::from_seed(&[9; 32]);
    let reason = refusal(stream.call(&Request::Command(SignedCommand::sign(Action::Activate { sha256: digest }, nonce, &stranger))));
    assert!(reason.contains("does not trust"), "{reason}");
    // The refusal used up the nonce: a correctly signed command with it is now stale.
    let reason = refusal(stream.call(&Request::Command(SignedCommand::sign(Action::Activate { sha256: digest }, nonce, &site_key()))));
    assert!(reason.contains("stale nonce"), "{reason}");

    let mut stream = RawSession::open(&device.address);
    let nonce = stream.nonce;
    let command = Request::Command(SignedCommand::sign(Action::Activate { sha256: digest }, nonce, &site_key()));
    let Response::Done { status, .. } = stream.call(&command) else { panic!("a signed command with the nonce is carried out") };
    assert_eq!(status.active.unwrap().version, "v1");
    // Rolled back by someone else, then the recorded activation replayed: in the same session
    // and in a new one.
    device.connect().unwrap().rollback(&site_key()).unwrap();
    assert!(refusal(stream.call(&command)).contains("stale nonce"));
    let mut other = RawSession::open(&device.address);
    assert!(refusal(other.call(&command)).contains("stale nonce"));
    // A command whose action was changed after signing.
    let Request::Command(mut changed) = command else { unreachable!() };
    let mut third = RawSession::open(&device.address);
    let nonce = third.nonce;
    changed.nonce = nonce;
    changed.action = Action::Rollback;
    assert!(refusal(third.call(&Request::Command(changed))).contains("does not match"));

    assert_eq!(device.switched(), ["v1", "v0"]);
    assert_eq!(device.finish().1, "v0");
}

#[test]
fn oversized_malformed_and_out_of_order_frames_are_refused() {
    let device = device(5.0);
    // Before the channel: an old client's Hello, a huge length, garbage. The device answers none
    // of them and hangs up.
    for bytes in [vec![2u8, 0, 0, 0, 0, 1], (1u32 << 30).to_le_bytes().to_vec(), vec![0xff; 40]] {
        let mut stream = TcpStream::connect(&device.address).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        std::io::Write::write_all(&mut stream, &bytes).unwrap();
        let mut answer = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
        assert!(answer.is_empty(), "{bytes:?} got {answer:?}");
    }
    // Inside the channel, before authenticating: only a refusal.
    let (stream, mut channel) = raw_channel(&device.address);
    channel.send(&mut &stream, &Request::Status).unwrap();
    let reply = channel.receive::<Response>(&mut &stream, MAX_FRAME_BYTES).unwrap();
    assert!(refusal(reply).contains("starts with Authenticate"));
    assert!(matches!(channel.receive::<Response>(&mut &stream, MAX_FRAME_BYTES), Err(FrameError::Closed)));

    // Inside an authenticated session: oversized and undecodable frames end it with a reason.
    let send_raw = |bytes: &[u8]| {
        let mut session = RawSession::open(&device.address);
        session.send_bytes(bytes).unwrap();
        let reply = session.receive();
        // Whatever it said, the device then hangs up.
        (reply, session.receive())
    };
    let (reply, closed) = send_raw(&(1u32 << 30).to_le_bytes());
    assert!(refusal(reply.unwrap()).contains("at most"));
    assert!(closed.is_err());
    let mut garbage = 12u32.to_le_bytes().to_vec();
    garbage.extend_from_slice(&[0xff; 12]);
    assert!(refusal(send_raw(&garbage).0.unwrap()).contains("not a valid message"));

    let mut stream = RawSession::open(&device.address);
    let reason = refusal(stream.call(&Request::Upload { sha256: [1; 32], size: 17 << 20 }));
    assert!(reason.contains("at most 16777216"), "{reason}");
    assert!(refusal(stream.call(&Request::Chunk { offset: 0, data: vec![1] })).contains("no upload in progress"));
    stream.call(&Request::Upload { sha256: [1; 32], size: 10 });
    assert!(refusal(stream.call(&Request::Chunk { offset: 4, data: vec![1] })).contains("continues at 0"));
    assert!(refusal(stream.call(&Request::Chunk { offset: 0, data: vec![1; 11] })).contains("does not fit"));
    let again = authenticate(stream.channel.handshake_hash(), &site_key());
    assert!(refusal(stream.call(&again)).contains("already authenticated"));

    push_to(&device, &bundle("v1", &site_key())).unwrap();
    assert_eq!(device.finish().1, "v1");
}

#[test]
fn only_an_authenticated_host_that_reached_the_enrolled_device_is_served() {
    let device = device(5.0);
    // A host key the device does not trust: refused, with no device data.
    let stranger = SecretKey::from_seed(&[9; 32]);
    let e = Client::connect(&device.address, Credentials { key: &stranger, expect: Expect::Key(device.key) }, TIMEOUT).err().unwrap();
    assert!(matches!(&e, Error::Untrusted(r) if r.contains("does not trust") && !r.contains("room-1")), "{e}");
    // An authentication signed for another session (a recorded one) is refused too.
    let (stream, mut channel) = raw_channel(&device.address);
    channel.send(&mut &stream, &authenticate(b"some other session", &site_key())).unwrap();
    let reason = refusal(channel.receive(&mut &stream, MAX_FRAME_BYTES).unwrap());
    assert!(reason.contains("does not match"), "{reason}");

    // A device whose key is not the enrolled one: the host stops before saying who it is.
    let other = mer_shared::push::channel::DeviceKey::generate().unwrap().public();
    let e = Client::connect(&device.address, Credentials { key: site_key_ref(), expect: Expect::Key(other) }, TIMEOUT).err().unwrap();
    assert!(matches!(&e, Error::Untrusted(r) if r.contains("not the key") && r.contains(&other.fingerprint())), "{e}");
    let pushed = push(
        &device.address,
        &bundle("v1", &site_key()),
        Credentials { key: site_key_ref(), expect: Expect::Key(other) },
        TIMEOUT,
        |_, _| {},
    );
    assert!(matches!(pushed, Err(Error::Untrusted(_))), "a wrong key is final, not retried");

    // Enrolment accepts any key and learns the device's.
    let client = Client::connect(&device.address, Credentials { key: site_key_ref(), expect: Expect::AnyKey }, TIMEOUT).unwrap();
    assert_eq!((client.device(), client.device_key()), ("room-1", device.key));
    assert_eq!(device.finish().1, "v0");
}

/// Sends through `stream` and keeps a copy of every byte sent.
struct Recorder<'a> {
    stream: &'a TcpStream,
    sent: Vec<u8>,
}

impl std::io::Write for Recorder<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.sent.extend_from_slice(bytes);
        std::io::Write::write_all(&mut self.stream, bytes).map(|()| bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_recorded_session_replayed_changes_nothing() {
    let device = device(5.0);
    let v1 = bundle("v1", &site_key());
    push_to(&device, &v1).unwrap();
    // A session that rolls back, recorded on the wire.
    let stream = TcpStream::connect(&device.address).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut recorder = Recorder { stream: &stream, sent: Vec::new() };
    let recorded = &mut recorder;
    let (mut channel, _) = channel::connect(&mut &stream, recorded).unwrap();
    channel.send(recorded, &authenticate(channel.handshake_hash(), &site_key())).unwrap();
    let Response::Welcome { nonce, .. } = channel.receive(&mut &stream, MAX_FRAME_BYTES).unwrap() else { panic!() };
    channel.send(recorded, &Request::Command(SignedCommand::sign(Action::Rollback, nonce, &site_key()))).unwrap();
    assert!(matches!(channel.receive(&mut &stream, MAX_FRAME_BYTES).unwrap(), Response::Done { .. }));
    let sent = std::mem::take(&mut recorder.sent);
    drop(stream);
    push_to(&device, &v1).unwrap();
    assert_eq!(device.switched(), ["v1", "v0", "v1"]);

    // The same bytes again: the device answers the handshake with fresh keys, the recorded
    // authentication no longer decrypts, and it hangs up having done nothing.
    let mut replay = TcpStream::connect(&device.address).unwrap();
    replay.set_read_timeout(Some(TIMEOUT)).unwrap();
    std::io::Write::write_all(&mut replay, &sent).unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut replay, &mut answer);
    let handshake_reply = u16::from_be_bytes([answer[0], answer[1]]) as usize;
    assert_eq!(answer.len(), 2 + handshake_reply, "only the handshake's answer, nothing after");
    assert_eq!(device.switched(), ["v1", "v0", "v1"]);
    assert_eq!(device.finish().1, "v1");
}

#[test]
fn a_stalled_client_is_cut_off_and_its_upload_taken_over() {
    let device = device(0.5);
    let v1 = bundle("v1", &site_key());
    let mut stalled = RawSession::open(&device.address);
    stalled.call(&Request::Upload { sha256: sha(&v1), size: v1.len() as u64 });
    stalled.call(&Request::Chunk { offset: 0, data: v1[..CHUNK_BYTES].to_vec() });
    // Meanwhile another client pushes the same bundle: busy until the stalled one is cut off.
    let started = Instant::now();
    let pushed = push_to(&device, &v1).unwrap();
    assert!(pushed.connections >= 2, "the second client waited for the first ({} connections)", pushed.connections);
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(pushed.status.active.unwrap().version, "v1");
    let cut = stalled.receive().unwrap_err();
    assert!(matches!(cut, FrameError::Closed), "{cut:?}");
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
        adopt(&mut store, &bundle("v0", &key)).unwrap();
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
    adopt(&mut store, &bundle("v0", &key)).unwrap();
    let v1 = bundle("v1", &key);
    let active = adopt(&mut store, &v1).unwrap();
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
    adopt(&mut store, &bundle("v0", &key)).unwrap();
    for (version, inputs) in [("png", InputProvenance::StstnetPng), ("old", InputProvenance::Unknown)] {
        let foreign = bundle_with(version, &key, |m| m.inputs = inputs);
        let err = adopt(&mut store, &foreign).err().unwrap().to_string();
        assert!(err.contains("allow_foreign_inputs = true") && err.contains(version), "{err}");
        assert_eq!(store.load_active().unwrap().unwrap().info.version, "v0");
    }
    let mut lenient = ModelStore::open(dir.path(), vec![key.public()], 2, 1).unwrap().allowing_foreign_inputs(true);
    let foreign = bundle_with("png", &key, |m| m.inputs = InputProvenance::StstnetPng);
    assert_eq!(adopt(&mut lenient, &foreign).unwrap().info.version, "png");
    let older = bundle_with("v-old", &key, |m| m.preprocessing_version = 1);
    assert!(adopt(&mut lenient, &older).err().unwrap().to_string().contains("preprocessing version 1"));
}

#[test]
fn clients_beyond_the_session_limit_are_told_the_device_is_busy() {
    let device = device(5.0);
    let open: Vec<_> = (0..8).map(|_| RawSession::open(&device.address)).collect();
    // The ninth gets the management slot: status and commands, but no uploads.
    let mut manager = device.connect().unwrap();
    assert_eq!(manager.status().unwrap().device, "room-1");
    let e = manager.upload(&bundle("v1", &site_key()), |_, _| {}).unwrap_err();
    assert!(matches!(&e, Error::PushBusy(r) if r.contains("all 8 upload slots are in use")), "{e}");
    // The tenth is turned away.
    let e = device.connect().err().unwrap();
    assert!(matches!(&e, Error::PushBusy(r) if r.contains("all 8 upload slots and the management slot are in use")), "{e}");
    drop(open);
    drop(manager);
    // Once they are gone, pushes go through again (the client retries while the device is busy).
    assert_eq!(push_to(&device, &bundle("v1", &site_key())).unwrap().status.active.unwrap().version, "v1");
    assert_eq!(device.finish().1, "v1");
}

/// A client that starts a message whose length `header` announces on `stream` and sends one
/// byte of it every `every`, far inside any per-read timeout, until the device hangs up;
/// returns how long that took.
fn trickle(mut stream: TcpStream, header: [u8; 2], every: Duration) -> JoinHandle<Duration> {
    std::thread::spawn(move || {
        let started = Instant::now();
        stream.set_read_timeout(Some(every)).unwrap();
        let _ = std::io::Write::write_all(&mut stream, &header);
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

/// The length of a client's first handshake message (its ephemeral key and protocol number).
const HANDSHAKE_MESSAGE: [u8; 2] = [0, 36];
/// The length of the longest channel message.
const SESSION_MESSAGE: [u8; 2] = [0xff, 0xff];

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
    // Four sessions holding every upload slot, and two connections still in their handshake,
    // each sending a byte every 100 ms.
    let every = Duration::from_millis(100);
    let slow: Vec<_> = (0..4).map(|_| trickle(RawSession::open(&device.address).stream, SESSION_MESSAGE, every)).collect();
    // (Slower: the 36 bytes of a handshake's first message must not be complete by the deadline.)
    let silent: Vec<_> = (0..2).map(|_| trickle(TcpStream::connect(&device.address).unwrap(), HANDSHAKE_MESSAGE, every * 2)).collect();
    std::thread::sleep(Duration::from_millis(300));

    // What `mer devices` does: connect, authenticate, Status. Answered at once, not when a slot frees.
    let asked = Instant::now();
    let mut manager = device.connect().unwrap();
    assert_eq!(manager.status().unwrap().active.unwrap().version, "v1");
    assert!(asked.elapsed() < timeout / 2, "status took {:?}", asked.elapsed());
    // The management slot serves one client, signed commands, and no uploads.
    let e = device.connect().err().unwrap();
    assert!(matches!(&e, Error::PushBusy(r) if r.contains("management slot")), "{e}");
    let e = manager.upload(&bundle("v2", &site_key()), |_, _| {}).unwrap_err();
    assert!(matches!(&e, Error::PushBusy(r) if r.contains("upload slots are in use")), "{e}");
    assert_eq!(manager.rollback(&site_key()).unwrap().active.unwrap().version, "v0");
    drop(manager);

    // However they trickle, every request (and every handshake) is cut off at its deadline.
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
    let mut stream = RawSession::open(&device.address);
    assert_eq!(stream.call(&Request::Upload { sha256: sha(&v1), size: v1.len() as u64 }), Response::UploadFrom { offset: 0 });
    let data = v1[..CHUNK_BYTES].to_vec();
    assert_eq!(stream.call(&Request::Chunk { offset: 0, data }), Response::Ack { offset: CHUNK_BYTES as u64 });
    // The next request comes a byte every tenth of the deadline: the deadline counts from the
    // last answer, not from the last byte.
    assert_cut_near(trickle(stream.stream, SESSION_MESSAGE, Duration::from_millis(100)).join().unwrap(), Duration::from_secs(1));

    let mut first = None;
    push(&device.address, &v1, device.credentials(), TIMEOUT, |offset, _| {
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
    let mut stream = RawSession::open(&device.address);
    let opened = Instant::now();
    stream.call(&Request::Upload { sha256: sha(&v1), size: v1.len() as u64 });
    let first = Request::Chunk { offset: 0, data: v1[..CHUNK_BYTES].to_vec() };
    assert_eq!(stream.call(&first), Response::Ack { offset: CHUNK_BYTES as u64 });
    // A client that keeps asking, each request prompt, still has its session closed in time.
    let closed = loop {
        let sent = stream.send_bytes(&frame::encode(&Request::Status)).is_ok();
        let answer = sent.then(|| stream.receive().ok()).flatten();
        match answer {
            Some(Response::Status(_)) => std::thread::sleep(Duration::from_millis(100)),
            Some(other) => panic!("{other:?}"),
            None => break opened.elapsed(),
        }
        assert!(opened.elapsed() < Duration::from_secs(5), "the session was never closed");
    };
    assert_cut_near(closed, Duration::from_secs(1));
    let mut next = RawSession::open(&device.address);
    let resumed = next.call(&Request::Upload { sha256: sha(&v1), size: v1.len() as u64 });
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
    // On the wire each frame is cut into channel messages of at most 65535 bytes, each with a
    // 2-byte length and a 16-byte tag; the handshake's first message is 2 + 36 bytes.
    let sealed = |frame: Vec<u8>| frame.len() + 18 * frame.len().div_ceil(channel::MAX_RECORD - 16);
    let mut upload = 2 + 36 + sealed(frame::encode(&authenticate(&[0; 32], &site_key())));
    upload += sealed(frame::encode(&Request::Upload { sha256: sha(&v1), size: v1.len() as u64 }));
    for (i, data) in v1.chunks(CHUNK_BYTES).enumerate() {
        upload += sealed(frame::encode(&Request::Chunk { offset: (i * CHUNK_BYTES) as u64, data: data.to_vec() }));
    }
    let relay = breaking_relay(device.address.clone(), Cut::FromClient, upload + 10, 1);
    let pushed = push(&relay, &v1, device.credentials(), TIMEOUT, |_, _| {}).unwrap();
    assert!(pushed.connections >= 2, "{} connections", pushed.connections);
    assert_eq!(pushed.status.active.unwrap().version, "v1");
    assert_eq!(device.switched(), ["v1"]);
    assert_eq!(device.finish().1, "v1");
}

#[test]
fn connections_that_never_finish_their_handshake_are_bounded_and_cut_off() {
    let device = device_with(|s| {
        s.timeout_s = 1.0;
        s.max_sessions = 2;
    });
    // Two per slot, the management slot included, may be in their handshake at once: three
    // that say nothing, three that open the channel and never authenticate.
    let started = Instant::now();
    let mut waiting: Vec<_> = (0..3).map(|_| TcpStream::connect(&device.address).unwrap()).collect();
    waiting.extend((0..3).map(|_| raw_channel(&device.address).0));
    std::thread::sleep(Duration::from_millis(200));
    let extra = TcpStream::connect(&device.address).unwrap();
    extra.set_read_timeout(Some(TIMEOUT)).unwrap();
    let e = channel::connect(&mut &extra, &mut &extra).err().unwrap();
    assert!(matches!(e, FrameError::Busy), "{e:?}");
    for mut stream in waiting {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        assert!(matches!(std::io::Read::read(&mut stream, &mut [0u8; 1]), Ok(0) | Err(_)));
    }
    assert_cut_near(started.elapsed(), Duration::from_secs(1));
    assert_eq!(device.active_version(), "v0");
    assert_eq!(device.finish().1, "v0");
}

#[test]
fn a_push_over_a_breaking_network_reconnects_and_resumes() {
    let device = device(5.0);
    let v1 = bundle("v1", &site_key());
    // Each of the first two connections dies after 1.5 chunks of bundle bytes.
    let relay = breaking_relay(device.address.clone(), Cut::FromClient, CHUNK_BYTES * 3 / 2, 2);
    let mut offsets = Vec::new();
    let pushed = push(&relay, &v1, device.credentials(), TIMEOUT, |offset, _| offsets.push(offset)).unwrap();
    assert_eq!(pushed.connections, 3);
    assert_eq!(pushed.status.active.unwrap().version, "v1");
    // A new connection reports again the offset the broken one could not finish: the upload
    // resumed there each time, after one more acknowledged chunk, never from 0.
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
    let resumed: Vec<u64> = offsets.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect();
    assert_eq!(resumed, [CHUNK_BYTES as u64, 2 * CHUNK_BYTES as u64], "{offsets:?}");
    assert_eq!(device.finish().1, "v1");
}

/// A device whose new models are on probation for `seconds` and `windows` windows.
fn probation_device(seconds: f64, windows: u32) -> TestDevice {
    device_with(|s| {
        s.probation_s = seconds;
        s.probation_windows = windows;
        s.max_window_ms = 100.0;
    })
}

#[test]
fn a_model_that_fails_its_probation_returns_to_the_one_before_by_itself() {
    let device = probation_device(60.0, 2);
    let pushed = push_to(&device, &bundle("v1", &site_key())).unwrap();
    let probation = pushed.status.probation.unwrap();
    assert_eq!((probation.version.as_str(), probation.state), ("v1", ProbationState::Running));
    let observer = device.server.window_observer().unwrap();
    observer.classified("v1", Ok(20.0));
    // Nothing decided yet: the time is not served.
    assert!(!device.server.watch_probation(Instant::now()));
    assert_eq!(device.connect().unwrap().status().unwrap().active.unwrap().version, "v1");
    // A window far slower than max_window_ms: back on v0 with no command from the host.
    observer.classified("v1", Ok(450.0));
    device.server.watch_probation(Instant::now());
    let status = device.settled();
    assert_eq!(status.active.unwrap().version, "v0");
    assert!(status.previous.is_empty(), "the failed model is not kept to return to");
    let probation = status.probation.unwrap();
    assert_eq!((probation.version.as_str(), probation.state), ("v1", ProbationState::Failed));
    assert!(probation.reason.contains("450 ms"), "{}", probation.reason);
    assert_eq!(device.switched(), ["v1", "v0"]);
    let (state, running) = device.finish();
    assert_eq!(running, "v0");
    assert!(state.probation.is_none() && !state.last_probation.unwrap().passed);
}

#[test]
fn a_restart_during_probation_comes_back_on_the_last_model_that_passed() {
    let device = probation_device(0.3, 1);
    push_to(&device, &bundle("v1", &site_key())).unwrap();
    device.server.window_observer().unwrap().classified("v1", Ok(20.0));
    std::thread::sleep(Duration::from_millis(350));
    device.server.watch_probation(Instant::now());
    let probation = device.settled().probation.unwrap();
    assert_eq!((probation.version.as_str(), probation.state), ("v1", ProbationState::Passed));

    // v2 on probation, replaced by v3 before it passed: v2 is not kept to return to.
    push_to(&device, &bundle("v2", &site_key())).unwrap();
    let status = push_to(&device, &bundle("v3", &site_key())).unwrap().status;
    let kept: Vec<String> = status.previous.iter().map(|m| m.version.clone()).collect();
    assert_eq!(kept, ["v1", "v0"]);
    // Killed now: the next start fails v3's probation and runs v1, the last model that passed.
    let (state, running) = device.finish();
    assert_eq!(running, "v1");
    let last = state.last_probation.unwrap();
    assert_eq!((last.version.as_str(), last.passed), ("v3", false));
    assert!(last.reason.contains("stopped before the probation was over"), "{}", last.reason);
}

#[test]
fn a_rollback_during_probation_ends_it() {
    let device = probation_device(60.0, 1);
    push_to(&device, &bundle("v1", &site_key())).unwrap();
    let status = device.connect().unwrap().rollback(&site_key()).unwrap();
    assert_eq!(status.active.unwrap().version, "v0");
    let probation = status.probation.unwrap();
    assert_eq!((probation.state, probation.reason.as_str()), (ProbationState::Failed, "rolled back by command"));
    assert!(!device.server.watch_probation(Instant::now() + Duration::from_secs(120)));
    assert_eq!(device.finish().1, "v0");
}
