//! `merd`: the device daemon.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::{Parser, Subcommand};
use mer_device::source::{FrameSource, ReplaySource};

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
    }
    Ok(())
}
