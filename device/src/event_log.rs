//! The durable event log: append-only segment files in one directory.
//!
//! A segment (`events-000001.log`, …) is an 8-byte header and then records, each a little-endian
//! u32 payload length, a u32 CRC-32 of the payload and the payload (an [`Event`] in postcard).
//! A segment grows up to a configured size, then the next one starts. A crash or power cut can
//! leave the newest segment ending in a partial record: opening the log moves those bytes aside
//! into `<segment>.torn-<offset>` and truncates the segment to its last complete record, so
//! every complete record is kept and nothing is silently thrown away.
//!
//! Each record is stamped as it is appended: the next sequence number (one more than the
//! highest in the log, so numbers are never reused, even after damage), the device id and the
//! current [`Session`].
//!
//! Retention ([`Retention`], `[log] keep_days` and `max_bytes`) removes whole closed segments,
//! oldest first, at start and whenever a segment is closed: a segment whose events have all
//! been pulled (`pulled.json`, written when `mer events pull` fetches) once it is older than
//! `keep_days` or the log is over `max_bytes`; a segment not yet pulled only when the log is
//! over `max_bytes`, the disk limit, and then its events are counted as lost and logged.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mer_shared::event::Event;
use mer_shared::{Error, Result};
use serde::{Deserialize, Serialize};

const HEADER: &[u8; 8] = b"MEREVT1\n";
const RECORD_HEAD: usize = 8;
/// No event comes close; a larger length field means the bytes are not a record.
const MAX_RECORD: usize = 1 << 20;

/// When appended records are forced to the storage device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// After every record: nothing logged is lost to a power cut.
    Always,
    /// After every n records (and on rotation and close): up to n − 1 records at risk.
    EveryRecords(u32),
    /// Left to the operating system.
    Never,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogConfig {
    pub dir: PathBuf,
    /// A segment is closed and the next one started before it would exceed this size.
    pub max_segment_bytes: u64,
    pub fsync: FsyncPolicy,
}

/// What opening the log found and repaired.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recovery {
    pub segments: usize,
    pub records: u64,
    /// (segment, offset, bytes) of a torn tail that was moved aside.
    pub torn_tail: Option<(PathBuf, u64, u64)>,
}

#[derive(Debug)]
pub struct EventLog {
    config: LogConfig,
    file: File,
    segment: u64,
    segment_len: u64,
    unsynced: u32,
    next_seq: u64,
    device: String,
    session: Session,
    retention: Retention,
    /// Events lost to the disk limit before they were pulled, since the log was opened.
    pub unpulled_removed: u64,
}

/// How far the log has been pulled: `pulled.json` in its folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pulled {
    /// The highest sequence number a host said it holds (with every one before it).
    pub through: u64,
    pub at_unix_ms: i64,
    /// The key of the host that pulled.
    pub by: String,
}

const PULLED: &str = "pulled.json";

/// What `pulled.json` in `dir` says (nothing when missing or unreadable).
pub fn read_pulled(dir: &Path) -> Option<Pulled> {
    std::fs::read(dir.join(PULLED)).ok().and_then(|b| serde_json::from_slice(&b).ok())
}

/// Records that a host holds every event up to `through` (never less than recorded before).
pub fn record_pulled(dir: &Path, through: u64, by: &str, at_unix_ms: i64) -> Result<Pulled> {
    let through = through.max(read_pulled(dir).map_or(0, |p| p.through));
    let pulled = Pulled { through, at_unix_ms, by: by.to_string() };
    mer_shared::atomic_file::write(dir.join(PULLED), &serde_json::to_vec(&pulled).expect("always encodes"))?;
    Ok(pulled)
}

/// When closed segments may go (both off by default: the log keeps everything).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Retention {
    /// Pulled segments older than this many days are removed.
    pub keep_days: Option<f64>,
    /// Above this many bytes the oldest segments are removed, pulled or not (events not pulled
    /// yet are then counted and logged as lost).
    pub max_bytes: Option<u64>,
}

