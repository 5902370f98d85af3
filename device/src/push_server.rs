//! `merd`'s fleet listener (protocol in `mer_shared::push`): every connection first opens the
//! encrypted channel with this device's own key and must then authenticate with a key the device
//! trusts; nothing is served before. Uploads are staged in the [`ModelStore`] and checked;
//! signed commands activate or roll back, and the new model is handed to the running pipeline
//! without stopping capture.
//!
//! Slots: a connection counts as a session only once it has authenticated. Until then it is
//! one of at most [`HANDSHAKES_PER_SLOT`] × (`max_sessions` + 1) connections in their handshake,
//! each for at most `min(timeout_s, 5 s)`; more are turned away as busy at once, so a flood of
//! silent connections costs a bounded number of threads. After that a session takes one of
//! `max_sessions` slots, or, when they are all taken, the single management slot: it serves
//! status and signed commands but answers uploads with busy, and lasts at most `timeout_s` in
//! all, so that slow uploaders cannot lock `mer devices` and `mer rollback` out. Deadlines are
//! per request and per session, never per byte: each request frame must be complete within
//! `timeout_s` of the previous answer, and a session ends after `session_s`.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

use mer_shared::bundle::PublicKey;
use mer_shared::classifier::Classifier;
use mer_shared::event::Event;
use mer_shared::push::channel::{self, Channel, DeviceKey, DevicePublicKey};
use mer_shared::push::frame::FrameError;
use mer_shared::push::{
    Action, DeviceStatus, Digest, Health, MAX_FRAME_BYTES, ModelInfo, Nonce, ProbationReport, ProbationState, Request, Response,
    SignedCommand, digest_hex, verify_authentication,
};
use mer_shared::{Error, Result};
use serde::Deserialize;

use crate::deadline::{Deadline, clamped_seconds};
use crate::event_log::{Pulled, read_events, read_pulled, record_pulled};
use crate::model_store::{ModelStore, ProbationRecord, Verified, unix_ms_now};
use crate::probation::{Probation, ProbationSettings, Verdict, WindowObserver};

/// Event bytes per page of a pull, well inside a frame.
const PAGE_BYTES: usize = 192 << 10;

/// Connections allowed in their handshake at once, per session slot (management included).
pub const HANDSHAKES_PER_SLOT: usize = 2;
/// The longest a connection may take to open the channel and authenticate (shorter when
/// `timeout_s` is).
const HANDSHAKE: Duration = Duration::from_secs(5);

/// `[push]` in the daemon's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSettings {
    /// Address and port to listen on, e.g. "0.0.0.0:7878".
    pub listen: String,
    /// The model store: active, kept and staged bundles.
    pub store: PathBuf,
    /// This device's own key, made on first start (default: `device.key` in the store).
    pub key: Option<PathBuf>,
    /// Earlier models kept for rollback.
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// Largest bundle accepted, in MiB.
    #[serde(default = "default_max_bundle_mb")]
    pub max_bundle_mb: u64,
    /// Each request must arrive complete within this many seconds of the previous answer,
    /// however it trickles in; a client that misses it is disconnected (its upload can resume).
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
    /// A session is closed after this many seconds in all; an upload resumes in a new one.
    #[serde(default = "default_session_s")]
    pub session_s: f64,
    /// Sessions that may upload at once. One more is admitted for status and commands only;
    /// beyond that clients are told the device is busy.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// The name `mer devices` shows (default: the host name).
    pub name: Option<String>,
    /// A newly activated model is on probation this long (0: no probation) ...
    #[serde(default = "default_probation_s")]
    pub probation_s: f64,
    /// ... and until it has classified this many windows (spotted, or asked for by the device).
    #[serde(default = "default_probation_windows")]
    pub probation_windows: u32,
    /// A window on probation whose flows and inference take longer fails the model.
    #[serde(default = "default_max_window_ms")]
    pub max_window_ms: f64,
}

