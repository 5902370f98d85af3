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

use tch::nn::{self, ConvConfig};
use tch::{Kind, Tensor};

use super::layers::{BatchNorm, linear, torch_default_init};
use crate::export::onnx_graph::OnnxGraph;

const BRANCHES: [&str; 3] = ["branch_u", "branch_v", "branch_s"];
const DROPOUT: f64 = 0.5;

fn conv(path: &nn::Path, i: i64, o: i64, k: i64) -> nn::Conv2D {
    nn::conv2d(path, i, o, k, ConvConfig { padding: k / 2, bias: false, ws_init: torch_default_init(i * k * k), ..Default::default() })
}

/// conv (no bias) → BN.
#[derive(Debug)]
struct ConvBn {
    conv: nn::Conv2D,
    bn: BatchNorm,
}

impl ConvBn {
    /// Weights under `path.0`, batch norm under `path.1`, as an `nn.Sequential` would name them.
    fn new(path: &nn::Path, i: i64, o: i64, k: i64) -> ConvBn {
        ConvBn { conv: conv(&(path / "0"), i, o, k), bn: BatchNorm::new(&(path / "1"), o) }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        self.bn.forward_t(&x.apply(&self.conv), train)
    }

    /// The conv with its batch norm folded in.
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> String {
        let (weight, bias) = tch::no_grad(|| self.bn.fold_into(&self.conv.ws, None));
        g.conv2d(x, &weight, Some(&bias), 1, weight.size()[2] / 2)
    }
}

/// `σ(conv7×7([mean over channels; max over channels]))`, multiplied into the map.
#[derive(Debug)]
struct SpatialAttention {
    conv: nn::Conv2D,
}

impl SpatialAttention {
    fn new(path: &nn::Path) -> SpatialAttention {
        SpatialAttention { conv: conv(&(path / "conv"), 2, 1, 7) }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mean = x.mean_dim(&[1i64][..], true, Kind::Float);
        let max = x.amax(&[1i64][..], true);
        x * Tensor::cat(&[mean, max], 1).apply(&self.conv).sigmoid()
    }

    fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> String {
        let pooled = [g.reduce("ReduceMean", x, &[1]), g.reduce("ReduceMax", x, &[1])];
        let both = g.concat(&pooled, 1);
        let logits = g.conv2d(&both, &self.conv.ws, None, 1, 3);
        let weight = g.node("Sigmoid", &[&logits], vec![]);
        g.node("Mul", &[x, &weight], vec![])
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

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let attended: Vec<Tensor> = self.paths.iter().map(|(c, a)| a.forward(&c.forward(x, train).relu())).collect();
        let fused = self.fuse.forward(&Tensor::cat(&attended, 1), train) + self.shortcut.forward(x, train);
        fused.relu().max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
    }

    fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> String {
        let attended: Vec<String> = self
            .paths
            .iter()
            .map(|(c, a)| {
                let y = c.to_onnx(g, x);
                let y = g.relu(&y);
                a.to_onnx(g, &y)
            })
            .collect();
        let joined = g.concat(&attended, 1);
        let fused = self.fuse.to_onnx(g, &joined);
        let shortcut = self.shortcut.to_onnx(g, x);
        let sum = g.add(&fused, &shortcut);
        let y = g.relu(&sum);
        g.max_pool(&y, 2, 2, 0)
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

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let x = self.stem.forward(x, train).relu();
        self.msff[1].forward(&self.msff[0].forward(&x, train), train)
    }

    fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> String {
        let y = self.stem.to_onnx(g, x);
        let y = g.relu(&y);
        let y = self.msff[0].to_onnx(g, &y);
        self.msff[1].to_onnx(g, &y)
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

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let features: Vec<Tensor> = self.branches.iter().enumerate().map(|(c, b)| b.forward(&x.narrow(1, c as i64, 1), train)).collect();
        let pooled: Vec<Tensor> = features.iter().map(|f| f.mean_dim(&[2i64, 3][..], false, Kind::Float)).collect();
        let weights = Tensor::cat(&pooled, 1).apply(&self.reweight[0]).relu().apply(&self.reweight[1]).sigmoid();
        let b = x.size()[0];
        let reweighted: Vec<Tensor> =
            features.iter().enumerate().map(|(c, f)| f * weights.narrow(1, 64 * c as i64, 64).view([b, 64, 1, 1])).collect();
        let fused = self.fuse.forward(&Tensor::cat(&reweighted, 1), train).relu();
        fused.mean_dim(&[2i64, 3][..], false, Kind::Float).dropout(DROPOUT, train).apply(&self.head)
    }

    /// The inference graph (batch norms folded, dropout gone); returns the logits' name.
    pub fn to_onnx(&self, g: &mut OnnxGraph, input: &str) -> String {
        let features: Vec<String> = self
            .branches
            .iter()
            .enumerate()
            .map(|(c, b)| {
                let plane = g.slice(input, 1, c as i64, c as i64 + 1);
                b.to_onnx(g, &plane)
            })
            .collect();
        let pooled: Vec<String> = features.iter().map(|f| g.global_average(f)).collect();
        let z = g.concat(&pooled, 1);
        let hidden = g.linear(&z, &self.reweight[0]);
        let hidden = g.relu(&hidden);
        let weights = g.linear(&hidden, &self.reweight[1]);
        let weights = g.node("Sigmoid", &[&weights], vec![]);
        let reweighted: Vec<String> = features
            .iter()
            .enumerate()
            .map(|(c, f)| {
                let w = g.slice(&weights, 1, 64 * c as i64, 64 * (c as i64 + 1));
                let w = g.reshape(&w, &[0, 64, 1, 1]);
                g.node("Mul", &[f, &w], vec![])
            })
            .collect();
        let joined = g.concat(&reweighted, 1);
        let fused = self.fuse.to_onnx(g, &joined);
        let fused = g.relu(&fused);
        let pooled = g.global_average(&fused);
        g.linear(&pooled, &self.head)
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
    use tch::Device;
    use tch::nn::VarStore;

    use super::*;

    #[test]
    fn the_reconstruction_has_its_specified_size() {
        let vs = VarStore::new(Device::Cpu);
        let model = Am3fFlowNet::new(&vs.root(), 3);
        let trainable: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
        assert_eq!(trainable, 740_263);
        let logits = model.forward_t(&Tensor::rand([4, 3, 28, 28], (Kind::Float, Device::Cpu)), true);
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