/// What retention removed in one pass.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Removed {
    pub segments: Vec<PathBuf>,
    /// Events in removed segments that had not been pulled.
    pub unpulled_events: u64,
}

/// The session events are stamped with, shared with whatever starts new ones (`merd session
/// new` on the control socket).
#[derive(Debug, Clone, Default)]
pub struct Session(Arc<Mutex<String>>);

impl Session {
    /// A session with a fresh random id.
    pub fn start() -> Session {
        let session = Session::default();
        session.renew();
        session
    }

    /// Starts a new session; returns its id (16 hex digits).
    pub fn renew(&self) -> String {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).expect("the operating system's random source");
        let id = hex::encode(id);
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = id.clone();
        id
    }

    pub fn id(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn segment_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("events-{index:06}.log"))
}

/// The segment files of `dir` in order, with their indices.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(index) = name.strip_prefix("events-").and_then(|n| n.strip_suffix(".log")).and_then(|n| n.parse().ok()) {
            found.push((index, path));
        }
    }
    found.sort();
    Ok(found)
}

/// Bytes of a segment that are not records, and why.
#[derive(Debug, Clone, PartialEq)]
struct Gap {
    offset: u64,
    bytes: u64,
    reason: String,
}

/// The records of one segment's bytes, the stretches between them that are not records, and
/// where the last record (or the header) ends.
struct Scan {
    events: Vec<Event>,
    gaps: Vec<Gap>,
    /// Appending continues here: the bytes after it are a torn or damaged tail.
    end: u64,
}

/// The event in the record at the start of `rest`, and the record's length; or why there is
/// none.
fn record_at(rest: &[u8]) -> std::result::Result<(Event, usize), String> {
    if rest.len() < RECORD_HEAD {
        return Err(format!("a record head cut short after {} bytes", rest.len()));
    }
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    if len > MAX_RECORD {
        return Err(format!("a record length of {len} bytes, more than any event"));
    }
    let Some(payload) = rest.get(RECORD_HEAD..RECORD_HEAD + len) else {
        return Err(format!("a record of {len} bytes cut short after {} bytes", rest.len() - RECORD_HEAD));
    };
    if crc32fast::hash(payload) != crc {
        return Err("a record whose checksum does not match".to_string());
    }
    let event = Event::from_record(payload).map_err(|e| format!("a record that is not an event ({e})"))?;
    Ok((event, RECORD_HEAD + len))
}

/// Reads every record of a segment. After bytes that are not a record, reading resumes at the
/// next offset where a whole record with a matching checksum decodes to an event, so damage
/// costs the damaged bytes and nothing after them.
fn scan(bytes: &[u8]) -> Scan {
    let mut scan = Scan { events: Vec::new(), gaps: Vec::new(), end: 0 };
    let mut at = if bytes.starts_with(HEADER) {
        HEADER.len()
    } else if bytes.is_empty() {
        return scan;
    } else {
        scan.gaps.push(Gap { offset: 0, bytes: 0, reason: "no event-log header".into() });
        0
    };
    scan.end = at as u64;
    let mut damaged: Option<(usize, String)> = None;
    while at < bytes.len() {
        match record_at(&bytes[at..]) {
            Ok((event, len)) => {
                if let Some((from, reason)) = damaged.take() {
                    scan.gaps.push(Gap { offset: from as u64, bytes: (at - from) as u64, reason });
                }
                scan.events.push(event);
                at += len;
                scan.end = at as u64;
            }
            Err(reason) => {
                damaged.get_or_insert((at, reason));
                at += 1;
            }
        }
    }
    if let Some((from, reason)) = damaged {
        scan.gaps.push(Gap { offset: from as u64, bytes: (bytes.len() - from) as u64, reason });
    }
    // A missing header is reported together with whatever follows it up to the first record.
    if let [first, second, ..] = &scan.gaps[..]
        && first.bytes == 0
        && second.offset == 0
    {
        scan.gaps.remove(0);
        scan.gaps[0].reason = format!("no event-log header; {}", scan.gaps[0].reason);
    }
    scan
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))
}

