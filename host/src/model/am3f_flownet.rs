//! AM3F-FlowNet, as the project's reconstruction "R1" of the article (Fu et al., Entropy 2023),
//! whose body, code and numbers could not be obtained: everything below beyond "three branches
//! for u, v and strain, multi-scale fusion with spatial attention at each scale, channel-attention
//! reweighting per flow, a log-prior-adjusted loss" is this project's design, specified in
//! docs/AM3F-FlowNet.md and not the authors'.
//!
//! Input (B, 3, 28, 28): u, v and optical strain in [0, 1]; channel c feeds branch c.
//! Each branch: stem conv → two multi-scale fusion blocks (3×3, 5×5, 7×7 paths, each with
//! CBAM-style spatial attention, fused by a 1×1 conv, residual shortcut, 2×2 max-pool) → 64×7×7.
//! The reweighting module pools all three branches, and one small MLP gives each branch its own
//! channel weights. Fusion: concat → 1×1 conv → BN → ReLU → global average → dropout → linear.

use tch::Tensor;
use tch::nn;

use mer_shared::input::InputLayout;

use super::losses::{LossConfig, LossTerms, Targets, single_term};
use super::ops::{BatchNorm, Conv2d, Eager, Ops, Pool, linear};
use super::{Arch, ArchSettings, Architecture, Forward, Network};

const BRANCHES: [&str; 3] = ["branch_u", "branch_v", "branch_s"];
const DROPOUT: f64 = 0.5;

/// conv (no bias, "same" padding) → BN.
#[derive(Debug)]
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBn {
    /// Weights under `path.0`, batch norm under `path.1`, as an `nn.Sequential` would name them.
    fn new(path: &nn::Path, i: i64, o: i64, k: i64) -> ConvBn {
        ConvBn { conv: Conv2d::with_bias(&(path / "0"), i, o, k, 1, k / 2, false), bn: BatchNorm::new(&(path / "1"), o) }
    }

    fn forward<O: Ops>(&self, ops: &mut O, x: &O::T) -> O::T {
        self.conv.forward_bn(ops, x, &self.bn)
    }
}

/// `σ(conv7×7([mean over channels; max over channels]))`, multiplied into the map.
#[derive(Debug)]
struct SpatialAttention {
    conv: Conv2d,
}

impl SpatialAttention {
    fn new(path: &nn::Path) -> SpatialAttention {
        SpatialAttention { conv: Conv2d::with_bias(&(path / "conv"), 2, 1, 7, 1, 3, false) }
    }

    fn forward<O: Ops>(&self, ops: &mut O, x: &O::T) -> O::T {
        let pooled = [ops.reduce_keep(x, 1, Pool::Mean), ops.reduce_keep(x, 1, Pool::Max)];
        let both = ops.concat(&pooled, 1);
        let logits = self.conv.forward(ops, &both);
        let weight = ops.sigmoid(&logits);
        ops.mul(x, &weight)
    }
}

/// Multi-scale fusion block: three attended paths, fused, plus a shortcut, then a 2×2 max-pool.
#[derive(Debug)]
struct MultiScaleBlock {
    paths: Vec<(ConvBn, SpatialAttention)>,
    fuse: ConvBn,
    shortcut: ConvBn,
}

impl MultiScaleBlock {
    fn new(path: &nn::Path, i: i64, o: i64) -> MultiScaleBlock {
        let paths = [3, 5, 7]
            .iter()
            .enumerate()
            .map(|(n, &k)| (ConvBn::new(&(path / "paths" / n as i64), i, o, k), SpatialAttention::new(&(path / "attention" / n as i64))))
            .collect();
        MultiScaleBlock { paths, fuse: ConvBn::new(&(path / "fuse"), 3 * o, o, 1), shortcut: ConvBn::new(&(path / "shortcut"), i, o, 1) }
    }

    fn forward<O: Ops>(&self, ops: &mut O, x: &O::T) -> O::T {
        let attended: Vec<O::T> = self
            .paths
            .iter()
            .map(|(c, a)| {
                let y = c.forward(ops, x);
                let y = ops.relu(&y);
                a.forward(ops, &y)
            })
            .collect();
        let joined = ops.concat(&attended, 1);
        let fused = self.fuse.forward(ops, &joined);
        let shortcut = self.shortcut.forward(ops, x);
        let sum = ops.add(&fused, &shortcut);
        let y = ops.relu(&sum);
        ops.max_pool2d(&y, 2, 2, 0)
    }
}

#[derive(Debug)]
struct Branch {
    stem: ConvBn,
    msff: [MultiScaleBlock; 2],
}

impl Branch {
    fn new(path: &nn::Path) -> Branch {
        Branch {
            stem: ConvBn::new(&(path / "stem"), 1, 16, 3),
            msff: [MultiScaleBlock::new(&(path / "msff1"), 16, 32), MultiScaleBlock::new(&(path / "msff2"), 32, 64)],
        }
    }

    fn forward<O: Ops>(&self, ops: &mut O, x: &O::T) -> O::T {
        let y = self.stem.forward(ops, x);
        let y = ops.relu(&y);
        let y = self.msff[0].forward(ops, &y);
        self.msff[1].forward(ops, &y)
    }
}

#[derive(Debug)]
pub struct Am3fFlowNet {
    branches: [Branch; 3],
    reweight: [nn::Linear; 2],
    fuse: ConvBn,
    head: nn::Linear,
}

