//! The daemon's local control socket: `merd status` reads what the daemon is doing and
//! `merd trigger` asks it to classify the last moments, one line of text in, one line of JSON out.
//! A Unix socket, so only local users with access to its path can reach it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mer_shared::event::Event;
use mer_shared::{Error, Result};
use serde::{Deserialize, Serialize};

/// Events kept for `merd status`.
const LAST_EVENTS: usize = 10;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
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
    /// replace anything else, or a socket another daemon still answers on).
    pub fn start(path: &Path, status: SharedStatus) -> Result<ControlSocket> {
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
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let listener = UnixListener::bind(path).map_err(|e| Error::io(path, e))?;
        let trigger = Arc::new(AtomicBool::new(false));
        let (s, t) = (status.clone(), trigger.clone());
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    // A client that connects and says nothing must not hold up the next one.
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                    let _ = answer(stream, &s, &t);
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

fn answer(stream: UnixStream, status: &Mutex<StatusReport>, trigger: &AtomicBool) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let reply = match line.trim() {
        "status" => serde_json::to_string(&*status.lock().map_err(|_| std::io::Error::other("status lock poisoned"))?)?,
        "trigger" => {
            trigger.store(true, Ordering::Relaxed);
            r#"{"ok":true}"#.to_string()
        }
        other => serde_json::json!({ "error": format!("unknown command {other:?}; use status or trigger") }).to_string(),
    };
    (&stream).write_all(format!("{reply}\n").as_bytes())
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
    fn status_and_trigger_over_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/merd.sock");
        let status = SharedStatus::default();
        let socket = ControlSocket::start(&path, status.clone()).unwrap();
        update(&status, |s| {
            s.frames = 42;
            s.model_version = "m-1".into();
        });
        let report: StatusReport = serde_json::from_str(&request(&path, "status").unwrap()).unwrap();
        assert_eq!((report.frames, report.model_version.as_str()), (42, "m-1"));
        assert!(!socket.take_trigger());
        assert_eq!(request(&path, "trigger").unwrap(), r#"{"ok":true}"#);
        assert!(socket.take_trigger() && !socket.take_trigger());
        assert!(request(&path, "reboot").unwrap().contains("unknown command"));

        // A second daemon on the same path is refused; after the first stops, the stale socket
        // file is replaced.
        assert!(ControlSocket::start(&path, status.clone()).err().unwrap().to_string().contains("already listening"));
        let stale = std::os::unix::net::UnixListener::bind(dir.path().join("stale.sock")).unwrap();
        drop(stale);
        let again = ControlSocket::start(&dir.path().join("stale.sock"), status.clone()).unwrap();
        drop(again);
        drop(socket);
        assert!(!path.exists());
        assert!(request(&path, "status").is_err());
        std::fs::write(dir.path().join("file"), "x").unwrap();
        assert!(ControlSocket::start(&dir.path().join("file"), status).err().unwrap().to_string().contains("not a socket"));
    }
}