impl EventLog {
    /// Opens (creating if needed) the log in `config.dir`, repairing a torn tail of the newest
    /// segment, and appends after its last complete record.
    pub fn open(config: LogConfig) -> Result<(EventLog, Recovery)> {
        if config.max_segment_bytes < (HEADER.len() + RECORD_HEAD) as u64 {
            return Err(Error::InvalidArgument(format!("max_segment_bytes {} is too small for any record", config.max_segment_bytes)));
        }
        std::fs::create_dir_all(&config.dir).map_err(|e| Error::io(&config.dir, e))?;
        let existing = segments(&config.dir)?;
        let mut recovery = Recovery { segments: existing.len(), ..Recovery::default() };
        let mut last_seq = 0;
        for (_, path) in existing.iter().rev().skip(1) {
            let events = scan(&read(path)?).events;
            recovery.records += events.len() as u64;
            last_seq = events.iter().map(|e| e.seq).fold(last_seq, u64::max);
        }
        let (segment, file, segment_len) = match existing.last() {
            None => {
                let (file, len) = EventLog::create_segment(&config.dir, 1)?;
                recovery.segments = 1;
                (1, file, len)
            }
            Some((index, path)) => {
                let bytes = read(path)?;
                let found = scan(&bytes);
                recovery.records += found.events.len() as u64;
                last_seq = found.events.iter().map(|e| e.seq).fold(last_seq, u64::max);
                let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| Error::io(path, e))?;
                // Damage between records stays where it is (reading skips it); only what follows
                // the last record is moved aside, so appends continue after an intact record.
                let mut len = found.end;
                if len < bytes.len() as u64 || len == 0 {
                    if len < bytes.len() as u64 {
                        let aside = path.with_extension(format!("log.torn-{len}"));
                        std::fs::write(&aside, &bytes[len as usize..]).map_err(|e| Error::io(&aside, e))?;
                        recovery.torn_tail = Some((path.clone(), len, bytes.len() as u64 - len));
                    }
                    if len == 0 {
                        // Created but never given its header (or not a segment at all).
                        file.write_all(HEADER).map_err(|e| Error::io(path, e))?;
                        len = HEADER.len() as u64;
                    }
                    file.set_len(len).map_err(|e| Error::io(path, e))?;
                    file.sync_all().map_err(|e| Error::io(path, e))?;
                    sync_dir(&config.dir)?;
                }
                file.seek(SeekFrom::Start(len)).map_err(|e| Error::io(path, e))?;
                (*index, file, len)
            }
        };
        // Records from before sequence numbers existed count too, so numbers stay unique.
        let next_seq = last_seq.max(recovery.records) + 1;
        let log = EventLog {
            config,
            file,
            segment,
            segment_len,
            unsynced: 0,
            next_seq,
            device: String::new(),
            session: Session::default(),
            retention: Retention::default(),
            unpulled_removed: 0,
        };
        Ok((log, recovery))
    }

    /// Applies `retention` now and whenever a segment is closed.
    pub fn with_retention(mut self, retention: Retention) -> Result<EventLog> {
        self.retention = retention;
        self.retain()?;
        Ok(self)
    }

    /// Removes the closed segments retention lets go (see the module notes).
    pub fn retain(&mut self) -> Result<Removed> {
        let removed = apply_retention(&self.config.dir, self.segment, self.retention, std::time::SystemTime::now())?;
        self.unpulled_removed += removed.unpulled_events;
        for segment in &removed.segments {
            tracing::info!("event log: removed {} (retention)", segment.display());
        }
        if removed.unpulled_events > 0 {
            tracing::warn!(
                "event log: over log.max_bytes, {} events not yet pulled were removed ({} since the start); pull more often or \
                 raise the limit",
                removed.unpulled_events,
                self.unpulled_removed
            );
        }
        Ok(removed)
    }

    /// Stamps every record from now on with this device id and the session's current id.
    pub fn identify(&mut self, device: &str, session: Session) {
        self.device = device.to_string();
        self.session = session;
    }

    fn create_segment(dir: &Path, index: u64) -> Result<(File, u64)> {
        let path = segment_path(dir, index);
        let mut file = OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| Error::io(&path, e))?;
        file.write_all(HEADER).and_then(|_| file.sync_all()).map_err(|e| Error::io(&path, e))?;
        sync_dir(dir)?;
        Ok((file, HEADER.len() as u64))
    }

    fn current_path(&self) -> PathBuf {
        segment_path(&self.config.dir, self.segment)
    }

    /// Appends one record, stamped with the next sequence number, the device and the session;
    /// the whole record goes out in one write. Returns the event as recorded.
    pub fn append(&mut self, event: &Event) -> Result<Event> {
        let event = Event { device: self.device.clone(), session: self.session.id(), seq: self.next_seq, ..event.clone() };
        let payload = event.to_record().map_err(|e| Error::InvalidArgument(format!("cannot encode the event: {e}")))?;
        let mut record = Vec::with_capacity(RECORD_HEAD + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        if self.segment_len + record.len() as u64 > self.config.max_segment_bytes && self.segment_len > HEADER.len() as u64 {
            self.rotate()?;
        }
        let path = self.current_path();
        if let Err(e) = self.file.write_all(&record) {
            // A short write (a full disk) must not leave a partial record for the next append
            // to build on: cut the segment back to where this record began.
            let _ = self.file.set_len(self.segment_len);
            let _ = self.file.seek(SeekFrom::Start(self.segment_len));
            return Err(Error::io(path, e));
        }
        self.segment_len += record.len() as u64;
        self.unsynced += 1;
        self.next_seq += 1;
        match self.config.fsync {
            FsyncPolicy::Always => self.sync()?,
            FsyncPolicy::EveryRecords(n) if self.unsynced >= n.max(1) => self.sync()?,
            _ => {}
        }
        Ok(event)
    }

    /// Forces everything appended so far to the storage device.
    pub fn sync(&mut self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(self.current_path(), e))?;
        self.unsynced = 0;
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        self.sync()?;
        let (file, len) = EventLog::create_segment(&self.config.dir, self.segment + 1)?;
        self.file = file;
        self.segment += 1;
        self.segment_len = len;
        if let Err(e) = self.retain() {
            tracing::warn!("event log: retention failed ({e}); segments are kept");
        }
        Ok(())
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        if self.config.fsync != FsyncPolicy::Never {
            let _ = self.file.sync_data();
        }
    }
}

