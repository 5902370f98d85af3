//! HTNet (Wang et al. 2024), layer for layer as the official `Model.py` builds it, with variable
//! paths equal to its state-dict keys (see ../shared/reference/HTNet.md §4).
//!
//! A 28×28 three-plane flow mosaic is cut into 7×7 patches, embedded by a 1×1 conv, and passed
//! through three levels of transformers over blocks of the feature map (4×4, 2×2, then one
//! block), each level but the last followed by a 3×3 conv, a channel LayerNorm and a max-pool
//! that halve the map and double the width. At the published sizes every block holds a single
//! token, so attention reduces exactly to `to_out(v)` and is computed that way (q and k get a
//! zero gradient either way); other image and patch sizes take the general form.
//!
//! The 1×1 convolutions run as [`Ops::pointwise`]: matrix products over the channels in
//! training (libtorch's CPU kernels do them about three times faster, `mer bench-train --arch
//! htnet`), 1×1 convolutions in the exported graph.

use tch::Tensor;
use tch::nn::{self, ConvConfig, Init, Module};

use mer_shared::flow_image::{HTNET_FALLBACK_LANDMARKS, htnet_mosaic};
use mer_shared::input::InputLayout;

use super::losses::LossConfig;
use super::ops::{Conv2d, Eager, Ops, linear, torch_default_init};
use super::{Arch, ArchSettings, Architecture, Derivation, Forward, Network};

const NORM_EPS: f64 = 1e-5;

/// The architecture's shape parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HtnetConfig {
    pub image_size: i64,
    pub patch_size: i64,
    pub dim: i64,
    pub heads: i64,
    /// Transformer depth per level, finest level first.
    pub block_repeats: [i64; 3],
    pub mlp_mult: i64,
    pub channels: i64,
    pub classes: i64,
}

impl HtnetConfig {
    /// The configuration of the official training script.
    pub fn official(classes: i64) -> HtnetConfig {
        HtnetConfig { image_size: 28, patch_size: 7, dim: 256, heads: 3, block_repeats: [2, 2, 10], mlp_mult: 4, channels: 3, classes }
    }
}

/// NesT's LayerNorm over the channels of an NCHW map (biased variance, ε = 1e-5), with
/// parameters `g` and `b` of shape (1, C, 1, 1).
#[derive(Debug)]
struct ChannelNorm {
    g: Tensor,
    b: Tensor,
}

impl ChannelNorm {
    fn new(path: &nn::Path, c: i64) -> ChannelNorm {
        ChannelNorm { g: path.var("g", &[1, c, 1, 1], Init::Const(1.0)), b: path.var("b", &[1, c, 1, 1], Init::Const(0.0)) }
    }

    fn forward<O: Ops>(&self, ops: &mut O, x: &O::T) -> O::T {
        ops.channel_norm(x, &self.g, &self.b, NORM_EPS)
    }
}

/// A 1×1 convolution's parameters (it runs as [`Ops::pointwise`]).
fn conv1x1(path: &nn::Path, i: i64, o: i64, bias: bool) -> nn::Conv2D {
    let init = torch_default_init(i);
    nn::conv2d(path, i, o, 1, ConvConfig { bias, ws_init: init, bs_init: init, ..Default::default() })
}

#[derive(Debug)]
struct Attention {
    norm: ChannelNorm,
    to_qkv: nn::Conv2D,
    to_out: nn::Conv2D,
    heads: i64,
    dim_head: i64,
}

impl Attention {
    /// `layers.{i}.0` of a transformer: PreNorm(Attention).
    fn new(path: &nn::Path, dim: i64, heads: i64) -> Attention {
        let dim_head = dim / heads;
        let inner = dim_head * heads;
        let f = path / "fn";
        Attention {
            norm: ChannelNorm::new(&(path / "norm"), dim),
            to_qkv: conv1x1(&(&f / "to_qkv"), dim, 3 * inner, false),
            to_out: conv1x1(&(&f / "to_out" / "0"), inner, dim, true),
            heads,
            dim_head,
        }
    }