impl PushSettings {
    pub fn key_path(&self) -> PathBuf {
        self.key.clone().unwrap_or_else(|| self.store.join("device.key"))
    }

    /// `None` when probation is off.
    pub fn probation(&self) -> Option<ProbationSettings> {
        (self.probation_s > 0.0).then_some(ProbationSettings {
            seconds: self.probation_s,
            windows: self.probation_windows,
            max_window_ms: self.max_window_ms,
        })
    }
}

fn default_probation_s() -> f64 {
    300.0
}
fn default_probation_windows() -> u32 {
    3
}
fn default_max_window_ms() -> f64 {
    2000.0
}

fn default_keep() -> usize {
    3
}
fn default_max_bundle_mb() -> u64 {
    1024
}
fn default_timeout_s() -> f64 {
    30.0
}
fn default_session_s() -> f64 {
    3600.0
}
fn default_max_sessions() -> usize {
    4
}

/// Where an activated model goes: the running pipeline, and what reports its health.
pub trait ModelSwitch: Send + Sync {
    /// Runs `classifier` from the next window on.
    fn switch(&self, classifier: Classifier);
    fn health(&self) -> Health;
}

struct Shared {
    store: Mutex<ModelStore>,
    trusted: Vec<PublicKey>,
    key: DeviceKey,
    /// Uploads in progress, so two clients never write the same staging file.
    uploads: Mutex<HashSet<Digest>>,
    /// Sessions in upload slots.
    sessions: AtomicUsize,
    /// Whether the management slot is taken.
    management: AtomicBool,
    /// Connections still in their handshake.
    handshakes: AtomicUsize,
    /// The event log `mer events pull` reads, and how far it has been pulled.
    event_log: Option<PathBuf>,
    pulled: Mutex<Option<Pulled>>,
    pull_writes: Mutex<()>,
    switch: Arc<dyn ModelSwitch>,
    probation: Option<Arc<Probation>>,
    /// How the last probation ended, as the store records it (read without the store's lock).
    last_probation: Mutex<Option<ProbationRecord>>,
    device: String,
    /// The id events carry: this device key's fingerprint.
    device_id: String,
    max_bundle_bytes: u64,
    max_sessions: usize,
    max_handshakes: usize,
    /// Per request (`timeout_s`).
    timeout: Duration,
    /// Per session (`session_s`).
    session: Duration,
    /// For the handshake and authentication.
    handshake: Duration,
}

impl Shared {
    /// Copies the store's record of the last probation for status reports.
    fn note_probation(&self, store: &ModelStore) {
        *self.last_probation.lock().unwrap_or_else(|p| p.into_inner()) = store.state().last_probation.clone();
    }

    /// Takes an upload slot, else the management slot.
    fn take_slot(&self) -> Option<SlotGuard<'_>> {
        let upload = self.sessions.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < self.max_sessions).then_some(n + 1));
        if upload.is_ok() {
            return Some(SlotGuard { shared: self, slot: Slot::Upload });
        }
        let management = self.management.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst);
        management.is_ok().then_some(SlotGuard { shared: self, slot: Slot::Management })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Upload,
    /// Status and commands only.
    Management,
}

/// A session's slot, given back when the session ends however it ends.
struct SlotGuard<'a> {
    shared: &'a Shared,
    slot: Slot,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        match self.slot {
            Slot::Upload => {
                self.shared.sessions.fetch_sub(1, Ordering::SeqCst);
            }
            Slot::Management => self.shared.management.store(false, Ordering::SeqCst),
        }
    }
}

/// A connection counted among those in their handshake until this is dropped.
struct HandshakeGuard(Arc<Shared>);