/// Removes the segments of `dir` before `current` that `retention` lets go at `now`.
fn apply_retention(dir: &Path, current: u64, retention: Retention, now: std::time::SystemTime) -> Result<Removed> {
    let mut removed = Removed::default();
    if retention == Retention::default() {
        return Ok(removed);
    }
    let pulled = read_pulled(dir).map_or(0, |p| p.through);
    let all = segments(dir)?;
    let mut total: u64 = all.iter().filter_map(|(_, p)| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    // Oldest first, and never past a segment that stays: pulls go in sequence order, so the
    // pulled segments are always the oldest ones.
    for (_, path) in all.iter().filter(|(index, _)| *index < current) {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let events = scan(&read(path)?).events;
        let unpulled = events.iter().filter(|e| e.seq == 0 || e.seq > pulled).count() as u64;
        let age_days = now.duration_since(meta.modified().unwrap_or(now)).map_or(0.0, |d| d.as_secs_f64() / 86_400.0);
        let expired = unpulled == 0 && retention.keep_days.is_some_and(|days| age_days > days);
        let over_limit = retention.max_bytes.is_some_and(|max| total > max);
        if !(expired || over_limit) {
            break;
        }
        std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
        total -= meta.len();
        removed.unpulled_events += unpulled;
        removed.segments.push(path.clone());
    }
    if !removed.segments.is_empty() {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// What reading found wrong in a log directory.
#[derive(Debug, Clone, PartialEq)]
pub enum LogDamage {
    /// Bytes of a segment that are not records (a torn tail, or damage between records).
    Bytes { segment: PathBuf, offset: u64, bytes: u64, reason: String },
    /// A segment missing from the numbered sequence (deleted, or lost).
    MissingSegment { segment: PathBuf },
}

impl std::fmt::Display for LogDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogDamage::Bytes { segment, offset, bytes, reason } => {
                write!(f, "{}: bytes {offset}–{}: {reason}; {bytes} bytes skipped", segment.display(), offset + bytes)
            }
            LogDamage::MissingSegment { segment } => {
                write!(f, "{}: missing from the sequence of segments; its events are lost", segment.display())
            }
        }
    }
}

