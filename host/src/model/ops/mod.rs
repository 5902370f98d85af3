//! The operations the models are written in, and their two implementations: [`Eager`] runs them
//! on libtorch tensors (training and evaluation), [`OnnxGraph`] adds them as nodes of an ONNX
//! graph (export). Each layer's `forward` is generic over [`Ops`], so the trained model and the
//! exported graph come from one description. Where the two backends compute an operation
//! differently (batch norm folded into its conv, reflection padding as slices, GELU from Erf,
//! the temporal segments kept apart), the difference lives in the operation, not in the model.

mod eager;
pub mod onnx;

pub use eager::Eager;
pub use onnx::OnnxGraph;

use tch::nn::{self, Init};
use tch::{Kind, Tensor};

/// PyTorch's and tch's batch-norm epsilon.
const BN_EPS: f64 = 1e-5;

/// Operations on values of one backend. Weights are read from the tch variables they live in.
pub trait Ops {
    /// A value: a tensor, or the name of a graph node.
    type T;
    /// A batch's two temporal segments (SKD-TSTSAN's T stream). Eager keeps them as one tensor
    /// of 2B rows (rows 2b and 2b+1 are sample b's), so batch norm sees both in training; the
    /// graph keeps two tensors of B rows, so every convolution runs at the model's batch size.
    type Pair;

    /// A weight (or a tensor computed from weights) as a value.
    fn param(&mut self, t: &Tensor) -> Self::T;
    /// 2-D convolution with a square kernel, stride and zero padding.
    fn conv2d(&mut self, x: &Self::T, weight: &Tensor, bias: Option<&Tensor>, stride: i64, padding: i64) -> Self::T;
    /// `conv` followed by the batch norm `bn` (in the graph, one conv with the norm folded in).
    fn conv_bn(&mut self, x: &Self::T, conv: &Conv2d, bn: &BatchNorm) -> Self::T;
    /// Bias-free 1-D convolution over (N, 1, L) sequences.
    fn conv1d(&mut self, x: &Self::T, weight: &Tensor, padding: i64) -> Self::T;
    /// A 1×1 convolution over the channels of an NCHW map.
    fn pointwise(&mut self, x: &Self::T, weight: &Tensor, bias: Option<&Tensor>) -> Self::T;
    /// `x · Wᵀ + b` on (N, in) rows.
    fn linear(&mut self, x: &Self::T, layer: &nn::Linear) -> Self::T;
    /// PyTorch's `padding_mode="reflect"` on both spatial axes.
    fn reflect_pad(&mut self, x: &Self::T, pad: i64) -> Self::T;

    fn relu(&mut self, x: &Self::T) -> Self::T;
    /// Exact GELU, 0.5·x·(1 + erf(x/√2)).
    fn gelu(&mut self, x: &Self::T) -> Self::T;
    fn sigmoid(&mut self, x: &Self::T) -> Self::T;
    /// Dropout while training; the identity otherwise.
    fn dropout(&mut self, x: &Self::T, p: f64) -> Self::T;

    fn max_pool2d(&mut self, x: &Self::T, kernel: i64, stride: i64, pad: i64) -> Self::T;
    /// Average pooling that counts the zero padding.
    fn avg_pool2d(&mut self, x: &Self::T, kernel: i64, stride: i64, pad: i64) -> Self::T;
    /// (N, C, H, W) → (N, C): the spatial mean.
    fn global_avg_pool(&mut self, x: &Self::T) -> Self::T;
    /// (N, C, H, W) → (N, C, 1, 1): the spatial mean or maximum.
    fn global_pool_keep(&mut self, x: &Self::T, pool: Pool) -> Self::T;
    /// Mean or maximum over `axis`, keeping it.
    fn reduce_keep(&mut self, x: &Self::T, axis: i64, pool: Pool) -> Self::T;
    /// LayerNorm over the channels of an NCHW map (biased variance), with (1, C, 1, 1) gain and bias.
    fn channel_norm(&mut self, x: &Self::T, gain: &Tensor, bias: &Tensor, eps: f64) -> Self::T;

    fn add(&mut self, a: &Self::T, b: &Self::T) -> Self::T;
    fn sub(&mut self, a: &Self::T, b: &Self::T) -> Self::T;
    /// Element-wise product, broadcasting.
    fn mul(&mut self, a: &Self::T, b: &Self::T) -> Self::T;
    fn scale(&mut self, x: &Self::T, factor: f64) -> Self::T;
    fn matmul(&mut self, a: &Self::T, b: &Self::T) -> Self::T;
    fn softmax(&mut self, x: &Self::T, axis: i64) -> Self::T;

    fn concat(&mut self, parts: &[Self::T], axis: i64) -> Self::T;
    /// Elements `start..start + len` of `axis`.
    fn narrow(&mut self, x: &Self::T, axis: i64, start: i64, len: i64) -> Self::T;
    /// −1 is inferred (the batch dimension).
    fn reshape(&mut self, x: &Self::T, shape: &[i64]) -> Self::T;
    fn permute(&mut self, x: &Self::T, perm: &[i64]) -> Self::T;

    /// Channels `start..start + c` are segment 0 and the next `c` segment 1.
    fn pair_from_channels(&mut self, x: &Self::T, start: i64, c: i64) -> Self::Pair;
    /// `f` on each segment; it must treat samples independently.
    fn pair_map(&mut self, pair: &Self::Pair, f: impl FnMut(&mut Self, &Self::T) -> Self::T) -> Self::Pair;
    /// Temporal shift of `c`-channel segments: segment 0 takes segment 1's first C/8 channels,
    /// segment 1 takes segment 0's next C/8, vacated places are zero, the rest is unchanged.
    fn temporal_shift(&mut self, pair: &Self::Pair, c: i64) -> Self::Pair;
    /// The mean of the two segments (of pooled (N, C) features).
    fn pair_mean(&mut self, pair: &Self::Pair) -> Self::T;
}

/// A global or per-axis reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    Mean,
    Max,
}

/// PyTorch's default for Conv/Linear weights and biases: kaiming-uniform with a = √5, which is
/// U(−1/√fan_in, 1/√fan_in).
pub(crate) fn torch_default_init(fan_in: i64) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform { lo: -bound, up: bound }
}

/// `nn.Conv2d(i, o, k, stride, padding)` with zero padding; keeps its stride and padding (tch's
/// layer does not expose them).
#[derive(Debug)]
pub struct Conv2d {
    pub conv: nn::Conv2D,
    pub stride: i64,
    pub padding: i64,
}

impl Conv2d {
    /// With a bias.
    pub fn new(path: &nn::Path, i: i64, o: i64, k: i64, stride: i64, padding: i64) -> Conv2d {
        Conv2d::with_bias(path, i, o, k, stride, padding, true)
    }

    pub fn with_bias(path: &nn::Path, i: i64, o: i64, k: i64, stride: i64, padding: i64, bias: bool) -> Conv2d {
        let init = torch_default_init(i * k * k);
        let config = nn::ConvConfig { stride, padding, bias, ws_init: init, bs_init: init, ..Default::default() };
        Conv2d { conv: nn::conv2d(path, i, o, k, config), stride, padding }
    }

    pub fn forward<O: Ops>(&self, ops: &mut O, x: &O::T) -> O::T {
        ops.conv2d(x, &self.conv.ws, self.conv.bs.as_ref(), self.stride, self.padding)
    }

    /// This conv, then `bn`.
    pub fn forward_bn<O: Ops>(&self, ops: &mut O, x: &O::T, bn: &BatchNorm) -> O::T {
        ops.conv_bn(x, self, bn)
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

    pub(crate) fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
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
