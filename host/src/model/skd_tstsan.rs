//! SKD-TSTSAN (three-stream temporal-shift attention network with self-knowledge distillation),
//! layer for layer as the official PyTorch implementation, with variable paths equal to its
//! state-dict keys so official checkpoints load directly.
//!
//! Input: (B, 38, 48, 48) — channel 0 apex face, 1 onset face, 2–17 apex 4×4 blocks, 18–33
//! onset blocks, 34–37 flows (u, v onset→apex; u, v apex→offset). Streams: L (local blocks, with
//! ECA), S (static face), T (flows; two temporal segments per sample with temporal shift).
//! Each stream starts with a learned magnification (encoder + manipulator, onset vs. apex).
//! Two auxiliary classifiers (AC1 after stage 1, AC2 after stage 2) are trained by
//! self-distillation from the main classifier and are not needed at inference.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::nn;
use tch::{Kind, Tensor};

use super::layers::{BatchNorm, Conv2d, Eca, Manipulator, MotionEncoder, linear, temporal_shift, temporal_shift_to_onnx};
use crate::export::onnx_graph::{Attr, OnnxGraph};

pub const INPUT_CHANNELS: i64 = 38;
pub const INPUT_SIZE: i64 = 48;
/// Width of each concatenated feature vector (3 streams × 128).
pub const FEATURE_DIM: i64 = 384;
const DROPOUT: f64 = 0.2;

/// Components of the paper's ablation study (table 5) that can be switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ablation {
    /// No magnification front ends: each stream's first conv reads the apex input directly
    /// (L: 16 block channels, S: 1 face channel, T: 2 flow channels) at 48×48.
    pub mag: bool,
    /// No ECA channel attention in the L stream.
    pub eca: bool,
    /// No temporal shift in the T stream.
    pub tsm: bool,
    /// No self-distillation: only the main classifier is trained (focal loss alone).
    pub skd: bool,
}

impl Ablation {
    pub fn is_empty(&self) -> bool {
        *self == Ablation::default()
    }
}

impl FromStr for Ablation {
    type Err = anyhow::Error;
    /// A comma-separated subset of `mag,eca,tsm,skd` (empty or `none` = the full model).
    fn from_str(s: &str) -> anyhow::Result<Ablation> {
        let mut a = Ablation::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty() && *p != "none") {
            match part {
                "mag" => a.mag = true,
                "eca" => a.eca = true,
                "tsm" => a.tsm = true,
                "skd" => a.skd = true,
                other => anyhow::bail!("unknown ablation {other:?}; use any of mag, eca, tsm, skd separated by commas"),
            }
        }
        Ok(a)
    }
}

impl fmt::Display for Ablation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = [("mag", self.mag), ("eca", self.eca), ("tsm", self.tsm), ("skd", self.skd)]
            .iter()
            .filter(|(_, off)| *off)
            .map(|(n, _)| *n)
            .collect();
        f.write_str(if parts.is_empty() { "none" } else { "" })?;
        f.write_str(&parts.join(","))
    }
}

/// Model hyper-parameters that shape the network.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SkdConfig {
    pub classes: i64,
    /// Magnification factor α of the manipulators (2 in the official training script).
    pub amp: f64,
    pub ablation: Ablation,
}

impl SkdConfig {
    pub fn new(classes: i64) -> SkdConfig {
        SkdConfig { classes, amp: 2.0, ablation: Ablation::default() }
    }
}

/// The six outputs of the official `forward`: logits (B, K) and pre-dropout features (B, 384).
#[derive(Debug)]
pub struct SkdOutputs {
    pub logits: Tensor,
    pub ac1_logits: Tensor,
    pub ac2_logits: Tensor,
    pub final_feature: Tensor,
    pub ac1_feature: Tensor,
    pub ac2_feature: Tensor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamKind {
    Local,
    Static,
    Temporal,
    /// The temporal stream on one flow (one temporal domain): no partner segment to shift
    /// channels with or to average with.
    Flow,
}

impl StreamKind {
    fn suffix(self) -> &'static str {
        match self {
            StreamKind::Local => "L",
            StreamKind::Static => "S",
            StreamKind::Temporal | StreamKind::Flow => "T",
        }
    }
}

/// conv → BN → ReLU → (ECA), with a temporal shift before the conv in the T stream.
#[derive(Debug)]
struct ConvUnit {
    conv: Conv2d,
    bn: BatchNorm,
    eca: Option<Eca>,
    shift: bool,
}

