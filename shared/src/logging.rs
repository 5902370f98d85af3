//! Diagnostics of `mer` and `merd` through `tracing`: levels, filtered by `RUST_LOG` (default
//! `info`; e.g. `RUST_LOG=debug` or `RUST_LOG=mer_device=debug`), written to stderr. Under
//! systemd (`JOURNAL_STREAM` set) lines carry no timestamp and no colour: the journal stamps
//! each line itself. Command output proper (tables, JSON) stays on stdout.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the subscriber once per process; later calls change nothing.
pub fn init() {
    let (filter, bad_filter) = match std::env::var("RUST_LOG") {
        Ok(text) if !text.trim().is_empty() => match EnvFilter::try_new(&text) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new("info"), Some(format!("RUST_LOG={text} is not a filter ({e}); logging at info"))),
        },
        _ => (EnvFilter::new("info"), None),
    };
    let under_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(!under_journal && std::io::stderr().is_terminal());
    let installed = if under_journal { builder.without_time().try_init() } else { builder.try_init() };
    if let (Ok(()), Some(why)) = (installed, bad_filter) {
        tracing::warn!("{why}");
    }
}