    /// For blocks of `h`×`w` tokens.
    fn forward<O: Ops>(&self, ops: &mut O, x: &O::T, h: i64, w: i64) -> O::T {
        let normed = self.norm.forward(ops, x);
        let inner = self.heads * self.dim_head;
        if h * w == 1 {
            // Softmax over a single key is 1: the output is the projected value. Narrowing the
            // weight keeps q's and k's rows in the training graph, so they get their (zero)
            // gradient; the exported graph carries only the value rows.
            let v = ops.pointwise(&normed, &self.to_qkv.ws.narrow(0, 2 * inner, inner), None);
            return ops.pointwise(&v, &self.to_out.ws, self.to_out.bs.as_ref());
        }
        let qkv = ops.pointwise(&normed, &self.to_qkv.ws, None);
        // b (heads d) x y -> b heads (x y) d
        let split = |ops: &mut O, i: i64| {
            let part = ops.narrow(&qkv, 1, i * inner, inner);
            let heads = ops.reshape(&part, &[-1, self.heads, self.dim_head, h * w]);
            ops.permute(&heads, &[0, 1, 3, 2])
        };
        let (q, k, v) = (split(ops, 0), split(ops, 1), split(ops, 2));
        let k_t = ops.permute(&k, &[0, 1, 3, 2]);
        let scores = ops.matmul(&q, &k_t);
        let scores = ops.scale(&scores, (self.dim_head as f64).powf(-0.5));
        let attention = ops.softmax(&scores, -1);
        let out = ops.matmul(&attention, &v);
        let out = ops.permute(&out, &[0, 1, 3, 2]);
        let out = ops.reshape(&out, &[-1, inner, h, w]);
        ops.pointwise(&out, &self.to_out.ws, self.to_out.bs.as_ref())
    }
}

#[derive(Debug)]
struct FeedForward {
    norm: ChannelNorm,
    expand: nn::Conv2D,
    project: nn::Conv2D,
}

impl FeedForward {
    /// `layers.{i}.1` of a transformer: PreNorm(FeedForward); dropout is 0 in the official model.
    fn new(path: &nn::Path, dim: i64, mult: i64) -> FeedForward {
        let net = path / "fn" / "net";
        FeedForward {
            norm: ChannelNorm::new(&(path / "norm"), dim),
            expand: conv1x1(&(&net / "0"), dim, dim * mult, true),
            project: conv1x1(&(&net / "3"), dim * mult, dim, true),
        }
    }

    fn forward<O: Ops>(&self, ops: &mut O, x: &O::T) -> O::T {
        let normed = self.norm.forward(ops, x);
        let y = ops.pointwise(&normed, &self.expand.ws, self.expand.bs.as_ref());
        let y = ops.gelu(&y);
        ops.pointwise(&y, &self.project.ws, self.project.bs.as_ref())
    }
}

#[derive(Debug)]
struct Transformer {
    pos_emb: Tensor,
    blocks: Vec<(Attention, FeedForward)>,
}

impl Transformer {
    fn new(path: &nn::Path, dim: i64, seq_len: i64, depth: i64, heads: i64, mlp_mult: i64) -> Transformer {
        let pos_emb = path.var("pos_emb", &[seq_len], Init::Randn { mean: 0.0, stdev: 1.0 });
        let layers = path / "layers";
        let blocks = (0..depth)
            .map(|i| {
                let p = &layers / i;
                (Attention::new(&(&p / 0), dim, heads), FeedForward::new(&(&p / 1), dim, mlp_mult))
            })
            .collect();
        Transformer { pos_emb, blocks }
    }

    /// For blocks of `h`×`w` tokens.
    fn forward<O: Ops>(&self, ops: &mut O, x: &O::T, h: i64, w: i64) -> O::T {
        let position = ops.param(&self.pos_emb.narrow(0, 0, h * w).view([1, 1, h, w]));
        let mut x = ops.add(x, &position);
        for (attention, feed_forward) in &self.blocks {
            let a = attention.forward(ops, &x, h, w);
            x = ops.add(&a, &x);
            let f = feed_forward.forward(ops, &x);
            x = ops.add(&f, &x);
        }
        x
    }
}