impl ConvUnit {
    fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        let xs = if self.shift { temporal_shift(xs) } else { xs.shallow_clone() };
        let y = self.bn.forward_t(&self.conv.forward(&xs), train).relu();
        match &self.eca {
            Some(eca) => eca.forward(&y),
            None => y,
        }
    }

    /// `segments` holds one tensor, or the T stream's two temporal segments.
    fn to_onnx(&self, g: &mut OnnxGraph, segments: &[String], in_channels: i64) -> Vec<String> {
        let segments = match segments {
            [s0, s1] if self.shift => temporal_shift_to_onnx(g, s0, s1, in_channels).to_vec(),
            _ => segments.to_vec(),
        };
        segments
            .iter()
            .map(|x| {
                let y = self.conv.to_onnx_with_bn(g, x, &self.bn);
                let y = g.relu(&y);
                match &self.eca {
                    Some(eca) => eca.to_onnx(g, &y),
                    None => y,
                }
            })
            .collect()
    }
}

/// One stream's trunk and its parts of the two auxiliary classifiers.
#[derive(Debug)]
struct Stream {
    kind: StreamKind,
    stage1: ConvUnit,
    ac1: [ConvUnit; 2],
    stage2: [ConvUnit; 2],
    ac2: [ConvUnit; 2],
    stage3: [ConvUnit; 2],
}

impl Stream {
    fn new(root: &nn::Path, kind: StreamKind, in_channels: i64, ablation: Ablation) -> Stream {
        let s = kind.suffix();
        let local = kind == StreamKind::Local && !ablation.eca;
        let unit = |conv: &str, bn: &str, eca: &str, i: i64, o: i64, k: i64, pad: i64, shifted: bool| {
            let wraps = kind == StreamKind::Temporal && shifted;
            // Shift-wrapped convs keep their weights under `.net`, as in the official module.
            let conv_path = if wraps { root / format!("{conv}_{s}") / "net" } else { root / format!("{conv}_{s}") };
            ConvUnit {
                conv: Conv2d::new(&conv_path, i, o, k, 1, pad),
                bn: BatchNorm::new(&(root / format!("{bn}_{s}")), o),
                eca: local.then(|| Eca::new(&(root / eca), o)),
                shift: wraps && !ablation.tsm,
            }
        };
        Stream {
            kind,
            stage1: unit("conv1", "bn1", "ECA1", in_channels, 64, 5, 0, false),
            ac1: [
                unit("AC1_conv1", "AC1_bn1", "AC1_ECA1", 64, 128, 3, 1, true),
                unit("AC1_conv2", "AC1_bn2", "AC1_ECA2", 128, 128, 3, 1, true),
            ],
            stage2: [unit("conv2", "bn2", "ECA2", 64, 64, 3, 1, true), unit("conv3", "bn3", "ECA3", 64, 64, 3, 1, true)],
            ac2: [
                unit("AC2_conv1", "AC2_bn1", "AC2_ECA1", 64, 128, 3, 1, true),
                unit("AC2_conv2", "AC2_bn2", "AC2_ECA2", 128, 128, 3, 1, true),
            ],
            stage3: [unit("conv4", "bn4", "ECA4", 64, 128, 3, 1, true), unit("conv5", "bn5", "ECA5", 128, 128, 3, 1, true)],
        }
    }

    fn run(units: &[ConvUnit], xs: &Tensor, train: bool) -> Tensor {
        units.iter().fold(xs.shallow_clone(), |y, u| u.forward(&y, train))
    }

    /// Global average pool to (B, 128); the T stream's two segments are then averaged.
    fn pool(&self, xs: &Tensor) -> Tensor {
        let pooled = xs.mean_dim(&[2i64, 3][..], false, Kind::Float);
        if self.kind == StreamKind::Temporal {
            let rows = pooled.size()[0];
            pooled.view([rows / 2, 2, -1]).mean_dim(&[1i64][..], false, Kind::Float)
        } else {
            pooled
        }
    }

    fn stage1(&self, xs: &Tensor, train: bool) -> Tensor {
        self.stage1.forward(xs, train).max_pool2d([5, 5], [2, 2], [2, 2], [1, 1], false)
    }

    fn stage2(&self, xs: &Tensor, train: bool) -> Tensor {
        Stream::run(&self.stage2, xs, train).avg_pool2d([3, 3], [2, 2], [1, 1], false, true, None::<i64>)
    }

