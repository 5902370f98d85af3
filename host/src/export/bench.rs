//! `mer bench-infer`: latency of one exported model in tract, in onnxruntime (the reference
//! venv) and as the tch forward pass, on the same random input and thread count.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use tracing::warn;

use anyhow::{Context, Result, bail};
use mer_shared::bundle::{Bundle, MAGIC};
use mer_shared::inference::{OnnxModel, OpTime};
use mer_shared::manifest::{Manifest, Probe, WeightsOrigin};
use serde::Serialize;
use tch::{Device, nn};

use super::tch_logits;
use crate::flow_bench::reference_python;
use crate::model::ensemble::Ensemble;
use crate::model::{Arch, Logits};
use crate::train::config::TrainConfig;

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub runtime: String,
    pub batch: usize,
    pub threads: usize,
    pub median_ms: f64,
    pub per_sample_ms: f64,
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn time_ms(iters: usize, warmup: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(median(times))
}

fn latency(runtime: &str, batch: usize, threads: usize, median_ms: f64) -> Latency {
    Latency { runtime: runtime.into(), batch, threads, median_ms, per_sample_ms: median_ms / batch as f64 }
}

/// The tch model the manifest describes (random weights: latency does not depend on them), an
/// ensemble with all its members. Imported weights have no training configuration: they are
/// the official configuration.
fn tch_model(manifest: &Manifest, vs: &nn::VarStore) -> Result<Box<dyn Logits>> {
    let arch: Arch = manifest.architecture.parse()?;
    let classes = manifest.classes.len() as i64;
    let config_of = |config: &serde_json::Value| -> Result<TrainConfig> {
        serde_json::from_value(config.clone()).context("the manifest's training configuration cannot be read")
    };
    if !manifest.training.ensemble.is_empty() {
        let members = manifest.training.ensemble.iter().enumerate().map(|(i, m)| {
            let config = config_of(&m.config)?;
            Ok(config.arch.build(&(vs.root() / format!("member{i}")), classes, &config.settings))
        });
        return Ok(Box::new(Ensemble::new(members.collect::<Result<_>>()?)));
    }
    let settings = match manifest.training.weights {
        WeightsOrigin::Imported { .. } => arch.default_settings(),
        WeightsOrigin::MerTrain => config_of(&manifest.training.config)?.settings,
    };
    Ok(Box::new(arch.build(&vs.root(), classes, &settings)))
}

/// The ONNX bytes of a .onnx file or of a bundle; onnxruntime reads a file, so a bundle's ONNX
/// part is also written to a temporary one.
fn read_onnx(path: &Path) -> Result<(Vec<u8>, Option<tempfile::NamedTempFile>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if !bytes.starts_with(MAGIC) {
        return Ok((bytes, None));
    }
    let bundle = Bundle::from_bytes(&bytes)?;
    bundle.verify_integrity()?;
    let mut file = tempfile::Builder::new().suffix(".onnx").tempfile()?;
    file.write_all(bundle.onnx())?;
    Ok((bundle.into_parts().1, Some(file)))
}

/// tract's time per kind of node on one random sample, in one thread.
pub fn profile(model_path: &Path, runs: usize) -> Result<Vec<OpTime>> {
    let model = OnnxModel::from_bytes(&read_onnx(model_path)?.0)?;
    let sample = Probe::input(1, 1, model.input_shape());
    model.profile(&sample, 3)?; // warm-up
    Ok(model.profile(&sample, runs)?)
}

/// Medians over `iters` runs after `warmup` runs, per batch size and runtime.
pub fn measure(model_path: &Path, batches: &[usize], threads: usize, iters: usize, warmup: usize) -> Result<Vec<Latency>> {
    let (bytes, unpacked) = read_onnx(model_path)?;
    let model_path = unpacked.as_ref().map_or(model_path, |file| file.path());
    let tract = OnnxModel::from_bytes(&bytes)?.with_threads(threads);
    let manifest = tract.manifest().with_context(|| format!("{} has no mer manifest", model_path.display()))??;
    tch::set_num_threads(threads as i32);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = tch_model(&manifest, &vs)?;
    let shape = tract.input_shape();
    let python = reference_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/reference/onnx_reference.py");
    let mut rows = Vec::new();
    for &batch in batches {
        let input = Probe::input(1, batch, shape);
        let ms = time_ms(iters, warmup, || tract.run(&input, batch).map(drop).map_err(Into::into))?;
        rows.push(latency("tract", batch, threads, ms));
        let ms = time_ms(iters, warmup, || {
            tch_logits(&*model, &input, batch, shape);
            Ok(())
        })?;
        rows.push(latency("tch (libtorch) forward", batch, threads, ms));
        if python.exists() {
            let out = Command::new(&python)
                .arg(&script)
                .args(["bench"])
                .arg(model_path)
                .args(["--batch", &batch.to_string(), "--threads", &threads.to_string()])
                .args(["--iters", &iters.to_string(), "--warmup", &warmup.to_string()])
                .output()
                .context("running the onnxruntime benchmark")?;
            if !out.status.success() {
                bail!("the onnxruntime benchmark failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("reading the onnxruntime benchmark's output")?;
            let runtime = v["runtime"].as_str().unwrap_or("onnxruntime").to_string();
            rows.push(latency(&runtime, batch, threads, v["median_ms"].as_f64().unwrap_or(f64::NAN)));
        } else {
            warn!("onnxruntime not measured: {} is missing (run scripts/bootstrap.sh)", python.display());
        }
    }
    Ok(rows)
}
