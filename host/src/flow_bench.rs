//! TV-L1 against OpenCV's DualTVL1 on the same synthetic face pairs with known flow: accuracy
//! (mean end-point error) and single-thread speed, in one run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use mer_shared::Flow;
use mer_shared::flow::{Tvl1Params, read_flo, tvl1_flow};
use mer_shared::image::{load_gray, save_gray_png};
use mer_shared::synth::{Emotion, Event, FaceIdentity, Scene};
use serde::Serialize;

/// A frame pair on disk and its true flow.
pub struct Pair {
    pub a: PathBuf,
    pub b: PathBuf,
    pub truth: Flow,
    pub amplitude_px: f32,
}

/// Writes `n` 128×128 face pairs whose peak motion spans 0.1–3 px.
pub fn make_pairs(dir: &Path, n: usize, seed: u64) -> Result<Vec<Pair>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut pairs = Vec::with_capacity(n);
    for i in 0..n {
        let mut rng = mer_shared::synth::pair_rng(seed, i as u64);
        let identity = FaceIdentity::random(&mut rng);
        let amplitude = if n == 1 { 1.0 } else { 0.1 + 2.9 * i as f32 / (n - 1) as f32 };
        let mut scene = Scene::new(seed + i as u64, 128, 128, 200.0, 21, identity, (64.0, 66.0, 58.0, 62.0));
        let emotion = Emotion::CYCLE[i % Emotion::CYCLE.len()];
        scene.events.push(Event::new(&mut rng, emotion, (0, 20, 40), amplitude, 58.0));
        let (a, b) = (dir.join(format!("a_{i}.png")), dir.join(format!("b_{i}.png")));
        save_gray_png(&scene.render(0), &a)?;
        save_gray_png(&scene.render(20), &b)?;
        pairs.push(Pair { a, b, truth: scene.true_flow(0, 20), amplitude_px: amplitude });
    }
    Ok(pairs)
}

/// The Python interpreter with OpenCV: `MER_PYTHON`, else the repo-local venv.
pub fn reference_python() -> PathBuf {
    std::env::var_os("MER_PYTHON").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"))
}

fn reference_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/reference").join(name)
}

/// Runs OpenCV's DualTVL1 on the pairs; returns its flows and seconds per pair.
pub fn opencv_flows(dir: &Path, n: usize) -> Result<(Vec<Flow>, Vec<f64>, String)> {
    let python = reference_python();
    if !python.exists() {
        bail!("{} not found: run scripts/bootstrap.sh to create the reference venv", python.display());
    }
    let status = Command::new(&python)
        .arg(reference_script("tvl1_opencv.py"))
        .arg(dir)
        .arg(n.to_string())
        .arg(dir)
        .status()
        .with_context(|| format!("running {}", python.display()))?;
    if !status.success() {
        bail!("the OpenCV reference script failed ({status})");
    }
    let times: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("opencv_times.json"))?)?;
    let secs = times["seconds"].as_array().context("opencv_times.json has no seconds")?.iter().filter_map(|v| v.as_f64()).collect();
    let version = times["opencv"].as_str().unwrap_or("?").to_string();
    let flows = (0..n).map(|i| read_flo(&dir.join(format!("opencv_{i}.flo")))).collect::<Result<Vec<_>, _>>()?;
    Ok((flows, secs, version))
}

/// Our TV-L1 on the same files, one thread; returns flows and seconds per pair.
pub fn own_flows(pairs: &[Pair], params: &Tvl1Params) -> Result<(Vec<Flow>, Vec<f64>)> {
    let mut flows = Vec::new();
    let mut secs = Vec::new();
    for p in pairs {
        let (a, b) = (load_gray(&p.a)?, load_gray(&p.b)?);
        let start = Instant::now();
        let f = tvl1_flow(&a, &b, params, 1)?;
        secs.push(start.elapsed().as_secs_f64());
        flows.push(f);
    }
    Ok((flows, secs))
}

#[derive(Debug, Serialize)]
pub struct FlowBenchReport {
    pub pairs: usize,
    pub opencv_version: String,
    pub own_epe: f64,
    pub opencv_epe: f64,
    pub own_ms_per_pair: f64,
    pub opencv_ms_per_pair: f64,
    pub speedup: f64,
}

pub fn mean_epe(flows: &[Flow], pairs: &[Pair]) -> Result<f64> {
    let mut sum = 0.0;
    for (f, p) in flows.iter().zip(pairs) {
        sum += f.mean_endpoint_error(&p.truth, 0)? as f64;
    }
    Ok(sum / pairs.len() as f64)
}

/// Generates pairs in `dir`, runs both solvers and compares them.
pub fn run(dir: &Path, n: usize, seed: u64) -> Result<FlowBenchReport> {
    let pairs = make_pairs(dir, n, seed)?;
    let (cv, cv_secs, opencv_version) = opencv_flows(dir, n)?;
    let (own, own_secs) = own_flows(&pairs, &Tvl1Params::default())?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (own_ms, cv_ms) = (1e3 * mean(&own_secs), 1e3 * mean(&cv_secs));
    Ok(FlowBenchReport {
        pairs: n,
        opencv_version,
        own_epe: mean_epe(&own, &pairs)?,
        opencv_epe: mean_epe(&cv, &pairs)?,
        own_ms_per_pair: own_ms,
        opencv_ms_per_pair: cv_ms,
        speedup: cv_ms / own_ms,
    })
}
