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
use std::path::PathBuf;
use std::str::FromStr;

use mer_shared::input::InputLayout;
use serde::{Deserialize, Serialize};
use tch::Tensor;
use tch::nn;

use super::layers::{BatchNorm, Conv2d, Eca, Manipulator, MotionEncoder, linear};
use super::losses::{LossConfig, LossTerms, Targets, distillation_loss, feature_loss, focal_loss, single_term};
use super::ops::{Eager, Ops};
use super::{Arch, ArchSettings, Architecture, Forward, Network};

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

/// A stream's value: one tensor, or the T stream's two temporal segments.
enum StreamValue<O: Ops> {
    One(O::T),
    Pair(O::Pair),
}

impl<O: Ops> StreamValue<O> {
    /// `f` on the tensor, or on each segment.
    fn map(&self, ops: &mut O, mut f: impl FnMut(&mut O, &O::T) -> O::T) -> StreamValue<O> {
        match self {
            StreamValue::One(x) => StreamValue::One(f(ops, x)),
            StreamValue::Pair(p) => StreamValue::Pair(ops.pair_map(p, f)),
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
    in_channels: i64,
}

impl ConvUnit {
    fn forward<O: Ops>(&self, ops: &mut O, x: &StreamValue<O>) -> StreamValue<O> {
        let shifted;
        let x = match x {
            StreamValue::Pair(p) if self.shift => {
                shifted = StreamValue::Pair(ops.temporal_shift(p, self.in_channels));
                &shifted
            }
            _ => x,
        };
        x.map(ops, |ops, x| {
            let y = self.conv.forward_bn(ops, x, &self.bn);
            let y = ops.relu(&y);
            match &self.eca {
                Some(eca) => eca.forward(ops, &y),
                None => y,
            }
        })
    }
}

/// One stream's trunk and its parts of the two auxiliary classifiers.
#[derive(Debug)]
struct Stream {
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
                in_channels: i,
            }
        };
        Stream {
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

    fn run<O: Ops>(units: &[ConvUnit; 2], ops: &mut O, x: &StreamValue<O>) -> StreamValue<O> {
        let y = units[0].forward(ops, x);
        units[1].forward(ops, &y)
    }

    /// Global average pool to (B, 128); the T stream's two segments are then averaged.
    fn pool<O: Ops>(ops: &mut O, x: &StreamValue<O>) -> O::T {
        match x {
            StreamValue::One(x) => ops.global_avg_pool(x),
            StreamValue::Pair(p) => {
                let pooled = ops.pair_map(p, |ops, x| ops.global_avg_pool(x));
                ops.pair_mean(&pooled)
            }
        }
    }

    fn stage1<O: Ops>(&self, ops: &mut O, x: &StreamValue<O>) -> StreamValue<O> {
        self.stage1.forward(ops, x).map(ops, |ops, y| ops.max_pool2d(y, 5, 2, 2))
    }

    fn stage2<O: Ops>(&self, ops: &mut O, x: &StreamValue<O>) -> StreamValue<O> {
        Stream::run(&self.stage2, ops, x).map(ops, |ops, y| ops.avg_pool2d(y, 3, 2, 1))
    }

    /// The main feature, and with `aux` the two auxiliary classifiers' features.
    fn features<O: Ops>(&self, ops: &mut O, x: &StreamValue<O>, aux: bool) -> (O::T, Option<[O::T; 2]>) {
        let s1 = self.stage1(ops, x);
        let ac1 = aux.then(|| Stream::run(&self.ac1, ops, &s1)).map(|y| Stream::pool(ops, &y));
        let s2 = self.stage2(ops, &s1);
        let ac2 = aux.then(|| Stream::run(&self.ac2, ops, &s2)).map(|y| Stream::pool(ops, &y));
        let main = Stream::run(&self.stage3, ops, &s2);
        (Stream::pool(ops, &main), ac1.zip(ac2).map(<[O::T; 2]>::from))
    }
}

/// Encoder + manipulator of one stream.
#[derive(Debug)]
struct Magnifier {
    encoder: MotionEncoder,
    manipulator: Manipulator,
}

impl Magnifier {
    /// The change from `onset` to `apex`, magnified.
    fn forward<O: Ops>(&self, ops: &mut O, onset: &O::T, apex: &O::T, amp: f64) -> O::T {
        let reference = self.encoder.forward(ops, onset);
        let target = self.encoder.forward(ops, apex);
        self.manipulator.forward(ops, Some(&reference), &target, amp)
    }