/// 3×3 conv → channel LayerNorm → 3×3/2 max-pool, between levels.
#[derive(Debug)]
struct Aggregate {
    conv: Conv2d,
    norm: ChannelNorm,
}

#[derive(Debug)]
pub struct Htnet {
    config: HtnetConfig,
    patch_embedding: nn::Conv2D,
    levels: Vec<(Transformer, Option<Aggregate>)>,
    head_norm: ChannelNorm,
    head: nn::Linear,
}

impl Htnet {
    pub fn new(root: &nn::Path, config: HtnetConfig) -> Htnet {
        let HtnetConfig { image_size, patch_size, dim, heads, block_repeats, mlp_mult, channels, classes } = config;
        assert!(image_size % patch_size == 0, "the image size must be a multiple of the patch size");
        let fmap = image_size / patch_size;
        let hierarchies = block_repeats.len() as i64;
        let blocks = 1 << (hierarchies - 1);
        let seq_len = (fmap / blocks) * (fmap / blocks);
        let patch_dim = channels * patch_size * patch_size;
        let patch_embedding = conv1x1(&(root / "to_patch_embedding" / "1"), patch_dim, dim, true);
        let layers = root / "layers";
        let levels = (0..hierarchies)
            .map(|i| {
                let (width, level_heads) = (dim << i, heads << i);
                let p = &layers / i;
                let transformer = Transformer::new(&(&p / 0), width, seq_len, block_repeats[i as usize], level_heads, mlp_mult);
                let aggregate = (i + 1 < hierarchies).then(|| Aggregate {
                    conv: Conv2d::new(&(&p / 1 / 0), width, 2 * width, 3, 1, 1),
                    norm: ChannelNorm::new(&(&p / 1 / 1), 2 * width),
                });
                (transformer, aggregate)
            })
            .collect();
        let top = dim << (hierarchies - 1);
        Htnet {
            config,
            patch_embedding,
            levels,
            head_norm: ChannelNorm::new(&(root / "mlp_head" / "0"), top),
            head: linear(&(root / "mlp_head" / "2"), top, classes),
        }
    }

    pub fn config(&self) -> HtnetConfig {
        self.config
    }

    /// [`Htnet::logits`], eagerly.
    pub fn forward(&self, img: &Tensor) -> Tensor {
        self.logits(&mut Eager::new(false), img)
    }
}

impl Forward for Htnet {
    /// Logits for a (N, channels, image_size, image_size) batch.
    fn logits<O: Ops>(&self, ops: &mut O, img: &O::T) -> O::T {
        let HtnetConfig { image_size, patch_size: p, channels: c, dim, .. } = self.config;
        let mut n = image_size / p;
        // b c (h p1) (w p2) -> b (p1 p2 c) h w
        let patches = ops.reshape(img, &[-1, c, n, p, n, p]);
        let patches = ops.permute(&patches, &[0, 3, 5, 1, 2, 4]);
        let patches = ops.reshape(&patches, &[-1, p * p * c, n, n]);
        let mut x = ops.pointwise(&patches, &self.patch_embedding.ws, self.patch_embedding.bs.as_ref());
        let hierarchies = self.levels.len() as i64;
        for (i, (transformer, aggregate)) in self.levels.iter().enumerate() {
            let blocks = 1i64 << (hierarchies - 1 - i as i64);
            let side = n / blocks;
            x = blockwise(ops, &x, dim << i, n, blocks, |ops, tiles| transformer.forward(ops, tiles, side, side));
            if let Some(a) = aggregate {
                let y = a.conv.forward(ops, &x);
                let y = a.norm.forward(ops, &y);
                x = ops.max_pool2d(&y, 3, 2, 1);
                n = (n - 1) / 2 + 1;
            }
        }
        let normed = self.head_norm.forward(ops, &x);
        let pooled = ops.global_avg_pool(&normed);
        ops.linear(&pooled, &self.head)
    }
}

