//! `mer`: the host command line.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use mer_host::import::official::import_skd_tstsan;
use mer_host::train::report::summarise;
use mer_host::train::run::resolve_device;
use mer_host::{demo, flow_bench, progress::bar, torch_info};
use mer_shared::flow::{Tvl1Params, read_flo, save_colour_png, tvl1_flow, write_flo};
use mer_shared::image::load_gray;
use mer_shared::synth::casme2::{Casme2Options, write_casme2};
use mer_shared::synth::interview::{InterviewOptions, write_interview};

#[derive(Parser)]
#[command(name = "mer", version, about = "Micro-expression recognition: data, flow, training and export on the host")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the end-to-end demo on synthetic data and write pictures and figures to --out.
    Demo {
        #[arg(long, default_value = "out/demo")]
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Generate synthetic micro-expression data.
    #[command(subcommand)]
    Synth(Synth),
    /// TV-L1 optical flow between two frames, written as a Middlebury .flo file.
    Flow {
        from: PathBuf,
        to: PathBuf,
        #[arg(short, long)]
        out: PathBuf,
        /// Worker threads (1 = single-threaded).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Also write a colour-wheel picture of the flow.
        #[arg(long)]
        png: Option<PathBuf>,
    },
    /// Colour-wheel picture (PNG) of a .flo file: hue is direction, saturation is magnitude.
    FlowImage {
        flo: PathBuf,
        #[arg(short, long)]
        out: PathBuf,
        /// Magnitude shown fully saturated, in pixels (default: the largest in the field).
        #[arg(long)]
        max: Option<f32>,
    },
    /// Compare TV-L1 with OpenCV's DualTVL1 (accuracy and single-thread speed).
    BenchFlow {
        #[arg(long, default_value_t = 20)]
        pairs: usize,
        #[arg(long, default_value = "out/bench-flow")]
        dir: PathBuf,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Merge the fold results of run directories (e.g. `--fold i/n` shards) into one report.
    Report {
        /// Run directories written by `mer train`.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Where the merged run goes (default: the single run given).
        #[arg(short, long)]
        out: Option<PathBuf>,
    },
    /// Convert a state dict saved by the official PyTorch code into a checkpoint for --init.
    ImportPytorch {
        #[arg(long, default_value = "skd-tstsan")]
        arch: String,
        /// Number of classes the state dict was trained with.
        #[arg(long)]
        classes: i64,
        /// A torch.save'd state dict (.pth/.pt) or a .safetensors file.
        state_dict: PathBuf,
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Training and inference throughput of SKD-TSTSAN on random inputs.
    BenchTrain {
        #[arg(long, default_value_t = 16)]
        batch: usize,
        #[arg(long, default_value_t = 10)]
        iters: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// Show the libtorch build and whether a CUDA GPU is usable.
    Info,
}

#[derive(Subcommand)]
enum Synth {
    /// A dataset in CASME II's native layout (frames + coding sheet).
    Casme2 {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 8)]
        subjects: usize,
        #[arg(long, default_value_t = 5)]
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
        #[arg(long, default_value_t = 8)]
        subjects: usize,
        #[arg(long, default_value_t = 10)]
        per_subject: usize,
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

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { out, seed } => {
            let report = demo::run_demo(&out, seed)?;
            println!("synthetic CASME II data: {}", report.dataset.display());
            println!("{:<22} {:<11} {:>10} {:>12}", "sample", "emotion", "peak (px)", "TV-L1 EPE");
            for s in &report.samples {
                println!("{:<22} {:<11} {:>10.2} {:>12.3}", s.id, s.emotion, s.true_peak_px, s.tvl1_epe_px);
            }
            println!("flow pictures (onset | apex | 10x difference | true flow | TV-L1 flow | strain): {}", out.join("flows").display());
            println!("model input (38 channels, 48x48): {}", report.input_picture.display());
        }
        Command::Synth(Synth::Casme2 { out, subjects, per_subject, seed, with_flow }) => {
            let opts = Casme2Options { subjects, per_subject, seed, with_flow, ..Casme2Options::default() };
            let pb = bar((subjects * per_subject) as u64, "samples");
            let samples = write_casme2(&out, &opts, &|| pb.inc(1))?;
            pb.finish();
            println!("wrote {} samples of {subjects} subjects to {}", samples.len(), out.display());
        }
        Command::Synth(Synth::Check { out, subjects, per_subject, seed }) => {
            let opts = Casme2Options { subjects, per_subject, seed, ..Casme2Options::default() };
            let report = mer_host::learnability::probe(&out, &opts)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Synth(Synth::Interview { out, seconds, fps, seed }) => {
            let opts = InterviewOptions { seconds, fps, seed, ..InterviewOptions::default() };
            let pb = bar((seconds * fps).round() as u64, "frames");
            let truth = write_interview(&out, &opts, &|| pb.inc(1))?;
            pb.finish();
            println!("wrote {} frames with {} micro-expressions and {} blinks to {}", truth.frames, truth.events.len(), truth.blinks.len(), out.display());
        }
        Command::Flow { from, to, out, threads, png } => {
            let (a, b) = (load_gray(&from)?, load_gray(&to)?);
            let flow = tvl1_flow(&a, &b, &Tvl1Params::default(), threads)
                .with_context(|| format!("flow from {} to {}", from.display(), to.display()))?;
            write_flo(&flow, &out)?;
            if let Some(png) = png {
                save_colour_png(&flow, None, &png)?;
            }
            println!("wrote {}", out.display());
        }
        Command::FlowImage { flo, out, max } => {
            save_colour_png(&read_flo(&flo)?, max, &out)?;
            println!("wrote {}", out.display());
        }
        Command::BenchFlow { pairs, dir, seed } => {
            let r = flow_bench::run(&dir, pairs, seed)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        Command::Report { runs, out } => {
            let out = match out {
                Some(o) => o,
                None if runs.len() == 1 => runs[0].clone(),
                None => bail!("several runs are merged into a new directory: give --out"),
            };
            let results = summarise(&runs, &out)?;
            println!("{}", results.headline());
            println!("{}", results.protocol_note);
            println!("wrote {}", out.join("results.json").display());
        }
        Command::ImportPytorch { arch, classes, state_dict, out } => {
            if arch != "skd-tstsan" {
                bail!("import-pytorch knows skd-tstsan; got {arch:?}");
            }
            let report = import_skd_tstsan(&state_dict, classes, &out)?;
            if report.stripped_prefix {
                println!("removed the DataParallel prefix `module.` from every key");
            }
            println!("{}", report.describe());
            println!("wrote {}", out.display());
        }
        Command::BenchTrain { batch, iters, warmup, device } => {
            let device = resolve_device(&device)?;
            let r = mer_host::train::bench::measure(device, batch, iters, warmup);
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        Command::Info => {
            let info = torch_info::torch_info();
            println!("{}", serde_json::to_string_pretty(&info)?);
            println!("libtorch smoke test on {}: {}", info.device, torch_info::smoke_test()?);
        }
    }
    Ok(())
}