impl Drop for HandshakeGuard {
    fn drop(&mut self) {
        self.0.handshakes.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct PushServer {
    address: SocketAddr,
    key: DevicePublicKey,
    shared: Arc<Shared>,
}

impl PushServer {
    /// Listens on `settings.listen` and serves each client on its own thread.
    pub fn start(settings: &PushSettings, store: ModelStore, trusted: Vec<PublicKey>, switch: Arc<dyn ModelSwitch>) -> Result<PushServer> {
        PushServer::bind(settings)?.serve(store, trusted, switch)
    }

    /// Takes the listening address without serving anyone yet, so that a daemon finds an
    /// address in use or mistyped before it creates its model store or event log.
    pub fn bind(settings: &PushSettings) -> Result<PushListener> {
        let listener = TcpListener::bind(&settings.listen)
            .map_err(|e| Error::InvalidArgument(format!("cannot listen for model pushes on {} (push.listen): {e}", settings.listen)))?;
        Ok(PushListener { listener, settings: settings.clone(), event_log: None })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The key clients enrol.
    pub fn device_key(&self) -> DevicePublicKey {
        self.key
    }

    /// What the classifier worker tells about each window, for the probation (`None` when off).
    pub fn window_observer(&self) -> Option<Arc<dyn WindowObserver>> {
        self.shared.probation.clone().map(|p| p as Arc<dyn WindowObserver>)
    }

    /// Settles a probation that is over, returning to the model before a failed one (on a
    /// thread of its own: loading a model must not hold up capture); true when the probation
    /// wants a window classified now (then call [`PushServer::window_asked`] once one is
    /// submitted). Called by the capture loop for every frame, so it takes no lock another
    /// thread holds for long.
    pub fn watch_probation(&self, now: Instant) -> bool {
        let Some(probation) = &self.shared.probation else { return false };
        match probation.poll(now) {
            None => false,
            Some(Verdict::Pending { want_window }) => want_window,
            Some(verdict) => {
                let shared = Arc::clone(&self.shared);
                let settled = std::thread::Builder::new().name("probation".into()).spawn(move || settle(&shared, verdict));
                if let Err(e) = settled {
                    error!("cannot start the thread that ends a probation: {e}");
                }
                false
            }
        }
    }

    pub fn window_asked(&self, now: Instant) {
        if let Some(probation) = &self.shared.probation {
            probation.window_asked(now);
        }
    }

    /// How far the event log has been pulled, if ever.
    pub fn last_pull(&self) -> Option<Pulled> {
        self.shared.pulled.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What `mer devices` shows of the probation.
    pub fn probation_report(&self) -> Option<ProbationReport> {
        probation_report(&self.shared)
    }
}

/// A bound push address, not yet serving.
pub struct PushListener {
    listener: TcpListener,
    settings: PushSettings,
    event_log: Option<PathBuf>,
}

impl PushListener {
    /// Also serves `mer events pull` from the event log in `dir`.
    pub fn with_event_log(self, dir: &Path) -> PushListener {
        PushListener { event_log: Some(dir.to_path_buf()), ..self }
    }

    /// Serves each client on its own thread from now on, with the device key at
    /// `settings.key_path()` (made there on first start).
    pub fn serve(self, store: ModelStore, trusted: Vec<PublicKey>, switch: Arc<dyn ModelSwitch>) -> Result<PushServer> {
        let PushListener { listener, settings, event_log } = self;
        let address = listener.local_addr().map_err(|e| Error::InvalidArgument(format!("{}: {e}", settings.listen)))?;
        let key_path = settings.key_path();
        let (key, created) = DeviceKey::load_or_create(&key_path)?;
        let public = key.public();
        if created {
            info!("made this device's key {}: its fingerprint is {}", key_path.display(), public.fingerprint());
        }
        let device = settings.name.clone().unwrap_or_else(host_name);
        let max_sessions = settings.max_sessions.max(1);
        let timeout = clamped_seconds(settings.timeout_s);
        let last_probation = store.state().last_probation.clone();
        let shared: Arc<Shared> = Arc::new(Shared {
            store: Mutex::new(store),
            trusted,
            key,
            uploads: Mutex::new(HashSet::new()),
            sessions: AtomicUsize::new(0),
            management: AtomicBool::new(false),
            handshakes: AtomicUsize::new(0),
            pulled: Mutex::new(event_log.as_deref().and_then(read_pulled)),
            pull_writes: Mutex::new(()),
            event_log,
            switch,
            probation: settings.probation().map(|p| Arc::new(Probation::new(p))),
            last_probation: Mutex::new(last_probation),
            device,
            device_id: public.fingerprint(),
            max_bundle_bytes: settings.max_bundle_mb << 20,
            max_sessions,
            max_handshakes: HANDSHAKES_PER_SLOT * (max_sessions + 1),
            timeout,
            session: clamped_seconds(settings.session_s),
            handshake: timeout.min(HANDSHAKE),
        });
        let serving = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("push".into())
            .spawn(move || {
                let shared = serving;
                for stream in listener.incoming().flatten() {
                    let below_limit = |n: usize| (n < shared.max_handshakes).then_some(n + 1);
                    if shared.handshakes.fetch_update(Ordering::SeqCst, Ordering::SeqCst, below_limit).is_err() {
                        turn_away(&stream, &format!("{} connections are already in their handshake", shared.max_handshakes));
                        continue;
                    }
                    // Dropped with the closure if the thread cannot start.
                    let handshake = HandshakeGuard(Arc::clone(&shared));
                    let _ = std::thread::Builder::new().name("push-session".into()).spawn(move || serve(stream, handshake));
                }
            })
            .map_err(|e| Error::InvalidArgument(format!("cannot start the push thread: {e}")))?;
        Ok(PushServer { address, key: public, shared })
    }
}

/// One client's upload.
struct Upload {
    sha256: Digest,
    size: u64,
    file: File,
    offset: u64,
}

struct Session<'a> {
    shared: &'a Shared,
    channel: Channel,
    peer: String,
    nonce: Nonce,
    upload: Option<Upload>,
    /// Digests this session holds in `Shared::uploads`.
    claimed: Option<Digest>,
    /// The event log as read at this session's first pull: its pages come from here.
    events: Option<Vec<Event>>,
    /// Which key authenticated the session.
    client: String,
    /// The model this session's last upload produced, already checked: activating it need not
    /// load and probe it again.
    staged: Option<(Digest, Verified)>,
    slot: Slot,
    /// How long the session may last, and when that is up.
    lasts: Duration,
    ends: Instant,
}

/// Tells a connection the device is busy without reading from it, and closes it.
fn turn_away(stream: &TcpStream, reason: &str) {
    warn!("push from {}: {reason}, turned away", peer_name(stream));
    // Two bytes into a fresh socket's buffer: this does not wait on the peer.
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = channel::send_busy(&mut &*stream);
}

fn peer_name(stream: &TcpStream) -> String {
    stream.peer_addr().map_or_else(|_| "?".into(), |a| a.to_string())
}

fn serve(stream: TcpStream, handshake: HandshakeGuard) {
    let shared = Arc::clone(&handshake.0);
    let shared = &*shared;
    let peer = peer_name(&stream);
    let _ = stream.set_write_timeout(Some(shared.timeout));
    let due = Instant::now() + shared.handshake;
    let opened = channel::accept(&mut Deadline::new(&stream, due), &mut &stream, &shared.key).and_then(|mut channel| {
        let first = channel.receive::<Request>(&mut Deadline::new(&stream, due), MAX_FRAME_BYTES)?;
        Ok((channel, first))
    });
    drop(handshake);
    let (mut channel, first) = match opened {
        Ok(opened) => opened,
        // Connected and left without a word (a port check).
        Err(FrameError::Closed) => return,
        Err(e) if e.is_timeout() => {
            let within = shared.handshake.as_secs_f64();
            return warn!(
                "push from {peer}: no handshake and authentication within {within:.1} s (push.timeout_s, at most 5 s), disconnected"
            );
        }
        Err(e) => return warn!("push from {peer}: {e}, disconnected"),
    };
    let client = match first {
        Request::Authenticate { key, signature } => {
            verify_authentication(channel.handshake_hash(), &key, &signature, &shared.trusted).map_err(|e| e.to_string())
        }
        _ => Err("a session starts with Authenticate".to_string()),
    };
    let client = match client {
        Ok(client) => client,
        Err(reason) => {
            warn!("push from {peer}: refused: {reason}");
            let _ = channel.send(&mut &stream, &Response::Refused { reason, nonce: None });
            return;
        }
    };
    let Some(taken) = shared.take_slot() else {
        let reason = format!("all {} upload slots and the management slot are in use", shared.max_sessions);
        warn!("push from {peer}: {reason}, turned away");
        let _ = channel.send(&mut &stream, &Response::Busy { reason });
        return;
    };
    debug!("push from {peer}: authenticated as key {}", client.key_id());
    // A management session needs a request or two: it must not hold its slot for long.
    let lasts = if taken.slot == Slot::Management { shared.session.min(shared.timeout) } else { shared.session };
    let nonce = fresh_nonce();
    let ends = Instant::now() + lasts;
    let mut session = Session {
        shared,
        channel,
        peer,
        nonce,
        upload: None,
        claimed: None,
        events: None,
        client: client.key_id(),
        staged: None,
        slot: taken.slot,
        lasts,
        ends,
    };
    let welcome = Response::Welcome { device: shared.device.clone(), nonce };
    if session.channel.send(&mut &stream, &welcome).is_ok() {
        session.run(&stream);
    }
    session.release();
}

impl Session<'_> {
    fn run(&mut self, stream: &TcpStream) {
        loop {
            // The whole frame, however it trickles in, by the earlier of the two deadlines.
            let request_due = Instant::now() + self.shared.timeout;
            let request = match self.channel.receive::<Request>(&mut Deadline::new(stream, request_due.min(self.ends)), MAX_FRAME_BYTES) {
                Ok(request) => request,
                Err(FrameError::Closed) => return,
                Err(e) if e.is_timeout() => return self.out_of_time(request_due),
                Err(e) => return self.hang_up(stream, &e),
            };
            let response = self.answer(request);
            match &response {
                Response::Refused { reason, .. } => warn!("push from {}: refused: {reason}", self.peer),
                Response::Busy { reason } => info!("push from {}: busy: {reason}", self.peer),
                _ => {}
            }
            if self.channel.send(&mut &*stream, &response).is_err() {
                return;
            }
        }
    }

    /// Says which deadline a request missed.
    fn out_of_time(&self, request_due: Instant) {
        let secs = |d: Duration| d.as_secs_f64();
        let rule = if self.ends > request_due {
            format!("request not complete within {:.1} s (push.timeout_s), disconnected", secs(self.shared.timeout))
        } else if self.slot == Slot::Management {
            format!("management session open for {:.1} s, the most it may take (push.timeout_s), closed", secs(self.lasts))
        } else {
            format!("session open for {:.1} s (push.session_s), closed; an upload resumes in a new session", secs(self.lasts))
        };
        warn!("push from {}: {rule}", self.peer);
    }

    fn answer(&mut self, request: Request) -> Response {
        let refused = |e: Error| Response::Refused { reason: e.to_string(), nonce: None };
        match request {
            Request::Authenticate { .. } => refused(Error::Push("the session is already authenticated".into())),
            Request::Status => Response::Status(self.status()),
            Request::Upload { .. } if self.slot == Slot::Management => Response::Busy {
                reason: format!("all {} upload slots are in use; this session serves status and commands only", self.shared.max_sessions),
            },
            Request::Upload { sha256, size } => self.begin_upload(sha256, size).unwrap_or_else(refused),
            Request::Chunk { offset, data } => self.chunk(offset, &data).unwrap_or_else(refused),
            Request::Command(command) => self.command(command),
            Request::Events { since } => self.events(since).unwrap_or_else(refused),
        }
    }

    /// A page of events after `since`, and a note that the client holds everything up to it.
    fn events(&mut self, since: u64) -> Result<Response> {
        let Some(dir) = &self.shared.event_log else {
            return Err(Error::Push("this device serves no event log".into()));
        };
        if self.events.is_none() {
            let (events, damage) = read_events(dir)?;
            if !damage.is_empty() {
                warn!("push from {}: pulling around {} damaged stretches of the event log", self.peer, damage.len());
            }
            self.events = Some(events);
        }
        let all = self.events.as_deref().unwrap_or_default();
        let last = all.iter().map(|e| e.seq).max().unwrap_or(0).max(read_pulled(dir).map_or(0, |p| p.through));
        if since > last {
            return Err(Error::Push(format!(
                "this device's event log ends at sequence number {last}; {since} never existed (a log from another device, or \
                 a wrong --since?)"
            )));
        }
        self.record_pull(dir, since);
        let start = all.partition_point(|e| e.seq <= since);
        let mut bytes = 0;
        let page: Vec<Event> = all[start..]
            .iter()
            .take_while(|e| {
                bytes += e.to_record().map_or(0, |r| r.len() + 16);
                bytes <= PAGE_BYTES
            })
            .cloned()
            .collect();
        let more = start + page.len() < all.len();
        Ok(Response::Events { device: self.shared.device_id.clone(), events: page, more })
    }

    fn record_pull(&self, dir: &Path, through: u64) {
        // One writer at a time; the copy the capture loop reads is locked only to swap it.
        let _writing = self.shared.pull_writes.lock().unwrap_or_else(|p| p.into_inner());
        match record_pulled(dir, through, &self.client, unix_ms_now()) {
            Ok(record) => *self.shared.pulled.lock().unwrap_or_else(|p| p.into_inner()) = Some(record),
            Err(e) => warn!("cannot record how far the event log was pulled: {e}"),
        }
    }

    fn status(&self) -> DeviceStatus {
        let store = self.shared.store.lock().unwrap_or_else(|p| p.into_inner());
        describe(&store, self.shared)
    }

    fn begin_upload(&mut self, sha256: Digest, size: u64) -> Result<Response> {
        let hex = digest_hex(&sha256);
        if size > self.shared.max_bundle_bytes {
            return Err(Error::Push(format!("the bundle is {size} bytes; this device accepts at most {}", self.shared.max_bundle_bytes)));
        }
        self.release();
        {
            let store = self.shared.store.lock().unwrap_or_else(|p| p.into_inner());
            if store.bundle_path(&hex).exists() {
                // Kept from before: nothing to send.
                return Ok(Response::Staged(self.keep_staged(sha256, store.verify(&sha256)?)));
            }
            let mut uploads = self.shared.uploads.lock().unwrap_or_else(|p| p.into_inner());
            if uploads.contains(&sha256) {
                return Ok(Response::Busy { reason: format!("another client is uploading {hex}") });
            }
            uploads.insert(sha256);
            remove_abandoned_uploads(&store, &uploads);
            self.claimed = Some(sha256);
            let path = store.staging_path(&hex);
            let file =
                OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).map_err(|e| Error::io(&path, e))?;
            let mut offset = file.metadata().map_err(|e| Error::io(&path, e))?.len();
            if offset > size {
                file.set_len(0).map_err(|e| Error::io(&path, e))?;
                offset = 0;
            }
            self.upload = Some(Upload { sha256, size, file, offset });
        }
        if offset_complete(self.upload.as_ref()) {
            return self.finish_upload();
        }
        Ok(Response::UploadFrom { offset: self.upload.as_ref().map_or(0, |u| u.offset) })
    }

    fn chunk(&mut self, offset: u64, data: &[u8]) -> Result<Response> {
        let Some(upload) = self.upload.as_mut() else {
            return Err(Error::Push("no upload in progress; send Upload first".into()));
        };
        if offset != upload.offset {
            return Err(Error::Push(format!("the chunk starts at byte {offset}; the upload continues at {}", upload.offset)));
        }
        let end = offset + data.len() as u64;
        if data.is_empty() || end > upload.size {
            return Err(Error::Push(format!("a chunk of {} bytes at {offset} does not fit a {}-byte bundle", data.len(), upload.size)));
        }
        upload
            .file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| upload.file.write_all(data))
            .map_err(|e| Error::Push(format!("cannot write the upload on the device ({e}); is its disk full?")))?;
        upload.offset = end;
        if end == upload.size { self.finish_upload() } else { Ok(Response::Ack { offset: end }) }
    }

