//! Building blocks of the SKD-TSTSAN network, initialised the way PyTorch initialises its
//! modules so that training dynamics match the official implementation, and named so that the
//! variable paths equal the official state-dict keys.

use tch::nn::{self, ConvConfig, Init, Module, PaddingMode};
use tch::{Kind, Tensor};

use crate::export::onnx_graph::{Attr, OnnxGraph};

/// PyTorch's and tch's batch-norm epsilon.
const BN_EPS: f64 = 1e-5;

/// PyTorch's default for Conv/Linear weights and biases: kaiming-uniform with a = √5, which is
/// U(−1/√fan_in, 1/√fan_in).
pub(crate) fn torch_default_init(fan_in: i64) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform { lo: -bound, up: bound }
}

/// `nn.Conv2d(i, o, k, stride, padding)` with zero padding and a bias; keeps its stride and
/// padding (tch's layer does not expose them) for the export.
#[derive(Debug)]
pub struct Conv2d {
    conv: nn::Conv2D,
    stride: i64,
    padding: i64,
}

impl Conv2d {
    pub fn new(path: &nn::Path, i: i64, o: i64, k: i64, stride: i64, padding: i64) -> Conv2d {
        let init = torch_default_init(i * k * k);
        let conv = nn::conv2d(path, i, o, k, ConvConfig { stride, padding, ws_init: init, bs_init: init, ..Default::default() });
        Conv2d { conv, stride, padding }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        xs.apply(&self.conv)
    }

    /// The conv with the batch norm that follows it folded in (inference statistics).
    pub fn to_onnx_with_bn(&self, g: &mut OnnxGraph, x: &str, bn: &BatchNorm) -> String {
        let (weight, bias) = tch::no_grad(|| bn.fold_into(&self.conv.ws, self.conv.bs.as_ref()));
        g.conv2d(x, &weight, Some(&bias), self.stride, self.padding)
    }
}

/// `nn.Linear(i, o)`.
pub fn linear(path: &nn::Path, i: i64, o: i64) -> nn::Linear {
    let init = torch_default_init(i);
    nn::linear(path, i, o, nn::LinearConfig { ws_init: init, bs_init: Some(init), bias: true })
}

/// `nn.BatchNorm2d(c)` including the `num_batches_tracked` counter, so the key set equals
/// PyTorch's and a checkpoint round-trips without loss.
#[derive(Debug)]
pub struct BatchNorm {
    bn: nn::BatchNorm,
    batches_tracked: Tensor,
}

impl BatchNorm {
    pub fn new(path: &nn::Path, c: i64) -> BatchNorm {
        let config = nn::BatchNormConfig { eps: BN_EPS, ws_init: Init::Const(1.0), bs_init: Init::Const(0.0), ..Default::default() };
        let bn = nn::batch_norm2d(path, c, config);
        let zero = Tensor::zeros([], (Kind::Int64, path.device()));
        let batches_tracked = path.add("num_batches_tracked", zero, false);
        BatchNorm { bn, batches_tracked }
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        if train {
            tch::no_grad(|| {
                let mut counter = self.batches_tracked.shallow_clone();
                let _ = counter.g_add_scalar_(1);
            });
        }
        xs.apply_t(&self.bn, train)
    }

    /// Weight and bias of `conv(x) → bn` as one conv, computed in double precision:
    /// w·s and (b − mean)·s + β with s = γ / √(var + ε).
    pub(crate) fn fold_into(&self, weight: &Tensor, bias: Option<&Tensor>) -> (Tensor, Tensor) {
        let f64 = |t: &Tensor| t.to_kind(Kind::Double);
        let gamma = self.bn.ws.as_ref().map(f64).unwrap_or_else(|| self.bn.running_var.ones_like().to_kind(Kind::Double));
        let beta = self.bn.bs.as_ref().map(f64).unwrap_or_else(|| self.bn.running_mean.zeros_like().to_kind(Kind::Double));
        let scale = gamma / (f64(&self.bn.running_var) + BN_EPS).sqrt();
        let bias = bias.map(f64).unwrap_or_else(|| scale.zeros_like());
        let folded_weight = f64(weight) * scale.view([-1, 1, 1, 1]);
        let folded_bias = (bias - f64(&self.bn.running_mean)) * &scale + beta;
        (folded_weight.to_kind(Kind::Float), folded_bias.to_kind(Kind::Float))
    }
}

