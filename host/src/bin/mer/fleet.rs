//! `mer push`, `mer rollback` and `mer devices`: the devices of a fleet, each answered on its
//! own line.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use mer_host::fleet;
use mer_shared::bundle::read_secret_key;
use mer_shared::push::DeviceStatus;

/// Which devices a fleet command talks to.
#[derive(clap::Args)]
pub struct Targets {
    /// Device addresses, host or host:port (default port 7878), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    to: Vec<String>,
    /// Seconds to wait for any one reply before giving up on a device.
    #[arg(long, default_value_t = 30.0)]
    timeout_s: f64,
}

impl Targets {
    fn timeout(&self) -> Result<std::time::Duration> {
        let value = self.timeout_s;
        if !(value > 0.0 && value < 1e6) {
            bail!("--timeout-s must be a positive number of seconds, got {value}");
        }
        Ok(std::time::Duration::from_secs_f64(value))
    }
}

#[derive(clap::Args)]
pub struct PushArgs {
    /// The bundle (`mer bundle`).
    bundle: PathBuf,
    #[command(flatten)]
    devices: Targets,
    /// Secret key the devices trust, to sign the activation.
    #[arg(long)]
    key: PathBuf,
}

pub fn push(PushArgs { bundle, devices, key }: PushArgs) -> Result<()> {
    let bytes = std::fs::read(&bundle).with_context(|| format!("reading {}", bundle.display()))?;
    let outcomes = fleet::push_all(&devices.to, &bytes, &read_secret_key(&key)?, devices.timeout()?)
        .with_context(|| format!("{} is not a bundle that can be pushed", bundle.display()))?;
    report_outcomes(&outcomes, "pushed")
}

#[derive(clap::Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    devices: Targets,
    /// Secret key the devices trust, to sign the rollback.
    #[arg(long)]
    key: PathBuf,
}

pub fn rollback(RollbackArgs { devices, key }: RollbackArgs) -> Result<()> {
    let outcomes = fleet::rollback_all(&devices.to, &read_secret_key(&key)?, devices.timeout()?);
    report_outcomes(&outcomes, "rolled back")
}

/// Prints one line per device; fails when any device failed, after printing them all.
fn report_outcomes(outcomes: &[fleet::Outcome<DeviceStatus>], done: &str) -> Result<()> {
    for outcome in outcomes {
        println!("{}", fleet::describe_outcome(outcome));
    }
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    if failed > 0 {
        bail!("{failed} of {} devices were not {done}", outcomes.len());
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct DevicesArgs {
    #[command(flatten)]
    devices: Targets,
    /// One JSON object per device instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn devices(DevicesArgs { devices, json }: DevicesArgs) -> Result<()> {
    let outcomes = fleet::status_all(&devices.to, devices.timeout()?);
    for outcome in &outcomes {
        if json {
            let value = match &outcome.result {
                Ok(status) => serde_json::json!({ "address": outcome.address, "status": status }),
                Err(e) => serde_json::json!({ "address": outcome.address, "error": e.to_string() }),
            };
            println!("{value}");
        } else {
            println!("{}", fleet::describe_status(outcome));
        }
    }
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    if failed > 0 {
        bail!("{failed} of {} devices did not answer", outcomes.len());
    }
    Ok(())
}
