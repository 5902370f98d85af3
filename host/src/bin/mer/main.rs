//! `mer`: the command line on the host. This file lists the commands and hands each to the module
//! of its group; the work itself lives in the `mer_host` library.

mod args;
mod data;
mod fleet;
mod flows;
mod models;
mod synth;
mod training;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mer", version, about = "Micro-expression recognition: data, flow, training and export on the host")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the end-to-end demo on synthetic data and write pictures and figures to --out.
    Demo(synth::DemoArgs),
    /// Generate synthetic micro-expression data.
    #[command(subcommand)]
    Synth(synth::Synth),
    /// TV-L1 optical flow between two frames, written as a Middlebury .flo file.
    Flow(flows::FlowArgs),
    /// Colour-wheel picture (PNG) of a .flo file: hue is direction, saturation is magnitude.
    FlowImage(flows::FlowImageArgs),
    /// Compare TV-L1 with OpenCV's DualTVL1 (accuracy and single-thread speed).
    BenchFlow(flows::BenchFlowArgs),
    /// Prepare a dataset for training: face crops, key frames, flows and model inputs, cached.
    Prepare(data::PrepareArgs),
    /// Spotting evaluation on long videos (MEGC protocol) with the device's own spotting: each
    /// video replayed through merd's frame source, face box and spotter; scores overall, micro
    /// and macro, OUT/results.json and a timeline picture per video.
    SpotEval(data::SpotEvalArgs),
    /// Train and evaluate with leave-one-subject-out (or one shard of it with --fold i/n).
    Train(training::TrainArgs),
    /// Merge the fold results of run directories (e.g. `--fold i/n` shards) into one report.
    Report(training::ReportArgs),
    /// Score the ensemble of complete honest LOSO runs: each subject's held-out probabilities
    /// averaged over the runs (e.g. the same recipe with several seeds).
    Ensemble(training::EnsembleArgs),
    /// Convert a state dict saved by the official PyTorch code into a checkpoint for --init or
    /// for `mer export --classes`.
    ImportPytorch(training::ImportArgs),
    /// Training throughput (forward, backward and Adam update apart) and inference throughput
    /// of an architecture on random inputs.
    BenchTrain(training::BenchTrainArgs),
    /// Show the libtorch build and whether a CUDA GPU is usable.
    Info,
    /// Signing keys for model bundles.
    #[command(subcommand)]
    Keys(models::Keys),
    /// Sign an exported model into a bundle (`mer bundle MODEL.onnx --key KEY -o MODEL.merb`),
    /// or check one (`mer bundle verify MODEL.merb --pub KEY.pub`).
    Bundle(models::BundleArgs),
    /// Send a signed bundle to devices and activate it there (each device checks the signature,
    /// the manifest and the probe first); prints one line per device.
    Push(fleet::PushArgs),
    /// Return devices to the model they ran before the last activation.
    Rollback(fleet::RollbackArgs),
    /// The model, kept models and health of each device; `mer devices enroll` meets new ones.
    Devices(fleet::DevicesArgs),
    /// The events devices recorded: `mer events pull --from ADDR --out DIR`.
    #[command(subcommand)]
    Events(fleet::EventsCommand),
    /// Classify the samples of a float32 .npy file (N, C, H, W) with a model or bundle; prints JSON.
    Infer(models::InferArgs),
    /// Score an exported model on data it was not trained on (another dataset, other people):
    /// UF1, UAR, accuracy per source, confusion matrix and calibration, through tract.
    Evaluate(models::EvaluateArgs),
    /// Latency of an exported model in tract, onnxruntime and tch at the same thread count.
    BenchInfer(models::BenchInferArgs),
    /// Write a trained checkpoint as an ONNX model with its manifest, after checking that tract
    /// reproduces the checkpoint's logits.
    Export(models::ExportArgs),
}

fn main() -> Result<()> {
    mer_shared::logging::init();
    match Cli::parse().command {
        Command::Demo(args) => synth::demo(args),
        Command::Synth(command) => synth::synth(command),
        Command::Flow(args) => flows::flow(args),
        Command::FlowImage(args) => flows::flow_image(args),
        Command::BenchFlow(args) => flows::bench_flow(args),
        Command::Prepare(args) => data::prepare_dataset(args),
        Command::SpotEval(args) => data::spot_eval(args),
        Command::Train(args) => training::train(args),
        Command::Report(args) => training::report(args),
        Command::Ensemble(args) => training::ensemble(args),
        Command::ImportPytorch(args) => training::import_pytorch(args),
        Command::BenchTrain(args) => training::bench_train(args),
        Command::Info => training::info(),
        Command::Keys(command) => models::keys(command),
        Command::Bundle(args) => models::bundle(args),
        Command::Push(args) => fleet::push(args),
        Command::Rollback(args) => fleet::rollback(args),
        Command::Devices(args) => fleet::devices(args),
        Command::Events(command) => fleet::events(command),
        Command::Infer(args) => models::infer(args),
        Command::Evaluate(args) => models::evaluate(args),
        Command::BenchInfer(args) => models::bench_infer(args),
        Command::Export(args) => models::export(args),
    }
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks (duplicate names, groups, defaults), which otherwise only
    /// fire when the faulty subcommand is run.
    #[test]
    fn the_command_line_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