/// The magnification networks' conv: reflection padding, bias-free conv, optional ReLU
/// (`Conv2D_activa`; the weight lives under `<path>.conv2d.weight`).
#[derive(Debug)]
pub struct MagConv {
    conv: nn::Conv2D,
    stride: i64,
    pad: i64,
    relu: bool,
}

impl MagConv {
    pub fn new(path: &nn::Path, i: i64, o: i64, k: i64, stride: i64, pad: i64, relu: bool) -> MagConv {
        let config = ConvConfig {
            stride,
            padding: pad,
            bias: false,
            ws_init: torch_default_init(i * k * k),
            padding_mode: if pad > 0 { PaddingMode::Reflect } else { PaddingMode::Zeros },
            ..Default::default()
        };
        MagConv { conv: nn::conv2d(path / "conv2d", i, o, k, config), stride, pad, relu }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let y = xs.apply(&self.conv);
        if self.relu { y.relu() } else { y }
    }

    pub fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> String {
        let padded = if self.pad > 0 { g.reflect_pad(x, self.pad) } else { x.to_string() };
        let y = g.conv2d(&padded, &self.conv.ws, None, self.stride, 0);
        if self.relu { g.relu(&y) } else { y }
    }
}

/// `ResBlk`: two 3×3 magnification convs (ReLU between) plus the identity.
#[derive(Debug)]
pub struct ResBlock {
    cba_1: MagConv,
    cba_2: MagConv,
}

impl ResBlock {
    pub fn new(path: &nn::Path, dim_in: i64, dim_out: i64) -> ResBlock {
        ResBlock {
            cba_1: MagConv::new(&(path / "cba_1"), dim_in, 32, 3, 1, 1, true),
            cba_2: MagConv::new(&(path / "cba_2"), 32, dim_out, 3, 1, 1, false),
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        self.cba_2.forward(&self.cba_1.forward(xs)) + xs
    }

    pub fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> String {
        let y = self.cba_1.to_onnx(g, x);
        let y = self.cba_2.to_onnx(g, &y);
        g.add(&y, x)
    }
}

/// `Encoder_No_texture`: the motion ("shape") representation at half resolution, 32 channels.
#[derive(Debug)]
pub struct MotionEncoder {
    cba_1: MagConv,
    cba_2: MagConv,
    resblks: Vec<ResBlock>,
    motion_cba: MagConv,
    motion_resblks: Vec<ResBlock>,
}

impl MotionEncoder {
    pub fn new(path: &nn::Path, dim_in: i64) -> MotionEncoder {
        let blocks = |name: &str, n: usize| (0..n).map(|i| ResBlock::new(&(path / name / i), 32, 32)).collect();
        MotionEncoder {
            cba_1: MagConv::new(&(path / "cba_1"), dim_in, 16, 7, 1, 3, true),
            cba_2: MagConv::new(&(path / "cba_2"), 16, 32, 3, 2, 1, true),
            resblks: blocks("resblks", 3),
            motion_cba: MagConv::new(&(path / "motion_cba"), 32, 32, 3, 1, 1, true),
            motion_resblks: blocks("motion_resblks", 2),
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let mut y = self.cba_2.forward(&self.cba_1.forward(xs));
        for block in &self.resblks {
            y = block.forward(&y);
        }
        y = self.motion_cba.forward(&y);
        for block in &self.motion_resblks {
            y = block.forward(&y);
        }
        y
    }

    pub fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> String {
        let mut y = self.cba_1.to_onnx(g, x);
        y = self.cba_2.to_onnx(g, &y);
        for block in &self.resblks {
            y = block.to_onnx(g, &y);
        }
        y = self.motion_cba.to_onnx(g, &y);
        for block in &self.motion_resblks {
            y = block.to_onnx(g, &y);
        }
        y
    }
}

/// `Manipulator`: magnifies the change from the reference to the target representation,
/// `target + h(amp · g(target − reference))` (the official code adds to the target).
#[derive(Debug)]
pub struct Manipulator {
    g: MagConv,
    h_conv: MagConv,
    h_resblk: ResBlock,
}

impl Manipulator {
    pub fn new(path: &nn::Path) -> Manipulator {
        Manipulator {
            g: MagConv::new(&(path / "g"), 32, 32, 7, 1, 3, true),
            h_conv: MagConv::new(&(path / "h_conv"), 32, 32, 3, 1, 1, false),
            h_resblk: ResBlock::new(&(path / "h_resblk"), 32, 32),
        }
    }

