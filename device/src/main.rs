//! `merd`: the device daemon.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::{Parser, Subcommand};
use mer_device::event_log::read_events;
use mer_device::source::{FrameSource, ReplaySource};
use mer_shared::classifier::{Origin, classify_file};

#[derive(Parser)]
#[command(name = "merd", version, about = "Micro-expression recognition on the device")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read a recorded clip (a directory of numbered frames) as the live source would deliver it.
    Replay {
        frames: PathBuf,
        #[arg(long, default_value_t = 60.0)]
        fps: f64,
    },
    /// Classify the samples of a float32 .npy file (N, C, H, W) with a model or bundle; prints
    /// the same JSON as `mer infer`.
    Classify {
        /// A signed bundle (.merb) or an ONNX model from `mer export`.
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        input: PathBuf,
        /// Public keys a bundle must be signed by (without one, only its integrity is checked).
        #[arg(long = "pub")]
        public_keys: Vec<PathBuf>,
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Print the events of an event log, oldest first.
    Events {
        /// The log directory (`log.dir` in the configuration).
        #[arg(long)]
        log: PathBuf,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Replay { frames, fps } => {
            let mut src = ReplaySource::open(&frames, fps)?;
            let start = Instant::now();
            let (mut n, mut last) = (0u64, 0.0);
            while let Some(frame) = src.next_frame()? {
                n += 1;
                last = frame.timestamp;
            }
            let secs = start.elapsed().as_secs_f64();
            println!("{n} frames ({last:.2} s of video at {fps} fps) decoded in {secs:.2} s ({:.0} frames/s)", n as f64 / secs);
        }
        Command::Classify { model, input, public_keys, threads } => {
            let (result, origin) = classify_file(&model, &input, &public_keys, threads)?;
            if let Origin::Bundle { signer, trusted: false } = origin {
                eprintln!("note: bundle signed by key {signer}; pass --pub KEY.pub to require a trusted signer");
            }
            println!("{}", serde_json::to_string(&result)?);
        }
        Command::Events { log, json } => {
            let (events, problems) = read_events(&log)?;
            for problem in &problems {
                eprintln!("warning: {problem}");
            }
            for e in &events {
                if json {
                    println!("{}", serde_json::to_string(e)?);
                } else {
                    let p = e.classes.iter().position(|c| *c == e.label).and_then(|i| e.probabilities.get(i)).copied().unwrap_or(f32::NAN);
                    println!(
                        "{}  onset {:.3} s  apex {:.3} s  offset {:.3} s  {:<12} p {:.2}  {:?}  model {}  {:.0} ms",
                        utc(e.wall_time_ms), e.onset_s, e.apex_s, e.offset_s, e.label, p, e.source, e.model_version, e.latency.total_ms
                    );
                }
            }
            if !json {
                eprintln!("{} events", events.len());
            }
        }
    }
    Ok(())
}

/// RFC 3339 UTC time of a Unix time in milliseconds.
fn utc(unix_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{unix_ms} ms"))
}
