//! `mer push`, `mer rollback` and `mer devices`: the same request sent to many devices at once,
//! one thread each, with one result per device. A device that fails never stops the others.

use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use mer_shared::bundle::{Bundle, SecretKey};
use mer_shared::push::client::{Client, push};
use mer_shared::push::{DeviceStatus, ModelInfo};
use mer_shared::{Error, Result};

/// What happened at one device.
#[derive(Debug)]
pub struct Outcome<T> {
    pub address: String,
    pub result: Result<T>,
    pub seconds: f64,
}

/// Sends `bundle` to every address and activates it there. The bundle is checked first
/// (structure and signature), so a damaged file is not sent anywhere.
pub fn push_all(addresses: &[String], bundle: &[u8], key: &SecretKey, timeout: Duration) -> Result<Vec<Outcome<DeviceStatus>>> {
    Bundle::from_bytes(bundle)?.verify_integrity()?;
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{msg:>24} [{bar:30}] {bytes}/{total_bytes}").expect("valid template").progress_chars("=> ");
    Ok(each(addresses, |address| {
        let bar = bars.add(ProgressBar::new(bundle.len() as u64).with_style(style.clone()).with_message(address.to_string()));
        let pushed = push(address, bundle, key, timeout, |sent, _| bar.set_position(sent));
        bar.finish_and_clear();
        pushed.map(|p| p.status)
    }))
}

pub fn rollback_all(addresses: &[String], key: &SecretKey, timeout: Duration) -> Vec<Outcome<DeviceStatus>> {
    each(addresses, |address| Client::connect(address, timeout)?.rollback(key))
}

pub fn status_all(addresses: &[String], timeout: Duration) -> Vec<Outcome<DeviceStatus>> {
    each(addresses, |address| Client::connect(address, timeout)?.status())
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
            "{:<22} ok      {} runs {}{} ({:.1} s)",
            outcome.address,
            status.device,
            status.active.as_ref().map_or("no model".into(), model_line),
            status.previous.first().map_or(String::new(), |p| format!("; rollback to {}", p.version)),
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
                "{:<22} {:<12} {:<40} {:>2} kept  up {:>7.0} s  {:>5.1} fps  {:>9} frames  {:>6} dropped  {:>5} events  face {}",
                outcome.address,
                s.device,
                s.active.as_ref().map_or("no model".into(), model_line),
                s.previous.len(),
                h.uptime_s,
                h.fps,
                h.frames,
                h.dropped_frames,
                h.events,
                if h.face.is_empty() { "-" } else { &h.face }
            )
        }
        Err(e) => format!("{:<22} UNREACHABLE  {e}", outcome.address),
    }
}

fn model_line(m: &ModelInfo) -> String {
    format!("{} ({})", m.version, &m.sha256[..m.sha256.len().min(12)])
}