    pub fn forward(&self, reference: &Tensor, target: &Tensor, amp: f64) -> Tensor {
        let d = self.g.forward(&(target - reference)) * amp;
        let d = self.h_resblk.forward(&self.h_conv.forward(&d));
        target + d
    }

    /// With `reference` `None` the reference representation is zero, so `target − reference`
    /// is `target` itself (the T stream's motionless onset, folded away at export).
    pub fn to_onnx(&self, g: &mut OnnxGraph, reference: Option<&str>, target: &str, amp: f64) -> String {
        let diff = match reference {
            Some(r) => g.node("Sub", &[target, r], vec![]),
            None => target.to_string(),
        };
        let d = self.g.to_onnx(g, &diff);
        let d = g.scale(&d, amp as f32);
        let d = self.h_conv.to_onnx(g, &d);
        let d = self.h_resblk.to_onnx(g, &d);
        g.add(target, &d)
    }
}

/// ECA channel attention with average and max pooling through one shared 1-D conv
/// (`eca_layer_2d_v2`); kernel 3 for 64 channels, 5 for 128, by the official rule.
#[derive(Debug)]
pub struct Eca {
    conv: nn::Conv1D,
}

/// The official kernel rule: t = ⌊|log2 C + 1| / 2⌋, rounded up to odd.
pub fn eca_kernel(channels: i64) -> i64 {
    let t = (((channels as f64).log2() + 1.0).abs() / 2.0) as i64;
    if t % 2 == 1 { t } else { t + 1 }
}

impl Eca {
    pub fn new(path: &nn::Path, channels: i64) -> Eca {
        let k = eca_kernel(channels);
        let config = ConvConfig { padding: (k - 1) / 2, bias: false, ws_init: torch_default_init(k), ..Default::default() };
        Eca { conv: nn::conv1d(path / "conv", 1, 1, k, config) }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let (n, c) = (xs.size()[0], xs.size()[1]);
        let avg = xs.mean_dim(&[2i64, 3][..], false, Kind::Float).view([n, 1, c]);
        let max = xs.amax(&[2i64, 3][..], false).view([n, 1, c]);
        let weight = (self.conv.forward(&avg) + self.conv.forward(&max)).sigmoid().view([n, c, 1, 1]);
        xs * weight
    }