    fn stage3_feature(&self, xs: &Tensor, train: bool) -> Tensor {
        self.pool(&Stream::run(&self.stage3, xs, train))
    }

    /// The main path (stage 1 → 2 → 3 → pool) as ONNX, on one input or on the T stream's two
    /// segments (same weights, averaged after pooling).
    fn to_onnx(&self, g: &mut OnnxGraph, segments: &[String], in_channels: i64) -> String {
        let each = |g: &mut OnnxGraph, xs: Vec<String>, op: &str, attrs: &dyn Fn() -> Vec<(&'static str, Attr)>| -> Vec<String> {
            xs.iter().map(|x| g.node(op, &[x], attrs())).collect()
        };
        let y = self.stage1.to_onnx(g, segments, in_channels);
        let y = each(g, y, "MaxPool", &|| {
            vec![("kernel_shape", Attr::Ints(vec![5, 5])), ("strides", Attr::Ints(vec![2, 2])), ("pads", Attr::Ints(vec![2; 4]))]
        });
        let y = self.stage2[0].to_onnx(g, &y, 64);
        let y = self.stage2[1].to_onnx(g, &y, 64);
        let y = each(g, y, "AveragePool", &|| {
            vec![
                ("kernel_shape", Attr::Ints(vec![3, 3])),
                ("strides", Attr::Ints(vec![2, 2])),
                ("pads", Attr::Ints(vec![1; 4])),
                ("count_include_pad", Attr::Int(1)),
            ]
        });
        let y = self.stage3[0].to_onnx(g, &y, 64);
        let y = self.stage3[1].to_onnx(g, &y, 128);
        let pooled = each(g, y, "GlobalAveragePool", &Vec::new);
        let pooled = each(g, pooled, "Flatten", &|| vec![("axis", Attr::Int(1))]);
        match &pooled[..] {
            [single] => single.clone(),
            [s0, s1] => {
                let sum = g.add(s0, s1);
                g.scale(&sum, 0.5)
            }
            _ => unreachable!("a stream has one input or two temporal segments"),
        }
    }
}

/// Encoder + manipulator of one stream.
#[derive(Debug)]
struct Magnifier {
    encoder: MotionEncoder,
    manipulator: Manipulator,
}

#[derive(Debug)]
pub struct SkdTstsan {
    config: SkdConfig,
    magnifiers: Option<[Magnifier; 3]>,
    streams: [Stream; 3],
    ac1_fc: nn::Linear,
    ac2_fc: nn::Linear,
    fc2: nn::Linear,
}

impl SkdTstsan {
    pub fn new(root: &nn::Path, config: SkdConfig) -> SkdTstsan {
        let ablation = config.ablation;
        let magnifiers = (!ablation.mag).then(|| {
            [("L", 16), ("S", 1), ("T", 2)].map(|(s, dim_in)| Magnifier {
                encoder: MotionEncoder::new(&(root / format!("Aug_Encoder_{s}")), dim_in),
                manipulator: Manipulator::new(&(root / format!("Aug_Manipulator_{s}"))),
            })
        });
        let in_channels = |mag_free: i64| if ablation.mag { mag_free } else { 32 };
        let streams = [
            Stream::new(root, StreamKind::Local, in_channels(16), ablation),
            Stream::new(root, StreamKind::Static, in_channels(1), ablation),
            Stream::new(root, StreamKind::Temporal, in_channels(2), ablation),
        ];
        SkdTstsan {
            config,
            magnifiers,
            streams,
            ac1_fc: linear(&(root / "AC1_fc"), FEATURE_DIM, config.classes),
            ac2_fc: linear(&(root / "AC2_fc"), FEATURE_DIM, config.classes),
            fc2: linear(&(root / "fc2"), FEATURE_DIM, config.classes),
        }
    }

    pub fn config(&self) -> SkdConfig {
        self.config
    }