/// The official configuration, trained with the official unweighted cross-entropy.
struct HtnetArch;
pub const HTNET: Arch = Arch(&HtnetArch);

impl Architecture for HtnetArch {
    fn name(&self) -> &'static str {
        "htnet"
    }

    fn about(&self) -> &'static str {
        "HTNet: hierarchical transformer over the landmark mosaic of a flow image (3×28×28)"
    }

    fn input_layout(&self) -> InputLayout {
        InputLayout::HtnetMosaic28
    }

    /// The landmark mosaic of each flow image, at the fixed fallback landmarks, as `mer prepare
    /// --input htnet-mosaic28` makes it from frames.
    fn derive_input(&self, from: InputLayout) -> Option<Derivation> {
        (from == InputLayout::FlowStrain28).then_some(("htnet-mosaic", |sample| htnet_mosaic(sample, &HTNET_FALLBACK_LANDMARKS)))
    }

    fn build(&self, root: &nn::Path, classes: i64, _settings: &ArchSettings) -> Box<dyn Network> {
        Box::new(Htnet::new(root, HtnetConfig::official(classes)))
    }

    fn describe(&self, _settings: &ArchSettings, _loss: &LossConfig) -> String {
        "official configuration: patch 7, dim 256, heads 3, blocks 2/2/10; fixed fallback landmarks".into()
    }
}

/// Applies `f` to each of the blocks × blocks tiles of a `width`-channel n × n map as a batch
/// of its own: b c (b1 h) (b2 w) -> (b b1 b2) c h w, then back.
fn blockwise<O: Ops>(ops: &mut O, x: &O::T, width: i64, n: i64, blocks: i64, f: impl FnOnce(&mut O, &O::T) -> O::T) -> O::T {
    let side = n / blocks;
    let tiles = ops.reshape(x, &[-1, width, blocks, side, blocks, side]);
    let tiles = ops.permute(&tiles, &[0, 2, 4, 1, 3, 5]);
    let tiles = ops.reshape(&tiles, &[-1, width, side, side]);
    let out = f(ops, &tiles);
    let merged = ops.reshape(&out, &[-1, blocks, blocks, width, side, side]);
    let merged = ops.permute(&merged, &[0, 3, 1, 4, 2, 5]);
    ops.reshape(&merged, &[-1, width, n, n])
}

impl Module for Htnet {
    fn forward(&self, xs: &Tensor) -> Tensor {
        Htnet::forward(self, xs)
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, nn::VarStore};

    use super::*;

    #[test]
    fn the_official_configuration_has_the_published_size_and_keys() {
        let vs = VarStore::new(Device::Cpu);
        let model = Htnet::new(&vs.root(), HtnetConfig::official(3));
        let variables = vs.variables();
        let params: i64 = variables.values().map(Tensor::numel).map(|n| n as i64).sum();
        assert_eq!(params, 139_582_982);
        assert_eq!(variables.len(), 171);
        for (key, shape) in [
            ("to_patch_embedding.1.weight", vec![256, 147, 1, 1]),
            ("layers.0.0.pos_emb", vec![1]),
            ("layers.0.0.layers.1.0.fn.to_qkv.weight", vec![765, 256, 1, 1]),
            ("layers.1.0.layers.0.0.fn.to_out.0.weight", vec![512, 510, 1, 1]),
            ("layers.2.0.layers.9.1.fn.net.3.weight", vec![1024, 4096, 1, 1]),
            ("layers.1.1.0.weight", vec![1024, 512, 3, 3]),
            ("layers.0.1.1.g", vec![1, 512, 1, 1]),
            ("mlp_head.0.b", vec![1, 1024, 1, 1]),
            ("mlp_head.2.weight", vec![3, 1024]),
        ] {
            assert_eq!(variables.get(key).map(Tensor::size), Some(shape), "{key}");
        }
        let logits = model.forward(&Tensor::rand([2, 3, 28, 28], (Kind::Float, Device::Cpu)));
        assert_eq!(logits.size(), [2, 3]);
    }