    /// All bytes are in: check them, or discard them so a fresh upload starts clean.
    fn finish_upload(&mut self) -> Result<Response> {
        let upload = self.upload.take().expect("an upload in progress");
        let _ = upload.file.sync_all();
        drop(upload.file);
        let store = self.shared.store.lock().unwrap_or_else(|p| p.into_inner());
        match store.verify(&upload.sha256) {
            Ok(verified) => {
                info!("push from {}: staged {} ({})", self.peer, verified.info.version, verified.info.sha256);
                Ok(Response::Staged(self.keep_staged(upload.sha256, verified)))
            }
            Err(e) => {
                let _ = std::fs::remove_file(store.staging_path(&digest_hex(&upload.sha256)));
                Err(Error::Push(format!("the uploaded bundle was discarded: {e}")))
            }
        }
    }

    /// Checks signature and nonce, then carries the command out; the nonce is used up either way.
    fn command(&mut self, command: SignedCommand) -> Response {
        let expected = std::mem::replace(&mut self.nonce, fresh_nonce());
        let refused = |reason: String, nonce| Response::Refused { reason, nonce: Some(nonce) };
        let signer = match command.verify(&self.shared.trusted) {
            Ok(signer) => signer,
            Err(e) => return refused(e.to_string(), self.nonce),
        };
        if command.nonce != expected {
            return refused("the command carries a stale nonce (a replayed or out-of-order command)".into(), self.nonce);
        }
        let mut store = self.shared.store.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = match command.action {
            Action::Activate { sha256 } => {
                let checked = self.staged.take().filter(|(digest, _)| *digest == sha256).map(|(_, verified)| verified);
                activate(&mut store, self.shared, &sha256, checked)
            }
            Action::Rollback => rollback(&mut store, self.shared),
        };
        self.shared.note_probation(&store);
        match outcome {
            Ok(model) => {
                info!("push from {}: {} by key {}: now running {model}", self.peer, command.action, signer.key_id());
                Response::Done { status: describe(&store, self.shared), nonce: self.nonce }
            }
            Err(e) => refused(e.to_string(), self.nonce),
        }
    }

