//! Adam with L2 weight decay added to the gradient (torch.optim.Adam semantics), kept in Rust so
//! its state can be checkpointed with the weights and a resumed run continues exactly.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Cosine decay of the rate from `lr` to this value over `decay_steps` steps (none: constant).
    #[serde(default)]
    pub cosine: Option<Cosine>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cosine {
    pub final_lr: f64,
    pub steps: usize,
}

impl Default for AdamConfig {
    /// The official training settings.
    fn default() -> Self {
        AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 5e-4, cosine: None }
    }
}

impl AdamConfig {
    /// The rate of step `step` (1-based): `lr`, or on the cosine from `lr` down to `final_lr`
    /// (torch's CosineAnnealingLR stepped every iteration).
    pub fn rate(&self, step: i64) -> f64 {
        match self.cosine {
            None => self.lr,
            Some(Cosine { final_lr, steps }) => {
                let t = ((step - 1).max(0) as f64 / steps.max(1) as f64).min(1.0);
                final_lr + (self.lr - final_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

pub struct Adam {
    config: AdamConfig,
    step: i64,
    /// Trainable variables by name, in name order so the state layout is stable.
    params: Vec<(String, Tensor)>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
}

impl Adam {
    pub fn new(vs: &nn::VarStore, config: AdamConfig) -> Adam {
        let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let zeros = |p: &Vec<(String, Tensor)>| p.iter().map(|(_, t)| t.zeros_like().detach()).collect();
        Adam { config, step: 0, exp_avg: zeros(&params), exp_avg_sq: zeros(&params), params }
    }

    pub fn steps_taken(&self) -> i64 {
        self.step
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    pub fn step(&mut self) {
        self.step += 1;
        let c = self.config;
        let lr = c.rate(self.step);
        let bias1 = 1.0 - c.beta1.powi(self.step as i32);
        let bias2_sqrt = (1.0 - c.beta2.powi(self.step as i32)).sqrt();
        tch::no_grad(|| {
            for (((_, p), m), v) in self.params.iter_mut().zip(&mut self.exp_avg).zip(&mut self.exp_avg_sq) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let g = if c.weight_decay != 0.0 { g + &*p * c.weight_decay } else { g };
                // In place, as torch.optim.Adam: the large models are bound by memory traffic.
                let _ = m.lerp_(&g, 1.0 - c.beta1);
                let _ = v.g_mul_scalar_(c.beta2).addcmul_(&(&g * (1.0 - c.beta2)), &g);
                let mut denom = v.sqrt();
                let _ = denom.g_div_scalar_(bias2_sqrt).g_add_scalar_(c.eps);
                let _ = p.addcdiv_(&(&*m * (-lr / bias1)), &denom);
            }
        });
    }

    /// Moments and step count as named tensors (`adam.exp_avg.<var>`, `adam.exp_avg_sq.<var>`,
    /// `adam.step`), for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("adam.step".to_string(), Tensor::from(self.step))];
        for (((name, _), m), v) in self.params.iter().zip(&self.exp_avg).zip(&self.exp_avg_sq) {
            out.push((format!("adam.exp_avg.{name}"), m.to_device(tch::Device::Cpu)));
            out.push((format!("adam.exp_avg_sq.{name}"), v.to_device(tch::Device::Cpu)));
        }
        out
    }

    pub fn load_state(&mut self, named: &[(String, Tensor)]) -> Result<()> {
        let find = |key: &str| named.iter().find(|(n, _)| n == key).map(|(_, t)| t).with_context(|| format!("optimiser state lacks {key}"));
        self.step = find("adam.step")?.int64_value(&[]);
        tch::no_grad(|| -> Result<()> {
            for (((name, p), m), v) in self.params.iter().zip(&mut self.exp_avg).zip(&mut self.exp_avg_sq) {
                for (slot, key) in [(&mut *m, format!("adam.exp_avg.{name}")), (&mut *v, format!("adam.exp_avg_sq.{name}"))] {
                    let t = find(&key)?;
                    if t.size() != p.size() {
                        bail!("optimiser state {key} has shape {:?}, the variable {:?}", t.size(), p.size());
                    }
                    slot.copy_(&t.to_kind(Kind::Float));
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::OptimizerConfig;

    #[test]
    fn the_cosine_runs_from_the_rate_to_its_final_value() {
        let constant = AdamConfig::default();
        assert_eq!((constant.rate(1), constant.rate(1000)), (1e-3, 1e-3));
        let cosine = AdamConfig { cosine: Some(Cosine { final_lr: 1e-5, steps: 100 }), ..AdamConfig::default() };
        assert_eq!(cosine.rate(1), 1e-3);
        assert!((cosine.rate(51) - (1e-5 + (1e-3 - 1e-5) / 2.0)).abs() < 1e-12);
        assert!((cosine.rate(101) - 1e-5).abs() < 1e-12 && (cosine.rate(500) - 1e-5).abs() < 1e-12);
        assert!((2..=101).all(|k| cosine.rate(k) < cosine.rate(k - 1)));
    }

    /// A tiny regression problem, stepped by this Adam and by libtorch's own Adam from the same
    /// start. Data and initial weights are passed in rather than re-seeded, because other tests
    /// running in parallel draw from the same global generator.
    fn run(own: bool, start: &[Tensor; 4]) -> Vec<f32> {
        let [x, y, w0, b0] = start;
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let mut lin = nn::linear(vs.root() / "lin", 4, 2, Default::default());
        tch::no_grad(|| {
            lin.ws.copy_(w0);
            lin.bs.as_mut().unwrap().copy_(b0);
        });
        let cfg = AdamConfig { lr: 0.05, weight_decay: 0.01, ..AdamConfig::default() };
        let loss = || (x.apply(&lin) - y).square().mean(Kind::Float);
        if own {
            let mut opt = Adam::new(&vs, cfg);
            for _ in 0..20 {
                opt.zero_grad();
                loss().backward();
                opt.step();
            }
        } else {
            let mut opt = nn::Adam { beta1: cfg.beta1, beta2: cfg.beta2, wd: cfg.weight_decay, eps: cfg.eps, amsgrad: false }
                .build(&vs, cfg.lr)
                .unwrap();
            for _ in 0..20 {
                opt.backward_step(&loss());
            }
        }
        Vec::<f32>::try_from(lin.ws.flatten(0, -1)).unwrap()
    }

    #[test]
    fn matches_libtorch_adam_with_coupled_weight_decay() {
        let cpu = (Kind::Float, tch::Device::Cpu);
        let start = [Tensor::randn([8, 4], cpu), Tensor::randn([8, 2], cpu), Tensor::randn([2, 4], cpu), Tensor::randn([2], cpu)];
        let (a, b) = (run(true, &start), run(false, &start));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }
}