    /// The attention written out in general form: 1×1 convolutions, scores, softmax.
    fn general_attention(attention: &Attention, x: &Tensor) -> Tensor {
        let [b, _, h, w] = x.size()[..] else { unreachable!() };
        let qkv = attention.norm.forward(&mut Eager::new(true), x).apply(&attention.to_qkv).chunk(3, 1);
        let split = |t: &Tensor| t.reshape([b, attention.heads, attention.dim_head, h * w]).transpose(2, 3);
        let (q, k, v) = (split(&qkv[0]), split(&qkv[1]), split(&qkv[2]));
        let scores = q.matmul(&k.transpose(2, 3)) * (attention.dim_head as f64).powf(-0.5);
        let out = scores.softmax(-1, Kind::Float).matmul(&v);
        out.transpose(2, 3).reshape([b, attention.heads * attention.dim_head, h, w]).apply(&attention.to_out)
    }

    /// Outputs and every weight gradient of `attention` against the general form, for blocks of
    /// `side`×`side` tokens.
    fn attention_matches_general_form(side: i64) {
        tch::manual_seed(7);
        let vs = VarStore::new(Device::Cpu);
        let attention = Attention::new(&vs.root(), 16, 2);
        let x = Tensor::randn([5, 16, side, side], (Kind::Float, Device::Cpu));
        let weights = Tensor::randn([5, 16, side, side], (Kind::Float, Device::Cpu));
        let run = |f: &dyn Fn() -> Tensor| {
            for (_, v) in vs.variables() {
                let mut g = v.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
            let out = f();
            (&out * &weights).sum(Kind::Float).backward();
            let mut grads: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(k, v)| (k, v.grad().copy())).collect();
            grads.sort_by(|a, b| a.0.cmp(&b.0));
            (out.detach(), grads)
        };
        let (ours, our_grads) = run(&|| attention.forward(&mut Eager::new(true), &x, side, side));
        let (general, general_grads) = run(&|| general_attention(&attention, &x));
        let diff = f64::try_from((&ours - &general).abs().max()).unwrap();
        assert!(diff < 1e-5, "{diff}");
        for ((name, a), (_, b)) in our_grads.iter().zip(&general_grads) {
            let diff = f64::try_from((a - b).abs().max()).unwrap();
            assert!(diff < 1e-4, "{name}: {diff}");
        }
        if side == 1 {
            // A single key: q and k carry no gradient at all.
            let qk = our_grads.iter().find(|(n, _)| n.ends_with("to_qkv.weight")).unwrap().1.narrow(0, 0, 16);
            assert_eq!(f64::try_from(qk.abs().max()).unwrap(), 0.0);
        }
    }

    #[test]
    fn single_token_attention_is_the_value_projection_with_the_same_gradients() {
        attention_matches_general_form(1);
    }

    #[test]
    fn attention_over_several_tokens_matches_the_general_form() {
        attention_matches_general_form(3);
    }

    #[test]
    fn blocks_are_tiles_of_the_map() {
        let x = Tensor::arange(2 * 3 * 4 * 4, (Kind::Float, Device::Cpu)).view([2, 3, 4, 4]);
        // Each tile sees its own 2×2 corner: the first tile of sample 1 is its top-left corner.
        let seen = std::cell::RefCell::new(None);
        let back = blockwise(&mut Eager::new(false), &x, 3, 4, 2, |_, t| {
            *seen.borrow_mut() = Some(t.shallow_clone());
            t.shallow_clone()
        });
        assert!(back.equal(&x));
        let tiles = seen.into_inner().unwrap();
        assert_eq!(tiles.size(), [8, 3, 2, 2]);
        assert!(tiles.get(4).equal(&x.get(1).narrow(1, 0, 2).narrow(2, 0, 2)));
        assert!(tiles.get(5).equal(&x.get(1).narrow(1, 0, 2).narrow(2, 2, 2)));
    }
}
