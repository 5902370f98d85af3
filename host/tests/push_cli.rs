//! `mer push`, `mer devices` and `mer rollback` against a fleet of two devices on loopback
//! (the device library's store and push listener, as `merd` runs them).

use std::path::Path;
use std::sync::Arc;

use mer_device::model_store::ModelStore;
use mer_device::push_server::{ModelSwitch, PushServer, PushSettings};
use mer_shared::classifier::Classifier;
use mer_shared::push::Health;

mod common;
use common::*;

#[path = "../../device/src/test_bundles.rs"]
mod test_bundles;
use test_bundles::{bundle, models, site_key};

struct Idle;

impl ModelSwitch for Idle {
    fn switch(&self, _: Classifier) {}
    fn health(&self) -> Health {
        Health { uptime_s: 12.0, fps: 100.0, frames: 1200, face: "fixed".into(), ..Health::default() }
    }
}

/// A device named `name` running `v0`; returns its address.
fn device(dir: &Path, name: &str) -> String {
    let trusted = vec![site_key().public()];
    let mut store = ModelStore::open(&dir.join(name), trusted.clone(), 3, 1).unwrap();
    store.adopt(&bundle("v0", &site_key())).unwrap();
    let settings = PushSettings {
        listen: "127.0.0.1:0".into(),
        store: dir.join(name),
        keep: 3,
        max_bundle_mb: 64,
        timeout_s: 10.0,
        session_s: 3600.0,
        max_sessions: 4,
        name: Some(name.into()),
    };
    PushServer::start(&settings, store, trusted, Arc::new(Idle)).unwrap().address().to_string()
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

    let out = ok(&mer(&["push", s(&v1), "--to", &fleet, "--key", s(&key)]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with(&a) && lines[0].contains("ok") && lines[0].contains("room-a runs v1"), "{out}");
    assert!(lines[1].starts_with(&b) && lines[1].contains("room-b runs v1") && lines[1].contains("rollback to v0"), "{out}");

    let table = ok(&mer(&["devices", "--to", &fleet]));
    assert!(table.lines().all(|l| l.contains("v1 (") && l.contains("1 kept") && l.contains("1200 frames")), "{table}");
    let json = ok(&mer(&["devices", "--to", &a, "--json"]));
    let value: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(value["status"]["active"]["version"], "v1");
    assert_eq!(value["status"]["previous"][0]["version"], "v0");

    // One device unreachable: the other still gets the model, and the command fails.
    let v2 = d.join("v2.merb");
    std::fs::write(&v2, bundle("v2", &site_key())).unwrap();
    let out = mer(&["push", s(&v2), "--to", &format!("{a},127.0.0.1:9"), "--key", s(&key), "--timeout-s", "2"]);
    let stderr = err(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("room-a runs v2") && stdout.contains("127.0.0.1:9") && stdout.contains("FAILED"), "{stdout}");
    assert!(stderr.contains("1 of 2 devices were not pushed"), "{stderr}");

    // A key the devices do not trust changes nothing; neither does a file that is not a bundle.
    let stranger = d.join("stranger");
    ok(&mer(&["keys", "generate", "-o", s(&stranger)]));
    let foreign = d.join("foreign.merb");
    ok(&mer(&["bundle", "verify", s(&v1), "--pub", s(&models().join("demo-key.pub"))]));
    std::fs::write(&foreign, bundle("v3", &mer_shared::bundle::read_secret_key(&stranger).unwrap())).unwrap();
    let out = mer(&["push", s(&foreign), "--to", &b, "--key", s(&stranger)]);
    err(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("not among the trusted keys"));
    assert!(err(&mer(&["push", s(&key), "--to", &b, "--key", s(&key)])).contains("not a bundle that can be pushed"));
    assert!(err(&mer(&["devices", "--to", "127.0.0.1:9", "--timeout-s", "2"])).contains("1 of 1 devices did not answer"));

    let out = ok(&mer(&["rollback", "--to", &fleet, "--key", s(&key)]));
    assert!(out.contains("room-a runs v1") && out.contains("room-b runs v0"), "{out}");
}