    /// Splits the 38 channels into the three streams' inputs, magnified unless ablated.
    fn stream_inputs(&self, xs: &Tensor) -> [Tensor; 3] {
        let size = xs.size();
        assert!(
            size.len() == 4 && size[1] == INPUT_CHANNELS && size[2] == INPUT_SIZE && size[3] == INPUT_SIZE,
            "SKD-TSTSAN expects (B, 38, 48, 48), got {size:?}"
        );
        let b = size[0];
        let local_apex = xs.narrow(1, 2, 16);
        let local_onset = xs.narrow(1, 18, 16);
        let static_apex = xs.narrow(1, 0, 1);
        let static_onset = xs.narrow(1, 1, 1);
        // Rows 2b and 2b+1 are sample b's two flows: the (B, segments, C, H, W) view the shift uses.
        let flows = xs.narrow(1, 34, 4).reshape([2 * b, 2, INPUT_SIZE, INPUT_SIZE]);
        let Some(mags) = &self.magnifiers else { return [local_apex, static_apex, flows] };
        let amp = self.config.amp;
        let magnify =
            |m: &Magnifier, onset: &Tensor, apex: &Tensor| m.manipulator.forward(&m.encoder.forward(onset), &m.encoder.forward(apex), amp);
        let local = magnify(&mags[0], &local_onset, &local_apex);
        let stat = magnify(&mags[1], &static_onset, &static_apex);
        // The T stream's reference is motionless flow; the bias-free encoder maps zeros to exactly
        // zero, so its encoding is the zero tensor without running the encoder.
        let flow_motion = mags[2].encoder.forward(&flows);
        let temporal = mags[2].manipulator.forward(&flow_motion.zeros_like(), &flow_motion, amp);
        [local, stat, temporal]
    }

    fn classify(&self, fc: &nn::Linear, feature: &Tensor, train: bool) -> Tensor {
        feature.dropout(DROPOUT, train).apply(fc)
    }

    /// All six outputs (training with self-distillation needs the auxiliary heads).
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> SkdOutputs {
        let inputs = self.stream_inputs(xs);
        let mut ac1 = Vec::with_capacity(3);
        let mut ac2 = Vec::with_capacity(3);
        let mut main = Vec::with_capacity(3);
        for (stream, x) in self.streams.iter().zip(&inputs) {
            let s1 = stream.stage1(x, train);
            ac1.push(stream.pool(&Stream::run(&stream.ac1, &s1, train)));
            let s2 = stream.stage2(&s1, train);
            ac2.push(stream.pool(&Stream::run(&stream.ac2, &s2, train)));
            main.push(stream.stage3_feature(&s2, train));
        }
        let (ac1_feature, ac2_feature, final_feature) = (Tensor::cat(&ac1, 1), Tensor::cat(&ac2, 1), Tensor::cat(&main, 1));
        SkdOutputs {
            logits: self.classify(&self.fc2, &final_feature, train),
            ac1_logits: self.classify(&self.ac1_fc, &ac1_feature, train),
            ac2_logits: self.classify(&self.ac2_fc, &ac2_feature, train),
            final_feature,
            ac1_feature,
            ac2_feature,
        }
    }

    /// Main-classifier logits only, skipping the auxiliary heads (inference, or training
    /// without self-distillation).
    pub fn logits_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let inputs = self.stream_inputs(xs);
        let features: Vec<Tensor> = self
            .streams
            .iter()
            .zip(&inputs)
            .map(|(stream, x)| stream.stage3_feature(&stream.stage2(&stream.stage1(x, train), train), train))
            .collect();
        self.classify(&self.fc2, &Tensor::cat(&features, 1), train)
    }

    /// The inference graph of [`SkdTstsan::logits_t`] (eval mode: batch norms folded into
    /// their convs, dropout gone, auxiliary classifiers dropped); returns the logits' name.
    pub fn to_onnx(&self, g: &mut OnnxGraph, input: &str) -> String {
        let local_apex = g.slice(input, 1, 2, 18);
        let static_apex = g.slice(input, 1, 0, 1);
        // The two flows (onset→apex, apex→offset) are the T stream's temporal segments. They stay
        // separate tensors of batch B rather than the (2B, …) rows of the tch model, which runs
        // every convolution at the model's batch size (tract's fastest path at batch 1).
        let flows = [g.slice(input, 1, 34, 36), g.slice(input, 1, 36, 38)];
        let (inputs, channels): ([Vec<String>; 3], [i64; 3]) = match &self.magnifiers {
            None => ([vec![local_apex], vec![static_apex], flows.to_vec()], [16, 1, 2]),
            Some(mags) => {
                let amp = self.config.amp;
                let local_onset = g.slice(input, 1, 18, 34);
                let static_onset = g.slice(input, 1, 1, 2);
                let mut magnify = |m: &Magnifier, onset: &str, apex: &str| {
                    let reference = m.encoder.to_onnx(g, onset);
                    let target = m.encoder.to_onnx(g, apex);
                    m.manipulator.to_onnx(g, Some(&reference), &target, amp)
                };
                let local = magnify(&mags[0], &local_onset, &local_apex);
                let stat = magnify(&mags[1], &static_onset, &static_apex);
                let temporal = flows
                    .iter()
                    .map(|flow| {
                        let motion = mags[2].encoder.to_onnx(g, flow);
                        mags[2].manipulator.to_onnx(g, None, &motion, amp)
                    })
                    .collect();
                ([vec![local], vec![stat], temporal], [32, 32, 32])
            }
        };
        let features: Vec<String> =
            self.streams.iter().zip(&inputs).zip(channels).map(|((stream, x), c)| stream.to_onnx(g, x, c)).collect();
        let feature = g.node("Concat", &[&features[0], &features[1], &features[2]], vec![("axis", Attr::Int(1))]);
        let weight = g.weight("fc", &self.fc2.ws);
        let bias = g.weight("fc", self.fc2.bs.as_ref().expect("the classifier has a bias"));
        g.node("Gemm", &[&feature, &weight, &bias], vec![("transB", Attr::Int(1))])
    }
}

