//! Training and inference throughput of SKD-TSTSAN on random inputs (`mer bench-train`).

use std::time::Instant;

use serde::Serialize;
use tch::{Device, Kind, Tensor, nn};

use super::losses::{LossConfig, skd_loss};
use super::optimizer::{Adam, AdamConfig};
use crate::model::skd_tstsan::{SkdConfig, SkdTstsan};

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub device: String,
    pub threads: i32,
    pub batch: usize,
    pub iterations: usize,
    /// One optimiser step: forward with all heads, SKD loss, backward, Adam.
    pub train_ms_per_iteration: f64,
    pub train_samples_per_s: f64,
    /// Eval-mode main-classifier forward.
    pub infer_ms_per_batch: f64,
    pub infer_samples_per_s: f64,
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

pub fn measure(device: Device, batch: usize, iterations: usize, warmup: usize) -> Throughput {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let model = SkdTstsan::new(&vs.root(), SkdConfig::new(5));
    let mut opt = Adam::new(&vs, AdamConfig::default());
    let b = batch as i64;
    let x = Tensor::rand([b, 38, 48, 48], (Kind::Float, device));
    let y = Tensor::arange(b, (Kind::Int64, device)).remainder(5);
    let w = Tensor::full([5], 0.2, (Kind::Float, device));
    let step = |opt: &mut Adam| {
        let out = model.forward_t(&x, true);
        let (loss, _) = skd_loss(&out, &y, &w, &LossConfig::default());
        opt.zero_grad();
        loss.backward();
        opt.step();
    };
    for _ in 0..warmup {
        step(&mut opt);
    }
    sync(device);
    let t = Instant::now();
    for _ in 0..iterations {
        step(&mut opt);
    }
    sync(device);
    let train = t.elapsed().as_secs_f64() / iterations as f64;
    let infer = tch::no_grad(|| {
        for _ in 0..warmup {
            let _ = model.logits_t(&x, false);
        }
        sync(device);
        let t = Instant::now();
        for _ in 0..iterations {
            let _ = model.logits_t(&x, false);
        }
        sync(device);
        t.elapsed().as_secs_f64() / iterations as f64
    });
    Throughput {
        device: format!("{device:?}"),
        threads: tch::get_num_threads(),
        batch,
        iterations,
        train_ms_per_iteration: train * 1e3,
        train_samples_per_s: batch as f64 / train,
        infer_ms_per_batch: infer * 1e3,
        infer_samples_per_s: batch as f64 / infer,
    }
}
