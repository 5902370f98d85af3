//! Building blocks of the SKD-TSTSAN network, initialised the way PyTorch initialises its
//! modules so that training dynamics match the official implementation, and named so that the
//! variable paths equal the official state-dict keys.

use tch::nn::{self, ConvConfig, Init, Module, PaddingMode};
use tch::{Kind, Tensor};

/// PyTorch's default for Conv/Linear weights and biases: kaiming-uniform with a = √5, which is
/// U(−1/√fan_in, 1/√fan_in).
fn torch_default_init(fan_in: i64) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform { lo: -bound, up: bound }
}

/// `nn.Conv2d(i, o, k, stride, padding)` with zero padding and a bias.
pub fn conv2d(path: &nn::Path, i: i64, o: i64, k: i64, stride: i64, padding: i64) -> nn::Conv2D {
    let init = torch_default_init(i * k * k);
    nn::conv2d(path, i, o, k, ConvConfig { stride, padding, ws_init: init, bs_init: init, ..Default::default() })
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
        let config = nn::BatchNormConfig { ws_init: Init::Const(1.0), bs_init: Init::Const(0.0), ..Default::default() };
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
}

/// The magnification networks' conv: reflection padding, bias-free conv, optional ReLU
/// (`Conv2D_activa`; the weight lives under `<path>.conv2d.weight`).
#[derive(Debug)]
pub struct MagConv {
    conv: nn::Conv2D,
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
        MagConv { conv: nn::conv2d(path / "conv2d", i, o, k, config), relu }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let y = xs.apply(&self.conv);
        if self.relu { y.relu() } else { y }
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
        let x = Tensor::from_slice(&(0..64).map(|i| (1000 * (i / 16) + i % 16 + 1) as f32).collect::<Vec<_>>())
            .view([4, 16, 1, 1]);
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
