//! `mer devices enroll`, `mer push`, `mer devices` and `mer rollback` against a fleet of two
//! devices on loopback (the device library's store and push listener, as `merd` runs them).

use std::path::Path;
use std::sync::Arc;

use mer_device::event_log::{EventLog, FsyncPolicy, LogConfig};
use mer_device::model_store::ModelStore;
use mer_device::push_server::{ModelSwitch, PushServer, PushSettings};
use mer_shared::classifier::Classifier;
use mer_shared::event::{Event, EventSource, LatencyBreakdown};
use mer_shared::push::Health;

mod common;
use common::*;

#[path = "../../device/src/test_bundles.rs"]
mod test_bundles;
#[path = "../../device/src/test_relay.rs"]
mod test_relay;
use test_bundles::{bundle, models, site_key};
use test_relay::{Cut, breaking_relay};

struct Idle;

impl ModelSwitch for Idle {
    fn switch(&self, _: Classifier) {}
    fn health(&self) -> Health {
        Health { uptime_s: 12.0, fps: 100.0, frames: 1200, face: "fixed".into(), ..Health::default() }
    }
}

/// A device named `name` running `v0`; returns its address.
fn device(dir: &Path, name: &str) -> String {
    device_with_log(dir, name, None)
}

/// [`device`], serving pulls from the event log in `log`.
fn device_with_log(dir: &Path, name: &str, log: Option<&Path>) -> String {
    let trusted = vec![site_key().public()];
    let mut store = ModelStore::open(&dir.join(name), trusted.clone(), 3, 1).unwrap();
    let first = dir.join(format!("{name}-v0.merb"));
    std::fs::write(&first, bundle("v0", &site_key())).unwrap();
    store.adopt(&first).unwrap();
    let settings = PushSettings {
        listen: "127.0.0.1:0".into(),
        store: dir.join(name),
        key: None,
        keep: 3,
        max_bundle_mb: 64,
        timeout_s: 10.0,
        session_s: 3600.0,
        max_sessions: 4,
        name: Some(name.into()),
        probation_s: 0.0,
        probation_windows: 3,
        max_window_ms: 2000.0,
    };
    let listener = PushServer::bind(&settings).unwrap();
    let listener = match log {
        Some(log) => listener.with_event_log(log),
        None => listener,
    };
    listener.serve(store, trusted, Arc::new(Idle)).unwrap().address().to_string()
}

/// Appends `n` events to the log in `dir`.
fn log_events(dir: &Path, n: u32) {
    let config = LogConfig { dir: dir.to_path_buf(), max_segment_bytes: 64 << 10, fsync: FsyncPolicy::Never };
    let (mut log, _) = EventLog::open(config).unwrap();
    for i in 0..n {
        let event = Event {
            wall_time_ms: 1_790_000_000_000 + i as i64,
            onset_s: i as f64,
            apex_s: i as f64 + 0.1,
            offset_s: i as f64 + 0.2,
            source: EventSource::Spotted,
            label: "surprise".into(),
            classes: vec!["negative".into(), "positive".into(), "surprise".into()],
            probabilities: vec![0.2, 0.1, 0.7],
            model_version: "v0".into(),
            latency: LatencyBreakdown::default(),
            foreign_inputs: false,
            device: String::new(),
            session: String::new(),
            seq: 0,
        };
        log.append(&event).unwrap();
    }
}

