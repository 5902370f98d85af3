//! `mer demo` and `mer synth …`: synthetic data with known movements.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use mer_host::photo_clips::write_photo_clips;
use mer_host::{demo, progress::bar};
use mer_shared::synth::casme2::{Casme2Options, write_casme2};
use mer_shared::synth::interview::{InterviewOptions, write_interview};
use mer_shared::synth::photo::PhotoClipOptions;

use crate::args::count;

#[derive(clap::Args)]
pub struct DemoArgs {
    #[arg(long, default_value = "out/demo")]
    out: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub fn demo(DemoArgs { out, seed }: DemoArgs) -> Result<()> {
    let report = demo::run_demo(&out, seed)?;
    println!("synthetic CASME II data: {}", report.dataset.display());
    println!("{:<22} {:<11} {:>10} {:>12}", "sample", "emotion", "peak (px)", "TV-L1 EPE");
    for s in &report.samples {
        println!("{:<22} {:<11} {:>10.2} {:>12.3}", s.id, s.emotion, s.true_peak_px, s.tvl1_epe_px);
    }
    println!("flow pictures (onset | apex | 10x difference | true flow | TV-L1 flow | strain): {}", out.join("flows").display());
    println!("model input (38 channels, 48x48): {}", report.input_picture.display());
    Ok(())
}

#[derive(Subcommand)]
pub enum Synth {
    /// A dataset in CASME II's native layout (frames + coding sheet).
    Casme2 {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 8, value_parser = count(1000))]
        subjects: usize,
        #[arg(long, default_value_t = 5, value_parser = count(1000))]
        per_subject: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write the true onset→apex and apex→offset flows (.flo) per sample.
        #[arg(long)]
        with_flow: bool,
    },
    /// Measure how learnable a synthetic CASME II set is (LOSO nearest-centroid probe on flow).
    Check {
        #[arg(long, default_value = "out/synth-check")]
        out: PathBuf,
        #[arg(long, default_value_t = 8, value_parser = count(1000))]
        subjects: usize,
        #[arg(long, default_value_t = 10, value_parser = count(1000))]
        per_subject: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Interview clips made from real face photographs (one per photo, people in turn), with
    /// micro-expressions, blinks, head motion, changing light and noise at known times: each
    /// clip a folder of frames + truth.json, read by `--dataset interview`.
    Faces {
        /// Folder of tight face crops, e.g. ../shared/data/faces-casme2 (person = file name up to the first '_').
        #[arg(long)]
        photos: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 24, value_parser = count(10_000))]
        clips: usize,
        #[arg(long, default_value_t = 12.0)]
        seconds: f32,
        #[arg(long, default_value_t = 100.0)]
        fps: f32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// A long interview clip with micro-expressions at known times (frames + truth.json).
    Interview {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 20.0)]
        seconds: f32,
        #[arg(long, default_value_t = 60.0)]
        fps: f32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

pub fn synth(command: Synth) -> Result<()> {
    match command {
        Synth::Casme2 { out, subjects, per_subject, seed, with_flow } => {
            let opts = Casme2Options { subjects, per_subject, seed, with_flow, ..Casme2Options::default() };
            let pb = bar((subjects * per_subject) as u64, "samples");
            let samples = write_casme2(&out, &opts, &|| pb.inc(1))?;
            pb.finish();
            println!("wrote {} samples of {subjects} subjects to {}", samples.len(), out.display());
        }
        Synth::Check { out, subjects, per_subject, seed } => {
            let opts = Casme2Options { subjects, per_subject, seed, ..Casme2Options::default() };
            let report = mer_host::learnability::probe(&out, &opts)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Synth::Interview { out, seconds, fps, seed } => {
            let opts = InterviewOptions { seconds, fps, seed, ..InterviewOptions::default() };
            let pb = bar((seconds * fps).round() as u64, "frames");
            let truth = write_interview(&out, &opts, &|| pb.inc(1))?;
            pb.finish();
            println!(
                "wrote {} frames with {} micro-expressions and {} blinks to {}",
                truth.frames,
                truth.events.len(),
                truth.blinks.len(),
                out.display()
            );
        }
        Synth::Faces { photos, out, clips, seconds, fps, seed } => {
            let opts = PhotoClipOptions { seconds, fps, seed, ..PhotoClipOptions::default() };
            let pb = bar(clips as u64 * (seconds * fps).round() as u64, "frames");
            let set = write_photo_clips(&photos, &out, clips, &opts, &|| pb.inc(1))?;
            pb.finish();
            let events: usize = set.clips.iter().map(|c| c.clip.events.len()).sum();
            println!("wrote {} clips of {} people with {events} micro-expressions to {}", set.clips.len(), set.people, out.display());
        }
    }
    Ok(())
}
