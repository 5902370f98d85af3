//! Building blocks of the SKD-TSTSAN network, initialised the way PyTorch initialises its
//! modules so that training dynamics match the official implementation, and named so that the
//! variable paths equal the official state-dict keys.

use tch::nn::{self, ConvConfig};

pub use super::ops::{BatchNorm, Conv2d, linear};
use super::ops::{Ops, Pool, torch_default_init};

/// The magnification networks' conv: reflection padding, bias-free conv, optional ReLU
/// (`Conv2D_activa`; the weight lives under `<path>.conv2d.weight`).
#[derive(Debug)]
pub struct MagConv {
    conv: Conv2d,
    pad: i64,
    relu: bool,
}

impl MagConv {
    pub fn new(path: &nn::Path, i: i64, o: i64, k: i64, stride: i64, pad: i64, relu: bool) -> MagConv {
        // The padding is applied before the conv, which then pads nothing.
        MagConv { conv: Conv2d::with_bias(&(path / "conv2d"), i, o, k, stride, 0, false), pad, relu }
    }

    pub fn forward<O: Ops>(&self, ops: &mut O, x: &O::T) -> O::T {
        let y = if self.pad > 0 {
            let padded = ops.reflect_pad(x, self.pad);
            self.conv.forward(ops, &padded)
        } else {
            self.conv.forward(ops, x)
        };
        if self.relu { ops.relu(&y) } else { y }
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

    pub fn forward<O: Ops>(&self, ops: &mut O, x: &O::T) -> O::T {
        let y = self.cba_1.forward(ops, x);
        let y = self.cba_2.forward(ops, &y);
        ops.add(&y, x)
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

    pub fn forward<O: Ops>(&self, ops: &mut O, x: &O::T) -> O::T {
        let y = self.cba_1.forward(ops, x);
        let mut y = self.cba_2.forward(ops, &y);
        for block in &self.resblks {
            y = block.forward(ops, &y);
        }
        y = self.motion_cba.forward(ops, &y);
        for block in &self.motion_resblks {
            y = block.forward(ops, &y);
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

    /// With `reference` `None` the reference representation is zero, so `target − reference`
    /// is `target` itself (the T stream's motionless onset: the bias-free encoder maps zero
    /// flow to exactly zero).
    pub fn forward<O: Ops>(&self, ops: &mut O, reference: Option<&O::T>, target: &O::T, amp: f64) -> O::T {
        let d = match reference {
            Some(r) => {
                let diff = ops.sub(target, r);
                self.g.forward(ops, &diff)
            }
            None => self.g.forward(ops, target),
        };
        let d = ops.scale(&d, amp);
        let d = self.h_conv.forward(ops, &d);
        let d = self.h_resblk.forward(ops, &d);
        ops.add(target, &d)
    }
}

/// ECA channel attention with average and max pooling through one shared 1-D conv
/// (`eca_layer_2d_v2`); kernel 3 for 64 channels, 5 for 128, by the official rule.
#[derive(Debug)]
pub struct Eca {
    conv: nn::Conv1D,
    channels: i64,
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
        Eca { conv: nn::conv1d(path / "conv", 1, 1, k, config), channels }
    }

    pub fn forward<O: Ops>(&self, ops: &mut O, x: &O::T) -> O::T {
        let (c, pad) = (self.channels, (self.conv.ws.size()[2] - 1) / 2);
        let attend = |ops: &mut O, pool: Pool| {
            let pooled = ops.global_pool_keep(x, pool);
            // (N, C, 1, 1) → (N, 1, C): the channels become the 1-D conv's sequence.
            let seq = ops.reshape(&pooled, &[-1, 1, c]);
            ops.conv1d(&seq, &self.conv.ws, pad)
        };
        let avg = attend(ops, Pool::Mean);
        let max = attend(ops, Pool::Max);
        let sum = ops.add(&avg, &max);
        let weight = ops.sigmoid(&sum);
        let weight = ops.reshape(&weight, &[-1, c, 1, 1]);
        ops.mul(x, &weight)
    }
}

#[cfg(test)]
mod tests {
    use tch::{Kind, Tensor};

    use super::super::ops::Eager;
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
        let y = Eager::new(false).temporal_shift(&x, 16).view([4, 16]);
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
        let y = eca.forward(&mut Eager::new(false), &x);
        assert_eq!(y.size(), x.size());
        let ratio = &y / (&x + 1e-12);
        assert!(ratio.min().double_value(&[]) > 0.0 && ratio.max().double_value(&[]) < 1.0);
        assert_eq!(vs.variables()["ECA1.conv.weight"].size(), vec![1, 1, 3]);
    }
}