#[test]
fn events_are_pulled_once_and_a_cut_pull_resumes_to_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = models().join("demo-key");
    let known = d.join("known-devices.toml");
    let log = d.join("room-a-events");
    // Enough events for several pages of a pull.
    log_events(&log, 3000);
    let a = device_with_log(d, "room-a", Some(&log));
    ok(&mer_at(&known, &["devices", "enroll", &a, "--key", s(&key)]));

    // Uninterrupted, into one folder.
    let whole = d.join("whole");
    let out = ok(&mer_at(&known, &["events", "pull", "--from", &a, "--out", s(&whole), "--key", s(&key)]));
    assert!(out.contains("room-a") && out.contains("  3000     3000      3000"), "{out}");
    // Cut mid-transfer (the connection breaks inside the second page), then run again.
    let cut = d.join("cut");
    let relay = breaking_relay(a.clone(), Cut::FromServer, 300 << 10, usize::MAX);
    // Through the relay it is the same device, with the same key.
    ok(&mer_at(&known, &["devices", "enroll", &relay, "--key", s(&key)]));
    let failed = mer_at(&known, &["events", "pull", "--from", &relay, "--out", s(&cut), "--key", s(&key)]);
    let stdout = String::from_utf8_lossy(&failed.stdout).into_owned();
    assert!(!failed.status.success(), "{stdout}");
    let files = |folder: &Path| -> Vec<(String, String)> {
        let mut found: Vec<_> = std::fs::read_dir(folder)
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
            .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap()))
            .collect();
        found.sort();
        found
    };
    let partial = files(&cut);
    let held = partial.first().map_or(0, |(_, text)| text.lines().count());
    assert!(held > 0 && held < 3000, "part of the events arrived before the cut ({held})");
    // A last line cut short, as a host killed mid-write leaves it.
    let (name, text) = &partial[0];
    std::fs::write(cut.join(name), format!("{text}{{\"wall_time_ms\":17")).unwrap();
    let out = ok(&mer_at(&known, &["events", "pull", "--from", &a, "--out", s(&cut), "--key", s(&key)]));
    assert!(out.contains(&format!("{:>6}", 3000 - held)), "{out}");
    assert_eq!(files(&cut), files(&whole), "the same file as the uninterrupted pull");

    // Again: nothing new, nothing twice. New events arrive once.
    let out = ok(&mer_at(&known, &["events", "pull", "--from", &a, "--out", s(&whole), "--key", s(&key)]));
    assert!(out.contains("     0     3000"), "{out}");
    log_events(&log, 5);
    ok(&mer_at(&known, &["events", "pull", "--from", &a, "--out", s(&whole), "--key", s(&key)]));
    let (_, text) = &files(&whole)[0];
    let seqs: Vec<u64> = text.lines().map(|l| serde_json::from_str::<Event>(l).unwrap().seq).collect();
    assert_eq!(seqs, (1..=3005).collect::<Vec<u64>>());
    let summary = std::fs::read_to_string(whole.join("summary.tsv")).unwrap();
    assert!(summary.lines().nth(1).unwrap().contains("room-a\t"), "{summary}");
    // The device knows how far it was pulled.
    let pulled = mer_device::event_log::read_pulled(&log).unwrap();
    assert_eq!(pulled.through, 3005);
    // A sequence number that never existed: refused with a reason, nothing written or recorded.
    let odd = d.join("odd");
    let out = mer_at(&known, &["events", "pull", "--from", &a, "--out", s(&odd), "--since", "99999", "--key", s(&key)]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success() && stdout.contains("ends at sequence number 3005") && stdout.contains("99999 never existed"), "{stdout}");
    assert!(files(&odd).is_empty());
    assert_eq!(mer_device::event_log::read_pulled(&log).unwrap().through, 3005);
}

/// `mer` with this test's list of enrolled devices.
fn mer_at(known: &Path, args: &[&str]) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend(["--known-devices", s(known)]);
    mer(&all)
}

