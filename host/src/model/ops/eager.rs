//! [`Ops`] on libtorch tensors, as the models train and evaluate.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::{BatchNorm, Conv2d, Ops, Pool};

/// Eager execution; `train` switches dropout on and batch norm to batch statistics.
#[derive(Debug, Clone, Copy)]
pub struct Eager {
    pub train: bool,
}

impl Eager {
    pub fn new(train: bool) -> Eager {
        Eager { train }
    }
}

impl Ops for Eager {
    type T = Tensor;
    type Pair = Tensor;

    fn param(&mut self, t: &Tensor) -> Tensor {
        t.shallow_clone()
    }

    fn conv2d(&mut self, x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: i64, padding: i64) -> Tensor {
        x.conv2d(weight, bias, [stride; 2], [padding; 2], [1; 2], 1)
    }

    fn conv_bn(&mut self, x: &Tensor, conv: &Conv2d, bn: &BatchNorm) -> Tensor {
        bn.forward_t(&conv.forward(self, x), self.train)
    }

    fn conv1d(&mut self, x: &Tensor, weight: &Tensor, padding: i64) -> Tensor {
        x.conv1d(weight, None::<Tensor>, [1], [padding], [1], 1)
    }

    /// A matrix product over the channels: the same arithmetic as a 1×1 convolution, which
    /// libtorch's CPU kernels do about three times faster in training.
    fn pointwise(&mut self, x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
        x.permute([0, 2, 3, 1]).linear(&weight.flatten(1, -1), bias).permute([0, 3, 1, 2])
    }

    fn linear(&mut self, x: &Tensor, layer: &nn::Linear) -> Tensor {
        layer.forward(x)
    }

    fn reflect_pad(&mut self, x: &Tensor, pad: i64) -> Tensor {
        x.pad([pad; 4], "reflect", None)
    }

    fn relu(&mut self, x: &Tensor) -> Tensor {
        x.relu()
    }

    fn gelu(&mut self, x: &Tensor) -> Tensor {
        x.gelu("none")
    }

    fn sigmoid(&mut self, x: &Tensor) -> Tensor {
        x.sigmoid()
    }

    fn dropout(&mut self, x: &Tensor, p: f64) -> Tensor {
        x.dropout(p, self.train)
    }

    fn max_pool2d(&mut self, x: &Tensor, kernel: i64, stride: i64, pad: i64) -> Tensor {
        x.max_pool2d([kernel; 2], [stride; 2], [pad; 2], [1; 2], false)
    }

    fn avg_pool2d(&mut self, x: &Tensor, kernel: i64, stride: i64, pad: i64) -> Tensor {
        x.avg_pool2d([kernel; 2], [stride; 2], [pad; 2], false, true, None::<i64>)
    }

    fn global_avg_pool(&mut self, x: &Tensor) -> Tensor {
        x.mean_dim(&[2i64, 3][..], false, Kind::Float)
    }

    fn global_pool_keep(&mut self, x: &Tensor, pool: Pool) -> Tensor {
        match pool {
            Pool::Mean => x.mean_dim(&[2i64, 3][..], true, Kind::Float),
            Pool::Max => x.amax(&[2i64, 3][..], true),
        }
    }

    fn reduce_keep(&mut self, x: &Tensor, axis: i64, pool: Pool) -> Tensor {
        match pool {
            Pool::Mean => x.mean_dim(&[axis][..], true, Kind::Float),
            Pool::Max => x.amax(&[axis][..], true),
        }
    }

    fn channel_norm(&mut self, x: &Tensor, gain: &Tensor, bias: &Tensor, eps: f64) -> Tensor {
        let mean = x.mean_dim(&[1i64][..], true, Kind::Float);
        let var = x.var_dim(&[1i64][..], false, true);
        (x - mean) / (var + eps).sqrt() * gain + bias
    }

    fn add(&mut self, a: &Tensor, b: &Tensor) -> Tensor {
        a + b
    }

    fn sub(&mut self, a: &Tensor, b: &Tensor) -> Tensor {
        a - b
    }

    fn mul(&mut self, a: &Tensor, b: &Tensor) -> Tensor {
        a * b
    }

    fn scale(&mut self, x: &Tensor, factor: f64) -> Tensor {
        x * factor
    }

    fn matmul(&mut self, a: &Tensor, b: &Tensor) -> Tensor {
        a.matmul(b)
    }

    fn softmax(&mut self, x: &Tensor, axis: i64) -> Tensor {
        x.softmax(axis, Kind::Float)
    }

    fn concat(&mut self, parts: &[Tensor], axis: i64) -> Tensor {
        Tensor::cat(parts, axis)
    }

    fn narrow(&mut self, x: &Tensor, axis: i64, start: i64, len: i64) -> Tensor {
        x.narrow(axis, start, len)
    }

    fn reshape(&mut self, x: &Tensor, shape: &[i64]) -> Tensor {
        x.reshape(shape)
    }

    fn permute(&mut self, x: &Tensor, perm: &[i64]) -> Tensor {
        x.permute(perm)
    }

    fn pair_from_channels(&mut self, x: &Tensor, start: i64, c: i64) -> Tensor {
        let [_, _, h, w] = x.size()[..] else { panic!("segments are cut from an NCHW tensor") };
        // Sample b's segments become rows 2b and 2b+1.
        x.narrow(1, start, 2 * c).reshape([-1, c, h, w])
    }

    fn pair_map(&mut self, pair: &Tensor, mut f: impl FnMut(&mut Self, &Tensor) -> Tensor) -> Tensor {
        f(self, pair)
    }

    fn temporal_shift(&mut self, pair: &Tensor, c: i64) -> Tensor {
        let [rows, channels, h, w] = pair.size()[..] else { panic!("temporal shift expects a 4-D tensor") };
        assert_eq!(channels, c, "temporal shift over {c} channels");
        let fold = c / 8;
        let v = pair.view([rows / 2, 2, c, h, w]);
        let back = v.narrow(2, 0, fold);
        let fwd = v.narrow(2, fold, fold);
        let rest = v.narrow(2, 2 * fold, c - 2 * fold);
        let back = Tensor::cat(&[back.narrow(1, 1, 1), back.narrow(1, 0, 1).zeros_like()], 1);
        let fwd = Tensor::cat(&[fwd.narrow(1, 0, 1).zeros_like(), fwd.narrow(1, 0, 1)], 1);
        Tensor::cat(&[back, fwd, rest], 2).view([rows, c, h, w])
    }

    fn pair_mean(&mut self, pair: &Tensor) -> Tensor {
        let rows = pair.size()[0];
        pair.view([rows / 2, 2, -1]).mean_dim(&[1i64][..], false, Kind::Float)
    }
}
