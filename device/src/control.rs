//! The daemon's local control socket: `merd status` reads what the daemon is doing, `merd
//! trigger` asks it to classify the last moments and `merd session new` starts a new session
//! (e.g. the next interview), one line of text in, one line of JSON out.
//! A Unix socket, so only local users with access to its path can reach it. Each client is
//! served on its own short-lived thread and must send its line (at most [`MAX_REQUEST_BYTES`])
//! within [`REQUEST_DEADLINE`], so a slow or stuck client cannot keep `merd status` waiting.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

use crate::deadline::Deadline;
use crate::event_log::{Pulled, Session};

use mer_shared::event::Event;
use mer_shared::push::ProbationReport;
use mer_shared::{Error, Result};
use serde::{Deserialize, Serialize};

/// Events kept for `merd status`.
const LAST_EVENTS: usize = 10;
/// Longest request line, without its newline; longer ones are refused unread.
pub const MAX_REQUEST_BYTES: usize = 4096;
/// A request line must be complete this long after the connection, however it trickles in.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// Clients served at once (each for at most the deadline and its reply); more are turned away.
const MAX_CLIENTS: usize = 16;
/// How much of an unknown command the reply quotes.
const QUOTED_CHARS: usize = 32;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The id events carry: the device key's fingerprint, or the host name without one.
    #[serde(default)]
    pub device: String,
    /// The session events are stamped with now.
    #[serde(default)]
    pub session: String,
    pub model_version: String,
    pub model_path: PathBuf,
    pub source: String,
    pub uptime_s: f64,
    /// Frames per second over the last few seconds.
    pub fps: f64,
    pub frames: u64,
    pub dropped_frames: u64,
    /// The fixed box, or whether a detected face is in view ("searching", "in view at …", "lost").
    pub face: String,
    /// Frames that had no face box.
    pub faceless_frames: u64,
    pub spotted: u64,
    pub triggered: u64,
    pub dropped_windows: u64,
    /// Events classified and logged since the start.
    pub events: u64,
    pub last_events: VecDeque<Event>,
    /// The event log's folder, and the bytes and files in it (refreshed every 10 s).
    #[serde(default)]
    pub log_dir: PathBuf,
    #[serde(default)]
    pub log_bytes: u64,
    #[serde(default)]
    pub log_files: u64,
    /// A new model's probation in progress, else how the last one ended.
    #[serde(default)]
    pub probation: Option<ProbationReport>,
    /// How far `mer events pull` has fetched the event log, when, and by which host key.
    #[serde(default)]
    pub last_pull: Option<Pulled>,
}

impl StatusReport {
    pub fn record_event(&mut self, event: &Event) {
        self.events += 1;
        if self.last_events.len() == LAST_EVENTS {
            self.last_events.pop_front();
        }
        self.last_events.push_back(event.clone());
    }
}

/// The daemon's status: written by the capture loop and the push listener, read by both sockets.
pub type SharedStatus = Arc<Mutex<StatusReport>>;

pub fn update(status: &SharedStatus, f: impl FnOnce(&mut StatusReport)) {
    f(&mut status.lock().unwrap_or_else(|p| p.into_inner()));
}

/// The serving side, owned by the capture loop.
pub struct ControlSocket {
    path: PathBuf,
    trigger: Arc<AtomicBool>,
}