    /// Flow against motionless flow, whose encoding is exactly zero (the encoder has no bias),
    /// so it is not computed.
    fn forward_flow<O: Ops>(&self, ops: &mut O, flow: &O::T, amp: f64) -> O::T {
        let motion = self.encoder.forward(ops, flow);
        self.manipulator.forward(ops, None, &motion, amp)
    }
}

/// The outputs of a generic forward: main logits and feature, and on request the auxiliary
/// classifiers' logits and features.
pub struct Heads<T> {
    pub logits: T,
    pub final_feature: T,
    /// (AC1, AC2) × (logits, feature).
    pub aux: Option<[(T, T); 2]>,
}

impl Heads<Tensor> {
    fn into_outputs(self) -> SkdOutputs {
        let [(ac1_logits, ac1_feature), (ac2_logits, ac2_feature)] = self.aux.expect("the auxiliary heads were asked for");
        SkdOutputs { logits: self.logits, ac1_logits, ac2_logits, final_feature: self.final_feature, ac1_feature, ac2_feature }
    }
}

/// The three classifiers over a feature of `width`.
#[derive(Debug)]
struct Classifiers {
    ac1_fc: nn::Linear,
    ac2_fc: nn::Linear,
    fc2: nn::Linear,
}

impl Classifiers {
    fn new(root: &nn::Path, width: i64, classes: i64) -> Classifiers {
        Classifiers {
            ac1_fc: linear(&(root / "AC1_fc"), width, classes),
            ac2_fc: linear(&(root / "AC2_fc"), width, classes),
            fc2: linear(&(root / "fc2"), width, classes),
        }
    }

    fn heads<O: Ops>(&self, ops: &mut O, final_feature: O::T, aux: Option<[O::T; 2]>) -> Heads<O::T> {
        let classify = |ops: &mut O, fc: &nn::Linear, feature: &O::T| {
            let dropped = ops.dropout(feature, DROPOUT);
            ops.linear(&dropped, fc)
        };
        // Dropout draws in this order: main, AC1, AC2.
        let logits = classify(ops, &self.fc2, &final_feature);
        let aux = aux.map(|[ac1, ac2]| [(classify(ops, &self.ac1_fc, &ac1), ac1), (classify(ops, &self.ac2_fc, &ac2), ac2)]);
        Heads { logits, final_feature, aux }
    }
}

#[derive(Debug)]
pub struct SkdTstsan {
    config: SkdConfig,
    magnifiers: Option<[Magnifier; 3]>,
    streams: [Stream; 3],
    classifiers: Classifiers,
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
        SkdTstsan { config, magnifiers, streams, classifiers: Classifiers::new(root, FEATURE_DIM, config.classes) }
    }

    pub fn config(&self) -> SkdConfig {
        self.config
    }

    /// Splits the 38 channels into the three streams' inputs, magnified unless ablated.
    fn stream_inputs<O: Ops>(&self, ops: &mut O, x: &O::T) -> [StreamValue<O>; 3] {
        let local_apex = ops.narrow(x, 1, 2, 16);
        let static_apex = ops.narrow(x, 1, 0, 1);
        // The two flows (onset→apex, apex→offset) are the T stream's temporal segments.
        let flows = ops.pair_from_channels(x, 34, 2);
        let Some(mags) = &self.magnifiers else {
            return [StreamValue::One(local_apex), StreamValue::One(static_apex), StreamValue::Pair(flows)];
        };
        let amp = self.config.amp;
        let local_onset = ops.narrow(x, 1, 18, 16);
        let static_onset = ops.narrow(x, 1, 1, 1);
        let local = mags[0].forward(ops, &local_onset, &local_apex, amp);
        let stat = mags[1].forward(ops, &static_onset, &static_apex, amp);
        let temporal = ops.pair_map(&flows, |ops, flow| mags[2].forward_flow(ops, flow, amp));
        [StreamValue::One(local), StreamValue::One(stat), StreamValue::Pair(temporal)]
    }

    /// The main classifier, and with `aux` the auxiliary ones (training with
    /// self-distillation needs them; inference and the export do not).
    pub fn forward<O: Ops>(&self, ops: &mut O, x: &O::T, aux: bool) -> Heads<O::T> {
        let inputs = self.stream_inputs(ops, x);
        let (mut main, mut ac1, mut ac2) = (Vec::with_capacity(3), Vec::with_capacity(3), Vec::with_capacity(3));
        for (stream, x) in self.streams.iter().zip(&inputs) {
            let (feature, aux_features) = stream.features(ops, x, aux);
            main.push(feature);
            if let Some([a1, a2]) = aux_features {
                ac1.push(a1);
                ac2.push(a2);
            }
        }
        let final_feature = ops.concat(&main, 1);
        let aux_features = aux.then(|| [ops.concat(&ac1, 1), ops.concat(&ac2, 1)]);
        self.classifiers.heads(ops, final_feature, aux_features)
    }

