//! `mer events pull`: each device's events into one JSON-lines file per device, fetched over the
//! fleet channel, each (device, sequence number) once.
//!
//! The file is the state: its last complete line names the last sequence number held, and the
//! next pull asks for what follows (which also tells the device it may let go of what came
//! before, see its retention). A line cut short by an interrupted pull is dropped first, and
//! every page is written and synced before the next is asked for, so a pull killed at any point
//! and run again leaves the same file as one that was never interrupted.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use mer_shared::event::Event;
use mer_shared::push::client::{Client, Credentials};
use mer_shared::{Error, Result};

/// What one pull from one device did.
#[derive(Debug, Clone, PartialEq)]
pub struct Pulled {
    /// The name the device gives itself, and the id its events carry.
    pub name: String,
    pub device: String,
    pub file: PathBuf,
    /// Events added to the file now.
    pub new: u64,
    /// Events in the file in all, and the highest sequence number among them.
    pub total: u64,
    pub last_seq: u64,
}

/// The device's file in `out`: its id with the colons left out.
pub fn file_for(out: &Path, device: &str) -> PathBuf {
    out.join(format!("{}.jsonl", device.replace(':', "")))
}

/// Events in `file` and the last sequence number, after dropping a last line cut short.
fn resume(file: &Path) -> Result<(u64, u64)> {
    let mut handle = match OpenOptions::new().read(true).write(true).open(file) {
        Ok(handle) => handle,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(Error::io(file, e)),
    };
    let (mut lines, mut last_seq, mut complete) = (0u64, 0u64, 0u64);
    let mut reader = BufReader::new(&handle);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(|e| Error::io(file, e))?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        let event: Event = serde_json::from_str(line.trim_end())
            .map_err(|e| Error::Data { path: file.into(), reason: format!("line {} is not an event ({e})", lines + 1) })?;
        lines += 1;
        last_seq = last_seq.max(event.seq);
        complete += n as u64;
    }
    let len = handle.metadata().map_err(|e| Error::io(file, e))?.len();
    if len > complete {
        handle.set_len(complete).and_then(|()| handle.sync_all()).map_err(|e| Error::io(file, e))?;
        tracing::info!("{}: dropped a last line cut short by an interrupted pull", file.display());
    }
    handle.seek(SeekFrom::End(0)).map_err(|e| Error::io(file, e))?;
    Ok((lines, last_seq))
}

/// Pulls everything `client`'s device recorded after what `out` holds for it (or after `since`).
pub fn pull(client: &mut Client, out: &Path, since: Option<u64>) -> Result<Pulled> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    // The id the device stamps its events with: its key's fingerprint, which the channel proved.
    let device = client.device_key().fingerprint();
    let path = file_for(out, &device);
    let (mut total, mut last_seq) = resume(&path)?;
    let held = since.unwrap_or(last_seq);
    let (stamped, mut page, mut more) = client.events(held)?;
    if stamped != device {
        return Err(Error::Push(format!("the device stamps its events {stamped:?}, not with its key's fingerprint {device}")));
    }
    let mut file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
    let mut new = 0;
    let mut through = held;
    loop {
        let fresh: Vec<&Event> = page.iter().filter(|e| e.seq > through).collect();
        append(&mut file, &path, &fresh)?;
        new += fresh.len() as u64;
        total += fresh.len() as u64;
        through = fresh.last().map_or(through, |e| e.seq);
        last_seq = last_seq.max(through);
        if !more {
            break;
        }
        (_, page, more) = client.events(through)?;
    }
    // Tells the device the file now holds everything so far.
    client.events(through)?;
    Ok(Pulled { name: client.device().to_string(), device, file: path, new, total, last_seq })
}

fn append(file: &mut File, path: &Path, events: &[&Event]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for event in events {
        text.push_str(&serde_json::to_string(event).expect("events always encode"));
        text.push('\n');
    }
    file.write_all(text.as_bytes()).and_then(|()| file.sync_data()).map_err(|e| Error::io(path, e))
}

/// Connects with `credentials` and pulls (see [`pull`]).
pub fn pull_from(address: &str, credentials: Credentials, timeout: std::time::Duration, out: &Path, since: Option<u64>) -> Result<Pulled> {
    let mut client = Client::connect(address, credentials, timeout)?;
    pull(&mut client, out, since)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_cut_short_is_dropped_and_the_last_sequence_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.jsonl");
        assert_eq!(resume(&path).unwrap(), (0, 0));
        let event = |seq| mer_shared::event::Event {
            wall_time_ms: 0,
            onset_s: 0.0,
            apex_s: 0.0,
            offset_s: 0.0,
            source: mer_shared::event::EventSource::Spotted,
            label: "a".into(),
            classes: vec!["a".into()],
            probabilities: vec![1.0],
            model_version: "m".into(),
            latency: Default::default(),
            foreign_inputs: false,
            device: "d".into(),
            session: "s".into(),
            seq,
        };
        let whole = format!("{}\n{}\n", serde_json::to_string(&event(4)).unwrap(), serde_json::to_string(&event(5)).unwrap());
        let cut = serde_json::to_string(&event(6)).unwrap();
        std::fs::write(&path, format!("{whole}{}", &cut[..cut.len() / 2])).unwrap();
        assert_eq!(resume(&path).unwrap(), (2, 5));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), whole);
        std::fs::write(&path, "not json\n").unwrap();
        assert!(resume(&path).unwrap_err().to_string().contains("line 1 is not an event"));
    }
}