/// The flow-only variant: SKD-TSTSAN's temporal stream alone, on one temporal domain (the
/// onset→apex u and v of a (B, 3, H, W) flow image whose third plane, strain, it does not use),
/// with its magnification front end and both auxiliary classifiers, so it trains with the same
/// self-distillation loss. Variables keep the T stream's names.
#[derive(Debug)]
pub struct SkdFlow {
    config: SkdConfig,
    magnifier: Option<Magnifier>,
    stream: Stream,
    ac1_fc: nn::Linear,
    ac2_fc: nn::Linear,
    fc2: nn::Linear,
}

impl SkdFlow {
    pub fn new(root: &nn::Path, config: SkdConfig) -> SkdFlow {
        let ablation = Ablation { tsm: true, ..config.ablation };
        let magnifier = (!ablation.mag).then(|| Magnifier {
            encoder: MotionEncoder::new(&(root / "Aug_Encoder_T"), 2),
            manipulator: Manipulator::new(&(root / "Aug_Manipulator_T")),
        });
        let stream = Stream::new(root, StreamKind::Flow, if ablation.mag { 2 } else { 32 }, ablation);
        SkdFlow {
            config,
            magnifier,
            stream,
            ac1_fc: linear(&(root / "AC1_fc"), 128, config.classes),
            ac2_fc: linear(&(root / "AC2_fc"), 128, config.classes),
            fc2: linear(&(root / "fc2"), 128, config.classes),
        }
    }

    pub fn config(&self) -> SkdConfig {
        self.config
    }

    fn input(&self, xs: &Tensor) -> Tensor {
        let uv = xs.narrow(1, 0, 2);
        match &self.magnifier {
            // Motionless flow is the reference; its encoding is exactly zero (bias-free encoder).
            Some(m) => {
                let motion = m.encoder.forward(&uv);
                m.manipulator.forward(&motion.zeros_like(), &motion, self.config.amp)
            }
            None => uv,
        }
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> SkdOutputs {
        let s = &self.stream;
        let s1 = s.stage1(&self.input(xs), train);
        let ac1_feature = s.pool(&Stream::run(&s.ac1, &s1, train));
        let s2 = s.stage2(&s1, train);
        let ac2_feature = s.pool(&Stream::run(&s.ac2, &s2, train));
        let final_feature = s.stage3_feature(&s2, train);
        SkdOutputs {
            logits: final_feature.dropout(DROPOUT, train).apply(&self.fc2),
            ac1_logits: ac1_feature.dropout(DROPOUT, train).apply(&self.ac1_fc),
            ac2_logits: ac2_feature.dropout(DROPOUT, train).apply(&self.ac2_fc),
            final_feature,
            ac1_feature,
            ac2_feature,
        }
    }

    pub fn logits_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let s = &self.stream;
        s.stage3_feature(&s.stage2(&s.stage1(&self.input(xs), train), train), train).dropout(DROPOUT, train).apply(&self.fc2)
    }