    /// Ends a connection whose frames cannot be read, saying why when the peer can still hear it.
    fn hang_up(&mut self, stream: &TcpStream, e: &FrameError) {
        warn!("push from {}: {e}, disconnected", self.peer);
        if matches!(e, FrameError::Oversized { .. } | FrameError::Malformed { .. }) {
            let _ = self.channel.send(&mut &*stream, &Response::Refused { reason: e.to_string(), nonce: None });
        }
    }

    fn keep_staged(&mut self, sha256: Digest, verified: Verified) -> ModelInfo {
        let info = verified.info.clone();
        self.staged = Some((sha256, verified));
        info
    }

    /// Lets another session upload what this one claimed.
    fn release(&mut self) {
        self.upload = None;
        if let Some(digest) = self.claimed.take() {
            self.shared.uploads.lock().unwrap_or_else(|p| p.into_inner()).remove(&digest);
        }
    }
}

fn offset_complete(upload: Option<&Upload>) -> bool {
    upload.is_some_and(|u| u.offset == u.size)
}

/// Activates a bundle, checked now unless `checked` holds what this session's upload verified.
fn activate(store: &mut ModelStore, shared: &Shared, sha256: &Digest, checked: Option<Verified>) -> Result<String> {
    let verified = match checked {
        Some(verified) => verified,
        None => store.verify(sha256)?,
    };
    if store.state().active.as_deref() == Some(verified.info.sha256.as_str()) {
        return Ok(verified.info.version);
    }
    match &shared.probation {
        Some(probation) => {
            store.activate_on_probation(sha256, &verified.info.version)?;
            probation.begin(&verified.info.sha256, &verified.info.version, Instant::now());
        }
        None => {
            store.activate(sha256)?;
        }
    }
    shared.switch.switch(verified.classifier);
    Ok(verified.info.version)
}

