//! `mer push`, `mer rollback`, `mer devices` and `mer devices enroll`: the same request sent to
//! many devices at once, one thread each, with one result per device. A device that fails never
//! stops the others. Every connection is the encrypted channel, authenticated with the host's
//! key and checked against the device key enrolled for the address.

use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use mer_shared::bundle::{Bundle, SecretKey};
use mer_shared::push::channel::DevicePublicKey;
use mer_shared::push::client::{Client, Credentials, Expect, push};
use mer_shared::push::{DeviceStatus, ModelInfo, ProbationState};
use mer_shared::{Error, Result};

use crate::events_pull;
use crate::known_devices::KnownDevices;

/// How this host reaches its devices.
pub struct Fleet<'a> {
    /// A key the devices trust.
    pub key: &'a SecretKey,
    pub known: &'a KnownDevices,
    /// For the connection and each reply.
    pub timeout: Duration,
}

impl Fleet<'_> {
    fn credentials(&self, address: &str) -> Result<Credentials<'_>> {
        Ok(Credentials { key: self.key, expect: Expect::Key(self.known.key(address)?) })
    }
}

/// A device met by `mer devices enroll`.
#[derive(Debug, Clone)]
pub struct Met {
    pub key: DevicePublicKey,
    pub name: String,
}

/// What happened at one device.
#[derive(Debug)]
pub struct Outcome<T> {
    pub address: String,
    pub result: Result<T>,
    pub seconds: f64,
}

/// Sends `bundle` to every address and activates it there. The bundle is checked first
/// (structure and signature), so a damaged file is not sent anywhere.
pub fn push_all(fleet: &Fleet, addresses: &[String], bundle: &[u8]) -> Result<Vec<Outcome<DeviceStatus>>> {
    Bundle::from_bytes(bundle)?.verify_integrity()?;
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{msg:>24} [{bar:30}] {bytes}/{total_bytes}").expect("valid template").progress_chars("=> ");
    Ok(each(addresses, |address| {
        let bar = bars.add(ProgressBar::new(bundle.len() as u64).with_style(style.clone()).with_message(address.to_string()));
        let pushed = fleet.credentials(address).and_then(|c| push(address, bundle, c, fleet.timeout, |sent, _| bar.set_position(sent)));
        bar.finish_and_clear();
        pushed.map(|p| p.status)
    }))
}

pub fn rollback_all(fleet: &Fleet, addresses: &[String]) -> Vec<Outcome<DeviceStatus>> {
    each(addresses, |address| Client::connect(address, fleet.credentials(address)?, fleet.timeout)?.rollback(fleet.key))
}

pub fn status_all(fleet: &Fleet, addresses: &[String]) -> Vec<Outcome<DeviceStatus>> {
    each(addresses, |address| Client::connect(address, fleet.credentials(address)?, fleet.timeout)?.status())
}

/// Pulls each device's new events into `out` (see [`crate::events_pull`]).
pub fn pull_all(fleet: &Fleet, addresses: &[String], out: &std::path::Path, since: Option<u64>) -> Vec<Outcome<events_pull::Pulled>> {
    each(addresses, |address| events_pull::pull_from(address, fleet.credentials(address)?, fleet.timeout, out, since))
}

/// Opens an authenticated session with each device accepting the key it presents (or only the
/// one with `fingerprint`), and returns the keys for the caller to show and record.
pub fn meet_all(addresses: &[String], key: &SecretKey, fingerprint: Option<&str>, timeout: Duration) -> Vec<Outcome<Met>> {
    let expect = fingerprint.map_or(Expect::AnyKey, Expect::Fingerprint);
    each(addresses, |address| {
        let client = Client::connect(address, Credentials { key, expect }, timeout)?;
        Ok(Met { key: client.device_key(), name: client.device().to_string() })
    })
}

fn each<T: Send>(addresses: &[String], task: impl Fn(&str) -> Result<T> + Sync) -> Vec<Outcome<T>> {
    std::thread::scope(|s| {
        let running: Vec<_> = addresses
            .iter()
            .map(|address| {
                let task = &task;
                s.spawn(move || {
                    let started = Instant::now();
                    let result = task(address);
                    Outcome { address: address.clone(), result, seconds: started.elapsed().as_secs_f64() }
                })
            })
            .collect();
        running
            .into_iter()
            .zip(addresses)
            .map(|(handle, address)| {
                handle.join().unwrap_or_else(|_| Outcome {
                    address: address.clone(),
                    result: Err(Error::Push("the worker for this device panicked".into())),
                    seconds: 0.0,
                })
            })
            .collect()
    })
}

/// One line per device: what it runs now, or why it failed.
pub fn describe_outcome(outcome: &Outcome<DeviceStatus>) -> String {
    match &outcome.result {
        Ok(status) => format!(
            "{:<22} ok      {} runs {}{}{} ({:.1} s)",
            outcome.address,
            status.device,
            status.active.as_ref().map_or("no model".into(), model_line),
            status.previous.first().map_or(String::new(), |p| format!("; rollback to {}", p.version)),
            probation_note(status),
            outcome.seconds
        ),
        Err(e) => format!("{:<22} FAILED  {e}", outcome.address),
    }
}

/// `mer devices`' line for one device.
pub fn describe_status(outcome: &Outcome<DeviceStatus>) -> String {
    match &outcome.result {
        Ok(s) => {
            let h = &s.health;
            format!(
                "{:<22} {:<12} {:<40} {:>2} kept  up {:>7.0} s  {:>5.1} fps  {:>9} frames  {:>6} dropped  {:>5} events  face {}{}",
                outcome.address,
                s.device,
                s.active.as_ref().map_or("no model".into(), model_line),
                s.previous.len(),
                h.uptime_s,
                h.fps,
                h.frames,
                h.dropped_frames,
                h.events,
                if h.face.is_empty() { "-" } else { &h.face },
                s.probation.as_ref().map_or(String::new(), |p| format!("  [{p}]"))
            )
        }
        Err(e) => format!("{:<22} FAILED  {e}", outcome.address),
    }
}

/// After a push: whether the model is now on probation.
fn probation_note(status: &DeviceStatus) -> String {
    match &status.probation {
        Some(p) if p.state == ProbationState::Running => format!("; on probation for {:.0} s", p.seconds_left),
        _ => String::new(),
    }
}

fn model_line(m: &ModelInfo) -> String {
    format!("{} ({})", m.version, &m.sha256[..m.sha256.len().min(12)])
}