    /// The inference graph of [`SkdFlow::logits_t`]; returns the logits' name.
    pub fn to_onnx(&self, g: &mut OnnxGraph, input: &str) -> String {
        let uv = g.slice(input, 1, 0, 2);
        let (x, channels) = match &self.magnifier {
            Some(m) => {
                let motion = m.encoder.to_onnx(g, &uv);
                (m.manipulator.to_onnx(g, None, &motion, self.config.amp), 32)
            }
            None => (uv, 2),
        };
        let feature = self.stream.to_onnx(g, &[x], channels);
        g.linear(&feature, &self.fc2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn trainable_elements(vs: &nn::VarStore) -> i64 {
        vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
    }

    #[test]
    fn parameter_and_key_counts_match_the_official_module() {
        for (k, params) in [(5, 2_946_214), (3, 2_943_904), (7, 2_948_524)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let _ = SkdTstsan::new(&vs.root(), SkdConfig::new(k));
            assert_eq!(trainable_elements(&vs), params, "K={k}");
            let vars = vs.variables();
            assert_eq!(vars.len(), 255, "K={k}");
            assert_eq!(vars.keys().filter(|k| k.ends_with("num_batches_tracked")).count(), 27);
            for key in ["Aug_Encoder_T.motion_resblks.1.cba_2.conv2d.weight", "AC2_conv2_T.net.weight", "ECA5.conv.weight", "fc2.bias"] {
                assert!(vars.contains_key(key), "missing {key}");
            }
            assert_eq!(vars["ECA5.conv.weight"].size(), vec![1, 1, 5]);
            assert_eq!(vars["Aug_Encoder_L.cba_1.conv2d.weight"].size(), vec![16, 16, 7, 7]);
        }
    }

    #[test]
    fn forward_shapes_and_main_path_agree() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = SkdTstsan::new(&vs.root(), SkdConfig::new(5));
        let x = Tensor::rand([3, 38, 48, 48], (Kind::Float, Device::Cpu));
        let out = tch::no_grad(|| model.forward_t(&x, false));
        assert_eq!(out.logits.size(), vec![3, 5]);
        assert_eq!(out.ac2_logits.size(), vec![3, 5]);
        assert_eq!(out.final_feature.size(), vec![3, 384]);
        let main = tch::no_grad(|| model.logits_t(&x, false));
        assert_eq!(f64::try_from((main - &out.logits).abs().max()).unwrap(), 0.0);
    }

    #[test]
    fn ablations_build_and_run() {
        for spec in ["mag", "eca", "tsm", "skd", "mag,eca,tsm,skd"] {
            let ablation: Ablation = spec.parse().unwrap();
            assert_eq!(ablation.to_string(), spec);
            let vs = nn::VarStore::new(Device::Cpu);
            let model = SkdTstsan::new(&vs.root(), SkdConfig { ablation, ..SkdConfig::new(3) });
            let x = Tensor::rand([2, 38, 48, 48], (Kind::Float, Device::Cpu));
            assert_eq!(tch::no_grad(|| model.logits_t(&x, true)).size(), vec![2, 3]);
            let vars = vs.variables();
            assert_eq!(vars.contains_key("Aug_Encoder_S.cba_1.conv2d.weight"), !ablation.mag);
            assert_eq!(vars.contains_key("ECA1.conv.weight"), !ablation.eca);
        }
        assert!("mag,foo".parse::<Ablation>().is_err());
    }

    #[test]
    fn the_flow_only_variant_is_the_temporal_stream_alone() {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = SkdFlow::new(&vs.root(), SkdConfig::new(3));
        let vars = vs.variables();
        assert!(vars.contains_key("Aug_Encoder_T.cba_1.conv2d.weight") && vars.contains_key("conv5_T.weight"));
        assert!(
            !vars.keys().any(|k| k.ends_with("_L.weight") || k.ends_with("_S.weight") || k.contains(".net.")),
            "only the T stream, unshifted"
        );
        let x = Tensor::rand([4, 3, 28, 28], (Kind::Float, Device::Cpu));
        let out = model.forward_t(&x, true);
        assert_eq!((out.logits.size(), out.final_feature.size()), (vec![4, 3], vec![4, 128]));
        // The strain plane is not an input.
        let changed = Tensor::cat(&[x.narrow(1, 0, 2), Tensor::rand([4, 1, 28, 28], (Kind::Float, Device::Cpu))], 1);
        let same = tch::no_grad(|| (model.logits_t(&x, false) - model.logits_t(&changed, false)).abs().max());
        assert_eq!(f64::try_from(same).unwrap(), 0.0);
    }

    #[test]
    fn batchnorm_counts_training_batches() {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = SkdTstsan::new(&vs.root(), SkdConfig::new(5));
        let x = Tensor::rand([2, 38, 48, 48], (Kind::Float, Device::Cpu));
        let _ = model.forward_t(&x, true);
        let _ = model.forward_t(&x, false);
        assert_eq!(vs.variables()["bn3_T.num_batches_tracked"].int64_value(&[]), 1);
    }
}