/// Every intact record in `dir`, oldest first, and each stretch of bytes that is not a record
/// and each segment missing from the sequence (the records after damage are still read).
pub fn read_events(dir: &Path) -> Result<(Vec<Event>, Vec<LogDamage>)> {
    if !dir.is_dir() {
        return Err(Error::Data { path: dir.to_path_buf(), reason: "no event log here (not a directory)".into() });
    }
    let mut events = Vec::new();
    let mut damage = Vec::new();
    let mut previous: Option<u64> = None;
    for (index, path) in segments(dir)? {
        for missing in previous.map_or(1, |p| p + 1)..index {
            damage.push(LogDamage::MissingSegment { segment: segment_path(dir, missing) });
        }
        previous = Some(index);
        let found = scan(&read(&path)?);
        events.extend(found.events);
        damage.extend(found.gaps.into_iter().map(|g| LogDamage::Bytes {
            segment: path.clone(),
            offset: g.offset,
            bytes: g.bytes,
            reason: g.reason,
        }));
    }
    Ok((events, damage))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mer_shared::event::{EventSource, LatencyBreakdown};

    #[test]
    fn retention_removes_pulled_segments_past_their_age_and_others_only_over_the_disk_limit() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { dir: dir.path().to_path_buf(), max_segment_bytes: 400, fsync: FsyncPolicy::Never };
        let (mut log, _) = EventLog::open(config.clone()).unwrap();
        (0..12).for_each(|i| {
            log.append(&event(i)).unwrap();
        });
        let month_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 86_400);
        for (_, path) in segments(dir.path()).unwrap() {
            File::options().write(true).open(&path).unwrap().set_modified(month_ago).unwrap();
        }
        let seqs = |dir: &Path| read_events(dir).unwrap().0.iter().map(|e| e.seq).collect::<Vec<_>>();
        let week = Retention { keep_days: Some(7.0), max_bytes: None };
        // Old, but nothing pulled: everything stays.
        let mut log = log.with_retention(week).unwrap();
        assert_eq!(seqs(dir.path()), (1..=12).collect::<Vec<_>>());
        // Pulled through 5: the old segments holding only records up to 5 go, no further.
        record_pulled(dir.path(), 5, "host", 0).unwrap();
        let removed = log.retain().unwrap();
        assert!(!removed.segments.is_empty() && removed.unpulled_events == 0, "{removed:?}");
        let left = seqs(dir.path());
        assert!(left[0] <= 6 && left[0] > 1 && *left.last().unwrap() == 12, "{left:?}");
        // Over the disk limit: the oldest go even unpulled, counted as lost.
        drop(log);
        let (log, _) = EventLog::open(config).unwrap();
        let mut log = log.with_retention(Retention { keep_days: None, max_bytes: Some(600) }).unwrap();
        let total: u64 = segments(dir.path()).unwrap().iter().map(|(_, p)| std::fs::metadata(p).unwrap().len()).sum();
        assert!(total <= 600 || segments(dir.path()).unwrap().len() == 1, "{total}");
        assert!(log.unpulled_removed > 0);
        assert_eq!(log.append(&event(12)).unwrap().seq, 13, "numbers go on after removals");
    }

    /// `event(i)` as the log records it, the `seq`-th record.
    fn recorded(i: u32, seq: u64) -> Event {
        Event { seq, ..event(i) }
    }

    #[test]
    fn records_are_numbered_once_and_stamped_with_device_and_session() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { dir: dir.path().to_path_buf(), max_segment_bytes: 300, fsync: FsyncPolicy::Never };
        let session = Session::start();
        let first = session.id();
        {
            let (mut log, _) = EventLog::open(config.clone()).unwrap();
            log.identify("ab12:cd34", session.clone());
            assert_eq!(log.append(&event(0)).unwrap().seq, 1);
            let second = session.renew();
            assert_ne!(second, first);
            let recorded = log.append(&event(1)).unwrap();
            assert_eq!((recorded.seq, recorded.device.as_str(), recorded.session.as_str()), (2, "ab12:cd34", second.as_str()));
            (2..6).for_each(|i| {
                log.append(&event(i)).unwrap();
            });
        }
        // The oldest segment removed (as retention does): numbers go on, never reused.
        let all = segments(dir.path()).unwrap();
        assert!(all.len() > 1);
        std::fs::remove_file(&all[0].1).unwrap();
        let (mut log, _) = EventLog::open(config).unwrap();
        assert_eq!(log.append(&event(9)).unwrap().seq, 7);
        drop(log);
        let (events, _) = read_events(dir.path()).unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]) && seqs.last() == Some(&7), "{seqs:?}");
        assert!(events.iter().all(|e| e.device == "ab12:cd34" || e.seq == 7));
    }

    fn event(i: u32) -> Event {
        Event {
            wall_time_ms: 1_790_000_000_000 + i as i64,
            onset_s: i as f64,
            apex_s: i as f64 + 0.1,
            offset_s: i as f64 + 0.25,
            source: if i.is_multiple_of(2) { EventSource::Spotted } else { EventSource::Triggered },
            label: format!("class-{}", i % 3),
            classes: vec!["a".into(), "b".into(), "c".into()],
            probabilities: vec![0.5, 0.25, 0.25],
            model_version: "test-1".into(),
            latency: LatencyBreakdown { spotting_ms: 300.0, preprocess_ms: 3.0, inference_ms: 30.0, total_ms: 40.0 + i as f32 },
            foreign_inputs: false,
            device: String::new(),
            session: String::new(),
            seq: 0,
        }
    }

    fn config(dir: &Path, max_segment_bytes: u64) -> LogConfig {
        LogConfig { dir: dir.to_path_buf(), max_segment_bytes, fsync: FsyncPolicy::Always }
    }

    fn last_segment(dir: &Path) -> PathBuf {
        segments(dir).unwrap().pop().unwrap().1
    }

    #[test]
    fn records_survive_rotation_and_reopening_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, recovery) = EventLog::open(config(dir.path(), 400)).unwrap();
            assert_eq!(recovery, Recovery { segments: 1, ..Recovery::default() });
            (0..10).for_each(|i| {
                log.append(&event(i)).unwrap();
            });
        }
        let (mut log, recovery) = EventLog::open(config(dir.path(), 400)).unwrap();
        assert!(recovery.segments >= 3, "{recovery:?}");
        assert_eq!(recovery.records, 10);
        assert_eq!(recovery.torn_tail, None);
        log.append(&event(10)).unwrap();
        drop(log);
        let (events, problems) = read_events(dir.path()).unwrap();
        assert_eq!(events, (0..11).map(|i| recorded(i, i as u64 + 1)).collect::<Vec<_>>());
        assert!(problems.is_empty(), "{problems:?}");
        for (_, path) in segments(dir.path()).unwrap() {
            assert!(std::fs::metadata(path).unwrap().len() <= 400);
        }
    }

    #[test]
    fn a_torn_tail_is_moved_aside_and_every_complete_record_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = EventLog::open(config(dir.path(), 1 << 20)).unwrap();
        (0..3).for_each(|i| {
            log.append(&event(i)).unwrap();
        });
        drop(log);
        // The last record loses its final bytes, as in a power cut mid-write.
        let path = last_segment(dir.path());
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 5]).unwrap();
        let (_, problems) = read_events(dir.path()).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].to_string().contains("cut short"), "{problems:?}");

        let (mut log, recovery) = EventLog::open(config(dir.path(), 1 << 20)).unwrap();
        assert_eq!(recovery.records, 2);
        let (torn, offset, bytes) = recovery.torn_tail.clone().unwrap();
        assert_eq!(torn, path);
        let aside = std::fs::read(path.with_extension(format!("log.torn-{offset}"))).unwrap();
        assert_eq!(aside.len() as u64, bytes);
        assert_eq!(&full[offset as usize..full.len() - 5], &aside[..]);
        log.append(&event(7)).unwrap();
        drop(log);
        let (events, problems) = read_events(dir.path()).unwrap();
        // The record after the repair continues the sequence.
        assert_eq!(events, vec![recorded(0, 1), recorded(1, 2), recorded(7, 3)]);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn garbage_and_empty_segments_are_repaired_too() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = EventLog::open(config(dir.path(), 1 << 20)).unwrap();
        log.append(&event(0)).unwrap();
        drop(log);
        let path = last_segment(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0xff; 13]);
        std::fs::write(&path, &bytes).unwrap();
        let (_, recovery) = EventLog::open(config(dir.path(), 1 << 20)).unwrap();
        assert_eq!((recovery.records, recovery.torn_tail.map(|t| t.2)), (1, Some(13)));

        // A crash between creating a segment and writing its header leaves an empty file.
        std::fs::write(segment_path(dir.path(), 2), b"").unwrap();
        let (mut log, recovery) = EventLog::open(config(dir.path(), 1 << 20)).unwrap();
        assert_eq!(recovery.records, 1);
        log.append(&event(1)).unwrap();
        drop(log);
        assert_eq!(read_events(dir.path()).unwrap().0, vec![recorded(0, 1), recorded(1, 2)]);
    }

    #[test]
    fn damage_costs_only_the_damaged_record_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = EventLog::open(config(dir.path(), 400)).unwrap();
        (0..8).for_each(|i| {
            log.append(&event(i)).unwrap();
        });
        drop(log);
        let first = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&first).unwrap();
        let record_len = RECORD_HEAD + u32::from_le_bytes(bytes[HEADER.len()..HEADER.len() + 4].try_into().unwrap()) as usize;
        bytes[HEADER.len() + RECORD_HEAD + 2] ^= 0x40; // inside the first record's payload
        std::fs::write(&first, &bytes).unwrap();
        let (events, damage) = read_events(dir.path()).unwrap();
        assert_eq!(events, (1..8).map(|i| recorded(i, i as u64 + 1)).collect::<Vec<_>>());
        assert_eq!(
            damage,
            vec![LogDamage::Bytes {
                segment: first.clone(),
                offset: HEADER.len() as u64,
                bytes: record_len as u64,
                reason: "a record whose checksum does not match".into()
            }]
        );
        assert!(damage[0].to_string().contains("events-000001.log: bytes 8–"), "{}", damage[0]);
        // Opening for append leaves sealed segments alone.
        let (_, recovery) = EventLog::open(config(dir.path(), 400)).unwrap();
        assert_eq!(recovery.torn_tail, None);
        assert_eq!(std::fs::read(&first).unwrap(), bytes);

        // Lengths of 0 and 0xFFFFFFFF in the newest segment: appends go on after the last intact
        // record, and the intact records before and after the damage are all read.
        let newest = last_segment(dir.path());
        let mut bytes = std::fs::read(&newest).unwrap();
        bytes[HEADER.len()..HEADER.len() + 4].copy_from_slice(&0u32.to_le_bytes());
        std::fs::write(&newest, &bytes).unwrap();
        let (mut log, recovery) = EventLog::open(config(dir.path(), 400)).unwrap();
        assert_eq!(recovery.torn_tail, None, "damage between records is not a tail");
        log.append(&event(8)).unwrap();
        drop(log);
        let (events, damage) = read_events(dir.path()).unwrap();
        assert_eq!(events.last(), Some(&recorded(8, 9)), "numbered after the highest record, damaged ones included");
        assert_eq!(damage.len(), 2, "{damage:?}");

        // A deleted middle segment is named.
        let middle = segment_path(dir.path(), 2);
        std::fs::remove_file(&middle).unwrap();
        let (_, damage) = read_events(dir.path()).unwrap();
        assert!(damage.contains(&LogDamage::MissingSegment { segment: middle }), "{damage:?}");
    }

    /// A record of a freshly written log: (segment index, start, end, event).
    type Placed = (u64, usize, usize, Event);

    /// Where each record of a freshly written log lies.
    fn layout(dir: &Path) -> Vec<Placed> {
        let mut out = Vec::new();
        for (index, path) in segments(dir).unwrap() {
            let bytes = std::fs::read(path).unwrap();
            let mut at = HEADER.len();
            while at < bytes.len() {
                let (event, len) = record_at(&bytes[at..]).unwrap();
                out.push((index, at, at + len, event));
                at += len;
            }
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]
        /// Random damage — a flipped byte, inserted bytes, a cut, a deleted segment — never hides
        /// a record that is still intact on disk, and never invents one.
        #[test]
        fn damage_never_hides_an_intact_record(kind in 0u8..4, segment in 1u64..4, position in 0usize..400, value in 1u8..=255, count in 1usize..40) {
            let dir = tempfile::tempdir().unwrap();
            let (mut log, _) = EventLog::open(config(dir.path(), 400)).unwrap();
            (0..20).for_each(|i| {
        log.append(&event(i)).unwrap();
    });
            drop(log);
            let records = layout(dir.path());
            proptest::prop_assert!(segments(dir.path()).unwrap().len() > 3);
            let path = segment_path(dir.path(), segment);
            let mut bytes = std::fs::read(&path).unwrap();
            let p = position % bytes.len();
            // Which records the damage touches.
            let hit: Box<dyn Fn(&Placed) -> bool> = match kind {
                0 => {
                    bytes[p] ^= value;
                    Box::new(move |r| r.0 == segment && r.1 <= p && p < r.2)
                }
                1 => {
                    bytes.splice(p..p, std::iter::repeat_n(value, count));
                    Box::new(move |r| r.0 == segment && r.1 < p && p < r.2)
                }
                2 => {
                    bytes.truncate(p);
                    Box::new(move |r| r.0 == segment && r.2 > p)
                }
                _ => Box::new(move |r| r.0 == segment),
            };
            if kind == 3 {
                std::fs::remove_file(&path).unwrap();
            } else {
                std::fs::write(&path, &bytes).unwrap();
            }
            let intact: Vec<Event> = records.iter().filter(|r| !hit(r)).map(|r| r.3.clone()).collect();
            let (events, damage) = read_events(dir.path()).unwrap();
            proptest::prop_assert_eq!(&events, &intact);
            // A flip, an insertion and a deleted segment (never the newest) always show; a cut at
            // a record boundary of a sealed segment looks like a shorter segment.
            if kind != 2 {
                proptest::prop_assert!(!damage.is_empty());
            }
        }
    }

    #[test]
    fn fsync_policy_reads_from_config_text() {
        let policies: Vec<FsyncPolicy> = serde_json::from_str(r#"["always", "never", {"every_records": 16}]"#).unwrap();
        assert_eq!(policies, [FsyncPolicy::Always, FsyncPolicy::Never, FsyncPolicy::EveryRecords(16)]);
    }
}
