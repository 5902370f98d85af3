//! `mer push`, `mer rollback`, `mer devices` and `mer devices enroll`: the devices of a fleet,
//! each answered on its own line.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use mer_host::fleet;
use mer_host::known_devices::KnownDevices;
use mer_shared::bundle::{SecretKey, read_secret_key};
use mer_shared::push::DeviceStatus;

/// How this host connects: its key and the devices it has enrolled.
#[derive(clap::Args)]
pub struct Connection {
    /// Secret key the devices trust (`mer keys generate`): it authenticates every connection
    /// and signs activations and rollbacks.
    #[arg(long, env = "MER_KEY", required = true)]
    key: Option<PathBuf>,
    /// The enrolled devices (default: $MER_KNOWN_DEVICES, else
    /// $XDG_CONFIG_HOME/mer/known-devices.toml, else ~/.config/mer/known-devices.toml).
    #[arg(long)]
    known_devices: Option<PathBuf>,
    /// Seconds to wait for any one reply before giving up on a device.
    #[arg(long, default_value_t = 30.0)]
    timeout_s: f64,
}

impl Connection {
    fn timeout(&self) -> Result<std::time::Duration> {
        let value = self.timeout_s;
        if !(value > 0.0 && value < 1e6) {
            bail!("--timeout-s must be a positive number of seconds, got {value}");
        }
        Ok(std::time::Duration::from_secs_f64(value))
    }

    fn key(&self) -> Result<SecretKey> {
        let path = self.key.as_ref().context("--key is required")?;
        Ok(read_secret_key(path)?)
    }

    fn known(&self) -> Result<KnownDevices> {
        let path = match &self.known_devices {
            Some(path) => path.clone(),
            None => KnownDevices::default_path()?,
        };
        Ok(KnownDevices::load(&path)?)
    }
}

/// Which devices a fleet command talks to, and how.
#[derive(clap::Args)]
pub struct Targets {
    /// Device addresses, host or host:port (default port 7878), comma-separated; each must be
    /// enrolled (`mer devices enroll`).
    #[arg(long, value_delimiter = ',', required = true)]
    to: Vec<String>,
    #[command(flatten)]
    connection: Connection,
}

impl Targets {
    /// Runs `task` with this host's fleet settings.
    fn with_fleet<T>(&self, task: impl FnOnce(&fleet::Fleet) -> Result<T>) -> Result<T> {
        let key = self.connection.key()?;
        let known = self.connection.known()?;
        task(&fleet::Fleet { key: &key, known: &known, timeout: self.connection.timeout()? })
    }
}

#[derive(clap::Args)]
pub struct PushArgs {
    /// The bundle (`mer bundle`).
    bundle: PathBuf,
    #[command(flatten)]
    devices: Targets,
}

pub fn push(PushArgs { bundle, devices }: PushArgs) -> Result<()> {
    let bytes = std::fs::read(&bundle).with_context(|| format!("reading {}", bundle.display()))?;
    let outcomes = devices.with_fleet(|fleet| {
        fleet::push_all(fleet, &devices.to, &bytes).with_context(|| format!("{} is not a bundle that can be pushed", bundle.display()))
    })?;
    report_outcomes(&outcomes, "pushed")
}

#[derive(clap::Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    devices: Targets,
}

pub fn rollback(RollbackArgs { devices }: RollbackArgs) -> Result<()> {
    let outcomes = devices.with_fleet(|fleet| Ok(fleet::rollback_all(fleet, &devices.to)))?;
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
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DevicesArgs {
    #[command(subcommand)]
    action: Option<DevicesAction>,
    #[command(flatten)]
    devices: Targets,
    /// One JSON object per device instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum DevicesAction {
    /// Meet devices: show the fingerprint of each device's key and record it, so that later
    /// connections to a device presenting another key are refused. Check the fingerprint
    /// against `merd key` on the device (or give it with --fingerprint).
    Enroll {
        /// Device addresses, host or host:port (default port 7878), comma-separated.
        #[arg(value_delimiter = ',', required = true)]
        addresses: Vec<String>,
        /// Accept only a device key with this fingerprint, as `merd key` prints it (one device).
        #[arg(long)]
        fingerprint: Option<String>,
        /// Record the key even when another one is enrolled for the address (a reinstalled device).
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        connection: Connection,
    },
}

pub fn devices(DevicesArgs { action, devices, json }: DevicesArgs) -> Result<()> {
    if let Some(DevicesAction::Enroll { addresses, fingerprint, replace, connection }) = action {
        return enroll(&addresses, fingerprint.as_deref(), replace, &connection);
    }
    let outcomes = devices.with_fleet(|fleet| Ok(fleet::status_all(fleet, &devices.to)))?;
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
        bail!("{failed} of {} devices did not report their status", outcomes.len());
    }
    Ok(())
}