impl Am3fFlowNet {
    pub fn new(root: &nn::Path, classes: i64) -> Am3fFlowNet {
        Am3fFlowNet {
            branches: BRANCHES.map(|b| Branch::new(&(root / b))),
            reweight: [linear(&(root / "reweight" / "fc1"), 192, 48), linear(&(root / "reweight" / "fc2"), 48, 192)],
            fuse: ConvBn::new(&(root / "fuse"), 192, 128, 1),
            head: linear(&(root / "head"), 128, classes),
        }
    }
}

impl Forward for Am3fFlowNet {
    fn logits<O: Ops>(&self, ops: &mut O, x: &O::T) -> O::T {
        let features: Vec<O::T> = self
            .branches
            .iter()
            .enumerate()
            .map(|(c, b)| {
                let plane = ops.narrow(x, 1, c as i64, 1);
                b.forward(ops, &plane)
            })
            .collect();
        let pooled: Vec<O::T> = features.iter().map(|f| ops.global_avg_pool(f)).collect();
        let z = ops.concat(&pooled, 1);
        let hidden = ops.linear(&z, &self.reweight[0]);
        let hidden = ops.relu(&hidden);
        let weights = ops.linear(&hidden, &self.reweight[1]);
        let weights = ops.sigmoid(&weights);
        let reweighted: Vec<O::T> = features
            .iter()
            .enumerate()
            .map(|(c, f)| {
                let w = ops.narrow(&weights, 1, 64 * c as i64, 64);
                let w = ops.reshape(&w, &[-1, 64, 1, 1]);
                ops.mul(f, &w)
            })
            .collect();
        let joined = ops.concat(&reweighted, 1);
        let fused = self.fuse.forward(ops, &joined);
        let fused = ops.relu(&fused);
        let pooled = ops.global_avg_pool(&fused);
        let dropped = ops.dropout(&pooled, DROPOUT);
        ops.linear(&dropped, &self.head)
    }

    /// Logit-adjusted cross-entropy with the training fold's class priors.
    fn loss(&self, x: &Tensor, y: &Tensor, targets: &Targets, loss: &LossConfig) -> (Tensor, LossTerms, Tensor) {
        let logits = self.logits(&mut Eager::new(true), x);
        single_term(logit_adjusted_loss(&logits, y, targets.counts, loss.tau), logits)
    }
}

/// The reconstruction R1.
struct Am3fArch;
pub const AM3F_FLOWNET: Arch = Arch(&Am3fArch);

impl Architecture for Am3fArch {
    fn name(&self) -> &'static str {
        "am3f-flownet"
    }

    fn about(&self) -> &'static str {
        "AM3F-FlowNet reconstruction R1: u, v and strain branches with multi-scale fusion (3×28×28)"
    }

    fn input_layout(&self) -> InputLayout {
        InputLayout::FlowStrain28
    }

    fn build(&self, root: &nn::Path, classes: i64, _settings: &ArchSettings) -> Box<dyn Network> {
        Box::new(Am3fFlowNet::new(root, classes))
    }

    fn describe(&self, _settings: &ArchSettings, loss: &LossConfig) -> String {
        format!("reconstruction R1 (not the authors' design), logit adjustment tau {}", loss.tau)
    }
}

/// The reconstruction's loss (Menon et al. 2021 logit adjustment): cross-entropy on
/// `logits + τ·log(prior)`, priors from the training fold's class counts. Inference uses the raw
/// logits, so rare classes must win by a larger margin during training.
pub fn logit_adjusted_loss(logits: &Tensor, targets: &Tensor, class_counts: &[usize], tau: f64) -> Tensor {
    let total: usize = class_counts.iter().sum();
    // A class absent from the fold gets the prior of one sample, not log 0.
    let log_prior: Vec<f32> = class_counts.iter().map(|&n| ((n.max(1) as f64) / total.max(1) as f64).ln() as f32).collect();
    let shift = Tensor::from_slice(&log_prior).to_device(logits.device()) * tau;
    (logits + shift).cross_entropy_for_logits(targets)
}

#[cfg(test)]
mod tests {
    use tch::nn::VarStore;
    use tch::{Device, Kind};

    use super::*;

    #[test]
    fn the_reconstruction_has_its_specified_size() {
        let vs = VarStore::new(Device::Cpu);
        let model = Am3fFlowNet::new(&vs.root(), 3);
        let trainable: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
        assert_eq!(trainable, 740_263);
        let logits = model.logits(&mut Eager::new(true), &Tensor::rand([4, 3, 28, 28], (Kind::Float, Device::Cpu)));
        assert_eq!(logits.size(), [4, 3]);
        assert!(vs.variables().contains_key("branch_s.msff2.paths.2.0.weight"));
    }

    #[test]
    fn logit_adjustment_raises_the_loss_of_rare_classes() {
        let logits = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        let targets = Tensor::from_slice(&[0i64, 2]);
        let plain = f64::try_from(logits.cross_entropy_for_logits(&targets)).unwrap();
        assert!((plain - 3f64.ln()).abs() < 1e-6);
        // Priors 0.6 / 0.3 / 0.1: the adjusted loss of class c is -log(π_c) at zero logits.
        let adjusted =
            |t: &[i64]| f64::try_from(logit_adjusted_loss(&logits.narrow(0, 0, 1), &Tensor::from_slice(t), &[6, 3, 1], 1.0)).unwrap();
        assert!((adjusted(&[0]) - -(0.6f64.ln())).abs() < 1e-5);
        assert!((adjusted(&[2]) - -(0.1f64.ln())).abs() < 1e-5);
        assert!((f64::try_from(logit_adjusted_loss(&logits, &targets, &[6, 3, 1], 0.0)).unwrap() - plain).abs() < 1e-6);
    }
}