impl ControlSocket {
    /// Listens on `path`, replacing a socket left behind by a previous run (but refusing to
    /// replace anything else, or a socket another daemon still answers on). The directory must
    /// exist: under systemd the unit's RuntimeDirectory makes it, and a missing one is a mistake
    /// in the configuration, not something to paper over.
    pub fn start(path: &Path, status: SharedStatus, session: Session) -> Result<ControlSocket> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
            return Err(Error::InvalidArgument(format!(
                "the control socket's directory {} does not exist; create it or change control.socket \
                 (under systemd, RuntimeDirectory=merd in deploy/merd.service makes /run/merd)",
                dir.display()
            )));
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(Error::InvalidArgument(format!("{} exists and is not a socket; refusing to replace it", path.display())));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(Error::InvalidArgument(format!("another merd is already listening on {}", path.display())));
            }
            std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
        }
        let listener = UnixListener::bind(path).map_err(|e| Error::io(path, e))?;
        let trigger = Arc::new(AtomicBool::new(false));
        let (s, t) = (status.clone(), trigger.clone());
        let clients = Arc::new(AtomicUsize::new(0));
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    if clients.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < MAX_CLIENTS).then_some(n + 1)).is_err() {
                        warn!("control socket: {MAX_CLIENTS} clients already being served, one turned away");
                        reply(&stream, &error_reply(&format!("{MAX_CLIENTS} clients already being served; try again")));
                        continue;
                    }
                    // Counted until its thread ends, or at once if the thread cannot start.
                    let client = ClientGuard(Arc::clone(&clients));
                    let (s, t, session) = (s.clone(), t.clone(), session.clone());
                    let _ = std::thread::Builder::new().name("control-client".into()).spawn(move || {
                        let _client = client;
                        answer(&stream, &s, &t, &session);
                    });
                }
            })
            .map_err(|e| Error::InvalidArgument(format!("cannot start the control thread: {e}")))?;
        Ok(ControlSocket { path: path.to_path_buf(), trigger })
    }

    /// True once after each `merd trigger`.
    pub fn take_trigger(&self) -> bool {
        self.trigger.swap(false, Ordering::Relaxed)
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One client among those being served.
struct ClientGuard(Arc<AtomicUsize>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn answer(stream: &UnixStream, status: &Mutex<StatusReport>, trigger: &AtomicBool, session: &Session) {
    let response = match read_request(stream) {
        Ok(line) => match line.trim() {
            "status" => {
                let report = status.lock().unwrap_or_else(|p| p.into_inner());
                serde_json::to_string(&*report).unwrap_or_else(|e| error_reply(&e.to_string()))
            }
            "trigger" => {
                trigger.store(true, Ordering::Relaxed);
                r#"{"ok":true}"#.to_string()
            }
            "session new" => {
                let id = session.renew();
                status.lock().unwrap_or_else(|p| p.into_inner()).session = id.clone();
                info!("session {id} started");
                serde_json::json!({ "session": id }).to_string()
            }
            other => error_reply(&format!("unknown command {}; use status, trigger or session new", quote(other))),
        },
        Err(rule) => {
            warn!("control socket: {rule}, refused");
            error_reply(&rule)
        }
    };
    reply(stream, &response);
}

/// One line of at most [`MAX_REQUEST_BYTES`], complete within [`REQUEST_DEADLINE`]; or the
/// rule it broke.
fn read_request(stream: &UnixStream) -> std::result::Result<String, String> {
    let deadline = Deadline::new(stream, Instant::now() + REQUEST_DEADLINE);
    let mut line = Vec::new();
    match BufReader::new(deadline.take(MAX_REQUEST_BYTES as u64 + 1)).read_until(b'\n', &mut line) {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            return Err(format!("request not complete within {} s", REQUEST_DEADLINE.as_secs_f64()));
        }
        Err(e) => return Err(format!("cannot read the request: {e}")),
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() > MAX_REQUEST_BYTES {
        return Err(format!("request longer than {MAX_REQUEST_BYTES} bytes"));
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// The start of what a client sent, escaped, for a reply that must not echo it whole.
fn quote(text: &str) -> String {
    let start: String = text.chars().take(QUOTED_CHARS).collect();
    if start.len() < text.len() { format!("{start:?}…") } else { format!("{start:?}") }
}

fn error_reply(reason: &str) -> String {
    serde_json::json!({ "error": reason }).to_string()
}

fn reply(mut stream: &UnixStream, line: &str) {
    let _ = stream.set_write_timeout(Some(REQUEST_DEADLINE));
    let _ = stream.write_all(format!("{line}\n").as_bytes());
}

/// The client side: sends one command and returns the daemon's JSON reply.
pub fn request(path: &Path, command: &str) -> Result<String> {
    let io = |e| Error::io(path, e);
    let mut stream = UnixStream::connect(path).map_err(io)?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(io)?;
    stream.write_all(format!("{command}\n").as_bytes()).map_err(io)?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).map_err(io)?;
    Ok(reply.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_trigger_and_session_over_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("merd.sock");
        let status = SharedStatus::default();
        let session = Session::start();
        let socket = ControlSocket::start(&path, status.clone(), session.clone()).unwrap();
        update(&status, |s| {
            s.frames = 42;
            s.model_version = "m-1".into();
        });
        let report: StatusReport = serde_json::from_str(&request(&path, "status").unwrap()).unwrap();
        assert_eq!((report.frames, report.model_version.as_str()), (42, "m-1"));
        assert!(!socket.take_trigger());
        assert_eq!(request(&path, "trigger").unwrap(), r#"{"ok":true}"#);
        assert!(socket.take_trigger() && !socket.take_trigger());
        assert_eq!(request(&path, "reboot").unwrap(), r#"{"error":"unknown command \"reboot\"; use status, trigger or session new"}"#);
        let before = session.id();
        let reply: serde_json::Value = serde_json::from_str(&request(&path, "session new").unwrap()).unwrap();
        assert_ne!(reply["session"].as_str().unwrap(), before);
        assert_eq!(reply["session"].as_str().unwrap(), session.id(), "events are stamped with the new session from now on");
        let report: StatusReport = serde_json::from_str(&request(&path, "status").unwrap()).unwrap();
        assert_eq!(report.session, session.id());

        // A second daemon on the same path is refused; after the first stops, the stale socket
        // file is replaced.
        assert!(ControlSocket::start(&path, status.clone(), Session::start()).err().unwrap().to_string().contains("already listening"));
        let stale = std::os::unix::net::UnixListener::bind(dir.path().join("stale.sock")).unwrap();
        drop(stale);
        let again = ControlSocket::start(&dir.path().join("stale.sock"), status.clone(), Session::start()).unwrap();
        drop(again);
        drop(socket);
        assert!(!path.exists());
        assert!(request(&path, "status").is_err());
        std::fs::write(dir.path().join("file"), "x").unwrap();
        assert!(
            ControlSocket::start(&dir.path().join("file"), status, Session::start()).err().unwrap().to_string().contains("not a socket")
        );
    }

    #[test]
    fn a_missing_directory_is_refused_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("run");
        let e = ControlSocket::start(&missing.join("merd.sock"), SharedStatus::default(), Session::start()).err().unwrap().to_string();
        assert!(e.contains(&format!("{} does not exist", missing.display())), "{e}");
        assert!(!missing.exists());
    }

    #[test]
    fn long_requests_are_refused_and_never_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("merd.sock");
        let _socket = ControlSocket::start(&path, SharedStatus::default(), Session::start()).unwrap();

        // A megabyte on one line: refused after the first 4097 bytes, and none of it comes back.
        let stream = UnixStream::connect(&path).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            let mut line = vec![b'x'; 1 << 20];
            line.push(b'\n');
            // The daemon stops reading and hangs up; the rest of the line then fails to send.
            writer.write_all(&line).is_err()
        });
        let mut reply = String::new();
        BufReader::new(&stream).read_line(&mut reply).unwrap();
        assert_eq!(reply, "{\"error\":\"request longer than 4096 bytes\"}\n");
        drop(stream);
        assert!(sender.join().unwrap(), "the daemon did not read the whole megabyte");

        // Within the limit but unknown: only its start is quoted.
        let reply = request(&path, &"y".repeat(MAX_REQUEST_BYTES)).unwrap();
        assert!(reply.contains("unknown command") && reply.contains(&"y".repeat(QUOTED_CHARS)), "{reply}");
        assert!(reply.len() < 120, "{reply}");
        let reply = request(&path, "\u{1b}[2J\u{7}").unwrap();
        assert!(reply.contains(r#"\\u{1b}[2J\\u{7}"#), "control characters are escaped: {reply}");
    }

    #[test]
    fn a_trickling_client_holds_up_nobody_and_is_cut_off_at_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("merd.sock");
        let status = SharedStatus::default();
        let _socket = ControlSocket::start(&path, status.clone(), Session::start()).unwrap();
        update(&status, |s| s.frames = 7);

        let started = Instant::now();
        let mut slow = UnixStream::connect(&path).unwrap();
        slow.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let trickler = std::thread::spawn(move || {
            // "status" one byte at a time, never the newline, 100 ms apart.
            for byte in b"status".iter().cycle() {
                // A write can fail once the daemon has answered and hung up; the answer is there to read.
                let sent = slow.write_all(&[*byte]).is_ok();
                let mut reply = String::new();
                match BufReader::new(&slow).read_line(&mut reply) {
                    Ok(_) => return (started.elapsed(), reply),
                    Err(e) if sent && matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => panic!("{e}"),
                }
                assert!(started.elapsed() < Duration::from_secs(6), "the trickling client was never cut off");
            }
            unreachable!()
        });
        std::thread::sleep(Duration::from_millis(300));
        let asked = Instant::now();
        let report: StatusReport = serde_json::from_str(&request(&path, "status").unwrap()).unwrap();
        assert_eq!(report.frames, 7);
        assert!(asked.elapsed() < Duration::from_millis(500), "status waited {:?} behind the trickling client", asked.elapsed());

        let (cut, reply) = trickler.join().unwrap();
        assert!(cut >= REQUEST_DEADLINE && cut < REQUEST_DEADLINE + Duration::from_secs(2), "cut off after {cut:?}");
        assert_eq!(reply, "{\"error\":\"request not complete within 2 s\"}\n");
    }
}