fn rollback(store: &mut ModelStore, shared: &Shared) -> Result<String> {
    let target = store.state().previous.first().cloned().ok_or_else(|| Error::Push("there is no earlier model to go back to".into()))?;
    let verified = store.verify(&mer_shared::push::parse_digest(&target)?)?;
    store.rollback()?;
    if let Some(probation) = &shared.probation {
        probation.cancel();
    }
    shared.switch.switch(verified.classifier);
    Ok(verified.info.version)
}

/// Records a probation's end in the store; after a failure, the model before runs again.
fn settle(shared: &Shared, verdict: Verdict) {
    let mut store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
    match verdict {
        Verdict::Pending { .. } => {}
        Verdict::Passed { version, windows, .. } => match store.end_probation(Ok(())) {
            Ok(_) => info!("model {version} passed its probation ({windows} windows)"),
            Err(e) => warn!("model {version} passed its probation, but the store could not record it: {e}"),
        },
        Verdict::Failed { version, reason, .. } => match restore_after_failed_probation(&mut store, shared, reason.clone()) {
            Ok(restored) => warn!("model {version} failed its probation ({reason}); back on {restored}"),
            Err(e) => error!("model {version} failed its probation ({reason}), and the model before it cannot run: {e}"),
        },
    }
    shared.note_probation(&store);
}

