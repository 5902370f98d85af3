//! Training and inference throughput of any architecture on random inputs (`mer bench-train`),
//! with one optimiser step split into its forward pass, backward pass and Adam update.

use std::time::Instant;

use serde::Serialize;
use tch::{Device, Kind, Tensor, nn};

use super::config::TrainConfig;
use super::losses::Targets;
use super::optimizer::Adam;

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub arch: String,
    pub parameters: i64,
    pub device: String,
    pub threads: i32,
    pub batch: usize,
    pub iterations: usize,
    /// One optimiser step: forward with the architecture's training loss, backward, Adam.
    pub train_ms_per_iteration: f64,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optimizer_ms: f64,
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

/// Seconds `f` takes, with the device drained before the clock stops.
fn timed(device: Device, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    sync(device);
    t.elapsed().as_secs_f64()
}

/// `config` gives the architecture, the optimiser and the loss settings, as `mer train` reads
/// them; the classes are those of the architecture's usual data.
pub fn measure(device: Device, config: &TrainConfig, iterations: usize, warmup: usize) -> anyhow::Result<Throughput> {
    config.validate()?;
    let arch = config.arch;
    let classes = arch.bench_classes();
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let model = arch.build(&vs.root(), classes, &config.settings);
    let mut opt = Adam::new(&vs, config.optimizer);
    let b = config.batch as i64;
    let [c, h, w] = arch.input_shape().map(|d| d as i64);
    let x = Tensor::rand([b, c, h, w], (Kind::Float, device));
    let y = Tensor::arange(b, (Kind::Int64, device)).remainder(classes);
    let counts: Vec<usize> = (0..classes).map(|k| (0..b).filter(|i| i % classes == k).count().max(1)).collect();
    let weights = Tensor::full([classes], 1.0 / classes as f64, (Kind::Float, device));
    let targets = Targets { weights: &weights, counts: &counts };

    let (mut forward, mut backward, mut update) = (0.0, 0.0, 0.0);
    for i in 0..warmup + iterations {
        sync(device);
        let mut loss = None;
        let f = timed(device, || loss = Some(model.training_loss(&x, &y, &targets, &config.loss).0));
        opt.zero_grad();
        let loss = loss.expect("the loss was computed");
        let bw = timed(device, || loss.backward());
        let u = timed(device, || opt.step());
        if i >= warmup {
            (forward, backward, update) = (forward + f, backward + bw, update + u);
        }
    }
    let n = iterations.max(1) as f64;
    let train = (forward + backward + update) / n;
    let infer = tch::no_grad(|| {
        for _ in 0..warmup {
            let _ = model.logits_t(&x, false);
        }
        timed(device, || {
            for _ in 0..iterations {
                let _ = model.logits_t(&x, false);
            }
        }) / n
    });
    let parameters = vs.trainable_variables().iter().map(Tensor::numel).sum::<usize>() as i64;
    Ok(Throughput {
        arch: arch.name().into(),
        parameters,
        device: format!("{device:?}"),
        threads: tch::get_num_threads(),
        batch: config.batch,
        iterations,
        train_ms_per_iteration: train * 1e3,
        forward_ms: forward / n * 1e3,
        backward_ms: backward / n * 1e3,
        optimizer_ms: update / n * 1e3,
        train_samples_per_s: config.batch as f64 / train,
        infer_ms_per_batch: infer * 1e3,
        infer_samples_per_s: config.batch as f64 / infer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_of_a_step_is_timed_for_the_architecture_asked_for() {
        for (arch, parameters) in [("am3f-flownet", Some(740_263)), ("skd-tstsan-flow", None)] {
            let config = TrainConfig { batch: 4, ..TrainConfig::new(arch.parse().unwrap()) };
            let r = measure(Device::Cpu, &config, 2, 1).unwrap();
            assert_eq!(r.arch, arch);
            assert!(parameters.is_none_or(|p| r.parameters == p) && r.parameters > 0, "{r:?}");
            assert!(r.forward_ms > 0.0 && r.backward_ms > 0.0 && r.optimizer_ms > 0.0 && r.infer_ms_per_batch > 0.0, "{r:?}");
            let sum = r.forward_ms + r.backward_ms + r.optimizer_ms;
            assert!((r.train_ms_per_iteration - sum).abs() < 1e-6 * sum, "{r:?}");
        }
    }
}