#[test]
fn devices_are_enrolled_once_and_a_changed_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let known = d.join("known-devices.toml");
    let (a, b) = (device(d, "room-a"), device(d, "room-b"));
    let key = models().join("demo-key");
    let fingerprint = |room: &str| {
        let text = std::fs::read_to_string(d.join(room).join("device.key")).unwrap();
        let (device_key, _) = mer_shared::push::channel::DeviceKey::load_or_create(&d.join(room).join("device.key")).unwrap();
        assert!(text.starts_with("# merd device key"));
        device_key.public().fingerprint()
    };

    // Not enrolled yet: nothing is asked of the device.
    let out = mer_at(&known, &["devices", "--to", &a, "--key", s(&key)]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(err(&out).contains("1 of 1 devices did not report"), "{stdout}");
    assert!(stdout.contains("FAILED") && stdout.contains("is not enrolled") && stdout.contains("mer devices enroll"), "{stdout}");
    // A wrong fingerprint given out of band: not enrolled.
    let out = mer_at(&known, &["devices", "enroll", &a, "--key", s(&key), "--fingerprint", "0000:1111"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("not the fingerprint 0000:1111 given"), "{}", err(&out));
    // The right one, then both devices on first contact: each line shows the fingerprint.
    let out = ok(&mer_at(&known, &["devices", "enroll", &a, "--key", s(&key), "--fingerprint", &fingerprint("room-a")]));
    assert!(out.contains("enrolled  room-a") && out.contains(&fingerprint("room-a")), "{out}");
    let out = ok(&mer_at(&known, &["devices", "enroll", &format!("{a},{b}"), "--key", s(&key)]));
    assert!(out.contains("already enrolled  room-a") && out.contains(&format!("enrolled  room-b  key {}", fingerprint("room-b"))), "{out}");
    ok(&mer_at(&known, &["devices", "--to", &format!("{a},{b}"), "--key", s(&key)]));

    // A host key the device does not trust gets a refusal and no device data.
    let stranger = d.join("stranger");
    ok(&mer(&["keys", "generate", "-o", s(&stranger)]));
    let out = mer_at(&known, &["devices", "--to", &a, "--key", s(&stranger), "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("does not trust") && !stdout.contains("room-a") && !stdout.contains("frames"), "{stdout}");
    let out = mer(&["devices", "enroll", &a, "--key", s(&stranger), "--known-devices", s(&d.join("other.toml"))]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("does not trust"));

    // b's key as recorded for a: every command to a is refused, and enrolling again needs --replace.
    let text = std::fs::read_to_string(&known).unwrap();
    let b_key = text.split(&format!("[devices.\"{b}\"]")).nth(1).unwrap().lines().find(|l| l.starts_with("key")).unwrap().to_string();
    let a_section = format!("[devices.\"{a}\"]");
    let (before, after) = text.split_once(&a_section).unwrap();
    let a_key = after.lines().find(|l| l.starts_with("key")).unwrap();
    std::fs::write(&known, format!("{before}{a_section}{}", after.replacen(a_key, &b_key, 1))).unwrap();
    let out = mer_at(&known, &["devices", "--to", &a, "--key", s(&key)]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success() && stdout.contains("not the key") && stdout.contains("--replace"), "{stdout}");
    let out = mer_at(&known, &["devices", "enroll", &a, "--key", s(&key)]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stdout).contains("REFUSED"));
    let out = ok(&mer_at(&known, &["devices", "enroll", &a, "--key", s(&key), "--replace"]));
    assert!(out.contains("re-enrolled  room-a"), "{out}");
    ok(&mer_at(&known, &["devices", "--to", &a, "--key", s(&key)]));
}

#[test]
fn push_devices_and_rollback_across_a_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = (device(d, "room-a"), device(d, "room-b"));
    let fleet = format!("{a},{b}");
    let v1 = d.join("v1.merb");
    std::fs::write(&v1, bundle("v1", &site_key())).unwrap();
    let key = models().join("demo-key");
    let known = d.join("known-devices.toml");
    ok(&mer_at(&known, &["devices", "enroll", &fleet, "--key", s(&key)]));

    let out = ok(&mer_at(&known, &["push", s(&v1), "--to", &fleet, "--key", s(&key)]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with(&a) && lines[0].contains("ok") && lines[0].contains("room-a runs v1"), "{out}");
    assert!(lines[1].starts_with(&b) && lines[1].contains("room-b runs v1") && lines[1].contains("rollback to v0"), "{out}");

    let table = ok(&mer_at(&known, &["devices", "--to", &fleet, "--key", s(&key)]));
    assert!(table.lines().all(|l| l.contains("v1 (") && l.contains("1 kept") && l.contains("1200 frames")), "{table}");
    let json = ok(&mer_at(&known, &["devices", "--to", &a, "--json", "--key", s(&key)]));
    let value: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(value["status"]["active"]["version"], "v1");
    assert_eq!(value["status"]["previous"][0]["version"], "v0");

    // One device unreachable: the other still gets the model, and the command fails.
    let v2 = d.join("v2.merb");
    std::fs::write(&v2, bundle("v2", &site_key())).unwrap();
    let out = mer_at(&known, &["push", s(&v2), "--to", &format!("{a},127.0.0.1:9"), "--key", s(&key), "--timeout-s", "2"]);
    let stderr = err(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("room-a runs v2") && stdout.contains("127.0.0.1:9") && stdout.contains("FAILED"), "{stdout}");
    assert!(stderr.contains("1 of 2 devices were not pushed"), "{stderr}");

    // A bundle signed by a key the devices do not trust changes nothing (the session is opened
    // with the trusted key); neither does a file that is not a bundle.
    let stranger = d.join("stranger");
    ok(&mer(&["keys", "generate", "-o", s(&stranger)]));
    let foreign = d.join("foreign.merb");
    ok(&mer(&["bundle", "verify", s(&v1), "--pub", s(&models().join("demo-key.pub"))]));
    std::fs::write(&foreign, bundle("v3", &mer_shared::bundle::read_secret_key(&stranger).unwrap())).unwrap();
    let out = mer_at(&known, &["push", s(&foreign), "--to", &b, "--key", s(&key)]);
    err(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("not among the trusted keys"));
    assert!(err(&mer_at(&known, &["push", s(&key), "--to", &b, "--key", s(&key)])).contains("not a bundle that can be pushed"));
    let unreachable = mer_at(&known, &["devices", "--to", "127.0.0.1:9", "--timeout-s", "2", "--key", s(&key)]);
    assert!(err(&unreachable).contains("1 of 1 devices did not report their status"));

    let out = ok(&mer_at(&known, &["rollback", "--to", &fleet, "--key", s(&key)]));
    assert!(out.contains("room-a runs v1") && out.contains("room-b runs v0"), "{out}");
}