/// Puts the model before the failed one back in the store and in the pipeline; returns its
/// version.
fn restore_after_failed_probation(store: &mut ModelStore, shared: &Shared, reason: String) -> Result<String> {
    let target = store.state().previous.first().cloned().ok_or_else(|| Error::Push("there is no earlier model to go back to".into()))?;
    let verified = store.verify(&mer_shared::push::parse_digest(&target)?)?;
    store.end_probation(Err(reason))?;
    shared.switch.switch(verified.classifier);
    Ok(verified.info.version)
}

fn probation_report(shared: &Shared) -> Option<ProbationReport> {
    if let Some(running) = shared.probation.as_ref().and_then(|p| p.running(Instant::now())) {
        return Some(ProbationReport {
            version: running.version,
            sha256: running.sha256,
            state: ProbationState::Running,
            windows: running.windows,
            seconds_left: running.seconds_left,
            reason: String::new(),
            at_unix_ms: 0,
        });
    }
    shared.last_probation.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|last| ProbationReport {
        version: last.version.clone(),
        sha256: last.model.clone(),
        state: if last.passed { ProbationState::Passed } else { ProbationState::Failed },
        windows: 0,
        seconds_left: 0.0,
        reason: last.reason.clone(),
        at_unix_ms: last.at_unix_ms,
    })
}

fn describe(store: &ModelStore, shared: &Shared) -> DeviceStatus {
    let state = store.state();
    let info = |hex: &String| -> Option<ModelInfo> { store.describe(hex) };
    DeviceStatus {
        device: shared.device.clone(),
        active: state.active.as_ref().and_then(info),
        previous: state.previous.iter().filter_map(info).collect(),
        health: shared.switch.health(),
        probation: probation_report(shared),
    }
}

/// Partial uploads nobody is sending any more; only the newest abandoned one is worth resuming,
/// and it is the one being asked for if anything, so all others go.
fn remove_abandoned_uploads(store: &ModelStore, in_progress: &HashSet<Digest>) {
    let staging = store.dir().join("staging");
    let keep: HashSet<String> = in_progress.iter().map(|d| format!("{}.part", digest_hex(d))).collect();
    for entry in std::fs::read_dir(&staging).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !keep.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn fresh_nonce() -> Nonce {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).expect("the operating system's random source");
    nonce
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "merd".into())
}