    /// All six outputs, eagerly.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> SkdOutputs {
        check_input(xs);
        self.forward(&mut Eager::new(train), xs, true).into_outputs()
    }

    /// Main-classifier logits only, eagerly.
    pub fn logits_t(&self, xs: &Tensor, train: bool) -> Tensor {
        check_input(xs);
        self.forward(&mut Eager::new(train), xs, false).logits
    }
}

fn check_input(xs: &Tensor) {
    let size = xs.size();
    assert!(
        size.len() == 4 && size[1] == INPUT_CHANNELS && size[2] == INPUT_SIZE && size[3] == INPUT_SIZE,
        "SKD-TSTSAN expects (B, 38, 48, 48), got {size:?}"
    );
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
    classifiers: Classifiers,
}

impl SkdFlow {
    pub fn new(root: &nn::Path, config: SkdConfig) -> SkdFlow {
        let ablation = Ablation { tsm: true, ..config.ablation };
        let magnifier = (!ablation.mag).then(|| Magnifier {
            encoder: MotionEncoder::new(&(root / "Aug_Encoder_T"), 2),
            manipulator: Manipulator::new(&(root / "Aug_Manipulator_T")),
        });
        let stream = Stream::new(root, StreamKind::Flow, if ablation.mag { 2 } else { 32 }, ablation);
        SkdFlow { config, magnifier, stream, classifiers: Classifiers::new(root, 128, config.classes) }
    }

    pub fn config(&self) -> SkdConfig {
        self.config
    }

    pub fn forward<O: Ops>(&self, ops: &mut O, x: &O::T, aux: bool) -> Heads<O::T> {
        let uv = ops.narrow(x, 1, 0, 2);
        let input = match &self.magnifier {
            Some(m) => m.forward_flow(ops, &uv, self.config.amp),
            None => uv,
        };
        let (feature, aux_features) = self.stream.features(ops, &StreamValue::One(input), aux);
        self.classifiers.heads(ops, feature, aux_features)
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> SkdOutputs {
        self.forward(&mut Eager::new(train), xs, true).into_outputs()
    }

    pub fn logits_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.forward(&mut Eager::new(train), xs, false).logits
    }
}

/// How the magnification front ends are initialised from a motion-magnification checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MagnetMode {
    /// Copy the encoder and manipulator weights, adapting the first conv to each stream's
    /// input channels.
    Transfer,
    /// What the official code does: its load matches no key, so nothing changes.
    Official,
}

/// The training settings of SKD-TSTSAN and its flow-only variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkdSettings {
    /// Magnification factor α of the manipulators.
    pub amp: f64,
    pub ablation: Ablation,
    /// Weights to start every fold from (classifier layers are dropped).
    pub init: Option<PathBuf>,
    /// Motion-magnification checkpoint and how to use it (ignored when `init` is given).
    pub magnet: Option<(PathBuf, MagnetMode)>,
}

impl Default for SkdSettings {
    /// The official recipe: amplification 2, nothing ablated, fresh initialisation.
    fn default() -> SkdSettings {
        SkdSettings { amp: 2.0, ablation: Ablation::default(), init: None, magnet: None }
    }
}

fn skd_settings(settings: &ArchSettings) -> SkdSettings {
    match settings {
        ArchSettings::Skd(s) => s.clone(),
        ArchSettings::None {} => SkdSettings::default(),
    }
}

fn model_config(classes: i64, settings: &ArchSettings) -> SkdConfig {
    let s = skd_settings(settings);
    SkdConfig { classes, amp: s.amp, ablation: s.ablation }
}

/// The full three-stream network.
struct SkdTstsanArch;
pub const SKD_TSTSAN: Arch = Arch(&SkdTstsanArch);

impl Architecture for SkdTstsanArch {
    fn name(&self) -> &'static str {
        "skd-tstsan"
    }

    fn about(&self) -> &'static str {
        "SKD-TSTSAN: three streams over faces, face blocks and two flows (38×48×48)"
    }

    fn input_layout(&self) -> InputLayout {
        InputLayout::SkdTstsan38
    }

    fn default_settings(&self) -> ArchSettings {
        ArchSettings::Skd(SkdSettings::default())
    }

    fn build(&self, root: &nn::Path, classes: i64, settings: &ArchSettings) -> Box<dyn Network> {
        Box::new(SkdTstsan::new(root, model_config(classes, settings)))
    }

    fn describe(&self, settings: &ArchSettings, _loss: &LossConfig) -> String {
        let s = skd_settings(settings);
        format!("amp {}, ablated: {}", s.amp, s.ablation)
    }

    fn bench_classes(&self) -> i64 {
        5
    }
}