/// Meets each device and records its key; a different key already recorded is kept unless
/// `replace`. Prints one line per device.
fn enroll(addresses: &[String], fingerprint: Option<&str>, replace: bool, connection: &Connection) -> Result<()> {
    if fingerprint.is_some() && addresses.len() > 1 {
        bail!("--fingerprint names one device's key; enrol the devices one at a time");
    }
    let key = connection.key()?;
    let mut known = connection.known()?;
    let met = fleet::meet_all(addresses, &key, fingerprint, connection.timeout()?);
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
    let now = now.unwrap_or_default();
    let mut failed = 0;
    for outcome in &met {
        let address = &outcome.address;
        let line = match &outcome.result {
            Ok(device) => {
                let fingerprint = device.key.fingerprint();
                let before = known.key(address).ok();
                match before {
                    Some(before) if before == device.key => format!("already enrolled  {}  key {fingerprint}", device.name),
                    Some(before) if !replace => {
                        failed += 1;
                        format!(
                            "REFUSED  presents key {fingerprint}, but {} is enrolled for it; if the device was reinstalled, \
                             compare `merd key` on it and run again with --replace",
                            before.fingerprint()
                        )
                    }
                    _ => {
                        known.insert(address, device.key, &device.name, now.clone());
                        let what = if before.is_some() { "re-enrolled" } else { "enrolled" };
                        format!("{what}  {}  key {fingerprint}", device.name)
                    }
                }
            }
            Err(e) => {
                failed += 1;
                format!("FAILED  {e}")
            }
        };
        println!("{address:<22} {line}");
    }
    known.save()?;
    println!("enrolled devices are kept in {}", known.path().display());
    if failed > 0 {
        bail!("{failed} of {} devices were not enrolled", addresses.len());
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum EventsCommand {
    /// Fetch each device's new events into one JSON-lines file per device (DIR/<device id>.jsonl)
    /// and print a summary table (also written to DIR/summary.tsv). Resumable and exactly once:
    /// run it again, or from cron, and each event arrives once.
    Pull(PullArgs),
}

#[derive(clap::Args)]
pub struct PullArgs {
    /// Device addresses, host or host:port (default port 7878), comma-separated; each must be
    /// enrolled (`mer devices enroll`).
    #[arg(long, value_delimiter = ',', required = true)]
    from: Vec<String>,
    /// The folder of per-device files.
    #[arg(long)]
    out: PathBuf,
    /// Fetch the events after this sequence number instead of after the last one the file holds.
    #[arg(long)]
    since: Option<u64>,
    #[command(flatten)]
    connection: Connection,
}

pub fn events(EventsCommand::Pull(args): EventsCommand) -> Result<()> {
    let PullArgs { from, out, since, connection } = args;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let key = connection.key()?;
    let known = connection.known()?;
    let fleet = fleet::Fleet { key: &key, known: &known, timeout: connection.timeout()? };
    let outcomes = fleet::pull_all(&fleet, &from, &out, since);
    let mut summary = String::from("address\tname\tdevice\tnew\tevents\tlast_seq\tfile\n");
    println!("{:<22} {:<12} {:>6} {:>8} {:>9}  file", "device", "name", "new", "events", "last seq");
    for outcome in &outcomes {
        match &outcome.result {
            Ok(p) => {
                println!("{:<22} {:<12} {:>6} {:>8} {:>9}  {}", outcome.address, p.name, p.new, p.total, p.last_seq, p.file.display());
                summary.push_str(&format!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                    outcome.address,
                    p.name,
                    p.device,
                    p.new,
                    p.total,
                    p.last_seq,
                    p.file.display()
                ));
            }
            Err(e) => println!("{:<22} FAILED  {e}", outcome.address),
        }
    }
    mer_shared::atomic_file::write(out.join("summary.tsv"), summary.as_bytes())?;
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    if failed > 0 {
        bail!("{failed} of {} devices were not pulled (run again: a pull resumes where it stopped)", outcomes.len());
    }
    Ok(())
}