    pub fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> String {
        let k = self.conv.ws.size()[2];
        let w = g.weight("eca", &self.conv.ws);
        let attend = |pool: &str, g: &mut OnnxGraph| {
            let pooled = g.node(pool, &[x], vec![]);
            // (N, C, 1, 1) → (N, 1, C): the channels become the 1-D conv's sequence.
            let seq = g.reshape(&pooled, &[0, 1, -1]);
            g.node("Conv", &[&seq, &w], vec![("kernel_shape", Attr::Ints(vec![k])), ("pads", Attr::Ints(vec![(k - 1) / 2; 2]))])
        };
        let avg = attend("GlobalAveragePool", g);
        let max = attend("GlobalMaxPool", g);
        let sum = g.add(&avg, &max);
        let weight = g.node("Sigmoid", &[&sum], vec![]);
        let weight = g.reshape(&weight, &[0, -1, 1, 1]);
        g.node("Mul", &[x, &weight], vec![])
    }
}

/// Temporal shift over two segments (rows 2b and 2b+1 are one sample's two flows): the first
/// C/8 channels of segment 0 take segment 1's values, the next C/8 of segment 1 take segment 0's,
/// vacated places are zero, the rest is unchanged. Slice/concat form, no in-place writes.
pub fn temporal_shift(xs: &Tensor) -> Tensor {
    let [rows, c, h, w] = xs.size()[..] else { panic!("temporal shift expects a 4-D tensor") };
    let b = rows / 2;
    let fold = c / 8;
    let v = xs.view([b, 2, c, h, w]);
    let back = v.narrow(2, 0, fold);
    let fwd = v.narrow(2, fold, fold);
    let rest = v.narrow(2, 2 * fold, c - 2 * fold);
    let back = Tensor::cat(&[back.narrow(1, 1, 1), back.narrow(1, 0, 1).zeros_like()], 1);
    let fwd = Tensor::cat(&[fwd.narrow(1, 0, 1).zeros_like(), fwd.narrow(1, 0, 1)], 1);
    Tensor::cat(&[back, fwd, rest], 2).view([rows, c, h, w])
}

/// [`temporal_shift`] on the two segments held as separate (B, C, H, W) tensors (the export
/// keeps them apart so every convolution runs at the model's batch size): segment 0 takes
/// segment 1's first C/8 channels, segment 1 takes segment 0's next C/8, and the vacated
/// places are zero padding.
pub fn temporal_shift_to_onnx(g: &mut OnnxGraph, segment0: &str, segment1: &str, c: i64) -> [String; 2] {
    let fold = c / 8;
    let from_next = g.slice(segment1, 1, 0, fold);
    let from_next = g.zero_pad_axis(&from_next, 4, 1, 0, fold);
    let rest0 = g.slice(segment0, 1, 2 * fold, c);
    let shifted0 = g.node("Concat", &[&from_next, &rest0], vec![("axis", Attr::Int(1))]);
    let from_previous = g.slice(segment0, 1, fold, 2 * fold);
    let from_previous = g.zero_pad_axis(&from_previous, 4, 1, fold, 0);
    let rest1 = g.slice(segment1, 1, 2 * fold, c);
    let shifted1 = g.node("Concat", &[&from_previous, &rest1], vec![("axis", Attr::Int(1))]);
    [shifted0, shifted1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eca_kernel_follows_the_official_rule() {
        assert_eq!(eca_kernel(64), 3);
        assert_eq!(eca_kernel(128), 5);
    }

    #[test]
    fn temporal_shift_moves_one_eighth_each_way() {
        // Two samples, 16 channels (fold 2), 1×1 spatial; value = 1000·row + channel + 1.
        let x = Tensor::from_slice(&(0..64).map(|i| (1000 * (i / 16) + i % 16 + 1) as f32).collect::<Vec<_>>()).view([4, 16, 1, 1]);
        let y = temporal_shift(&x).view([4, 16]);
        let at = |r: i64, c: i64| y.double_value(&[r, c]);
        // Segment 0 of sample 0 (row 0): channels 0,1 from row 1; 2,3 zero; 4.. unchanged.
        assert_eq!(at(0, 0), 1001.0);
        assert_eq!(at(0, 1), 1002.0);
        assert_eq!(at(0, 2), 0.0);
        assert_eq!(at(0, 4), 5.0);
        // Segment 1 (row 1): channels 0,1 zero; 2,3 from row 0.
        assert_eq!(at(1, 0), 0.0);
        assert_eq!(at(1, 2), 3.0);
        assert_eq!(at(1, 3), 4.0);
        assert_eq!(at(1, 15), 1016.0);
        // The second sample never mixes with the first.
        assert_eq!(at(2, 0), 3001.0);
        assert_eq!(at(3, 2), 2003.0);
    }

    #[test]
    fn eca_weights_lie_between_zero_and_the_input() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let eca = Eca::new(&(vs.root() / "ECA1"), 64);
        let x = Tensor::rand([2, 64, 5, 5], (Kind::Float, tch::Device::Cpu));
        let y = eca.forward(&x);
        assert_eq!(y.size(), x.size());
        let ratio = &y / (&x + 1e-12);
        assert!(ratio.min().double_value(&[]) > 0.0 && ratio.max().double_value(&[]) < 1.0);
        assert_eq!(vs.variables()["ECA1.conv.weight"].size(), vec![1, 1, 3]);
    }
}