/// The temporal stream alone.
struct SkdFlowArch;
pub const SKD_TSTSAN_FLOW: Arch = Arch(&SkdFlowArch);

impl Architecture for SkdFlowArch {
    fn name(&self) -> &'static str {
        "skd-tstsan-flow"
    }

    fn about(&self) -> &'static str {
        "SKD-TSTSAN's temporal stream alone, on the u, v flow of a flow image (3×28×28)"
    }

    fn input_layout(&self) -> InputLayout {
        InputLayout::FlowStrain28
    }

    fn default_settings(&self) -> ArchSettings {
        ArchSettings::Skd(SkdSettings::default())
    }

    fn validate(&self, settings: &ArchSettings) -> anyhow::Result<()> {
        let s = skd_settings(settings);
        if s.init.is_some() || s.magnet.is_some() {
            anyhow::bail!("--init and --magnet start SKD-TSTSAN's layers; {} trains from its own initialisation", self.name());
        }
        if s.ablation.eca || s.ablation.tsm {
            anyhow::bail!("the flow-only variant has no ECA and no temporal shift to ablate (use mag or skd)");
        }
        Ok(())
    }

    fn build(&self, root: &nn::Path, classes: i64, settings: &ArchSettings) -> Box<dyn Network> {
        Box::new(SkdFlow::new(root, model_config(classes, settings)))
    }

    fn describe(&self, settings: &ArchSettings, _loss: &LossConfig) -> String {
        let s = skd_settings(settings);
        format!("amp {}, ablated: {}", s.amp, s.ablation)
    }
}

/// Focal loss with self-distillation from the main classifier, or focal loss alone when
/// self-distillation is ablated; `heads(aux)` runs the network in training mode.
fn skd_training_loss(
    ablation: Ablation,
    heads: impl FnOnce(bool) -> Heads<Tensor>,
    y: &Tensor,
    targets: &Targets,
    loss: &LossConfig,
) -> (Tensor, LossTerms, Tensor) {
    if ablation.skd {
        let logits = heads(false).logits;
        return single_term(focal_loss(&logits, y, targets.weights, loss.gamma), logits);
    }
    let out = heads(true).into_outputs();
    let (total, terms) = skd_loss(&out, y, targets.weights, loss);
    (total, terms, out.logits)
}

impl Forward for SkdTstsan {
    fn logits<O: Ops>(&self, ops: &mut O, x: &O::T) -> O::T {
        self.forward(ops, x, false).logits
    }

    fn loss(&self, x: &Tensor, y: &Tensor, targets: &Targets, loss: &LossConfig) -> (Tensor, LossTerms, Tensor) {
        check_input(x);
        skd_training_loss(self.config.ablation, |aux| self.forward(&mut Eager::new(true), x, aux), y, targets, loss)
    }
}

impl Forward for SkdFlow {
    fn logits<O: Ops>(&self, ops: &mut O, x: &O::T) -> O::T {
        self.forward(ops, x, false).logits
    }

    fn loss(&self, x: &Tensor, y: &Tensor, targets: &Targets, loss: &LossConfig) -> (Tensor, LossTerms, Tensor) {
        skd_training_loss(self.config.ablation, |aux| self.forward(&mut Eager::new(true), x, aux), y, targets, loss)
    }
}

/// L = FL(main) + (1−α)(FL(AC1)+FL(AC2)) + α(KD1+KD2) + β(F1+F2).
pub fn skd_loss(out: &SkdOutputs, targets: &Tensor, weights: &Tensor, cfg: &LossConfig) -> (Tensor, LossTerms) {
    let focal_main = focal_loss(&out.logits, targets, weights, cfg.gamma);
    let focal_aux = focal_loss(&out.ac1_logits, targets, weights, cfg.gamma) + focal_loss(&out.ac2_logits, targets, weights, cfg.gamma);
    let kd =
        distillation_loss(&out.ac1_logits, &out.logits, cfg.temperature) + distillation_loss(&out.ac2_logits, &out.logits, cfg.temperature);
    let feat = feature_loss(&out.ac1_feature, &out.final_feature) + feature_loss(&out.ac2_feature, &out.final_feature);
    let total = &focal_main + &focal_aux * (1.0 - cfg.alpha) + &kd * cfg.alpha + &feat * cfg.beta;
    let terms = LossTerms {
        total: total.double_value(&[]),
        focal_main: focal_main.double_value(&[]),
        focal_aux: focal_aux.double_value(&[]),
        distillation: kd.double_value(&[]),
        feature: feat.double_value(&[]),
    };
    (total, terms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

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
