//! Neural network models trained by the host, and the one table that lists them.
//!
//! Each architecture lives in one module with everything about it: its settings, the input it
//! reads, the data it can make that input from, its loss, how it is built and its one generic
//! forward (see [`ops`]). [`ARCHITECTURES`] registers them; the trainer, the exporter and the
//! command line find an architecture only through it.

pub mod am3f_flownet;
pub mod ensemble;
pub mod htnet;
pub mod layers;
pub mod losses;
pub mod ops;
pub mod skd_tstsan;
#[cfg(test)]
mod tiny;

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};
use mer_shared::input::InputLayout;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tch::{Tensor, nn};

use losses::{LossConfig, LossTerms, Targets, single_term};
use ops::{Eager, OnnxGraph, Ops};
use skd_tstsan::SkdSettings;

/// Every architecture `mer` trains, exports and benchmarks.
pub static ARCHITECTURES: &[Arch] = &[
    skd_tstsan::SKD_TSTSAN,
    skd_tstsan::SKD_TSTSAN_FLOW,
    htnet::HTNET,
    am3f_flownet::AM3F_FLOWNET,
    #[cfg(test)]
    tiny::TINY,
];

/// What the registry knows about one architecture.
pub trait Architecture: Sync {
    /// The name `--arch` takes and run records and manifests carry.
    fn name(&self) -> &'static str;
    /// One line for `--help`.
    fn about(&self) -> &'static str;
    /// The input layout the network reads.
    fn input_layout(&self) -> InputLayout;
    /// Another layout it can make its input from, sample by sample: the derivation's name and the
    /// function (HTNet's landmark mosaic of a flow image).
    fn derive_input(&self, _from: InputLayout) -> Option<Derivation> {
        None
    }
    /// Its settings when none are given.
    fn default_settings(&self) -> ArchSettings {
        ArchSettings::None {}
    }
    /// Refuses settings it cannot use.
    fn validate(&self, _settings: &ArchSettings) -> Result<()> {
        Ok(())
    }
    /// The network for `classes` classes, its variables under `root`.
    fn build(&self, root: &nn::Path, classes: i64, settings: &ArchSettings) -> Box<dyn Network>;
    /// The manifest's one-line description of the configuration.
    fn describe(&self, settings: &ArchSettings, loss: &LossConfig) -> String;
    /// The class count `mer bench-train` measures with (that of its usual data).
    fn bench_classes(&self) -> i64 {
        3
    }
}

/// A named sample-by-sample conversion of another layout into an architecture's input.
pub type Derivation = (&'static str, fn(&[f32]) -> Vec<f32>);

/// An architecture: a handle on its registry entry.
#[derive(Clone, Copy)]
pub struct Arch(pub &'static dyn Architecture);

impl std::ops::Deref for Arch {
    type Target = dyn Architecture;
    fn deref(&self) -> &(dyn Architecture + 'static) {
        self.0
    }
}

impl Arch {
    pub fn all() -> &'static [Arch] {
        ARCHITECTURES
    }

    /// (channels, height, width) of one input sample.
    pub fn input_shape(self) -> [usize; 3] {
        let spec = self.input_layout().spec();
        [spec.channels, spec.height, spec.width]
    }

    /// The settings, or this architecture's defaults when `settings` are another's.
    pub fn settings_or_default(self, settings: &ArchSettings) -> ArchSettings {
        match (self.default_settings(), settings) {
            (ArchSettings::Skd(_), ArchSettings::Skd(s)) => ArchSettings::Skd(s.clone()),
            (defaults, _) => defaults,
        }
    }
}

impl PartialEq for Arch {
    fn eq(&self, other: &Arch) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Arch {}

impl fmt::Debug for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Arch> {
        match ARCHITECTURES.iter().find(|a| a.name() == s) {
            Some(arch) => Ok(*arch),
            None => {
                bail!("unknown architecture {s:?}; use one of {}", ARCHITECTURES.iter().map(|a| a.name()).collect::<Vec<_>>().join(", "))
            }
        }
    }
}

impl clap::ValueEnum for Arch {
    fn value_variants<'a>() -> &'a [Arch] {
        ARCHITECTURES
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()).help(self.about()))
    }
}

impl Serialize for Arch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Arch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Arch, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// An architecture's own settings, by the family that takes them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ArchSettings {
    /// SKD-TSTSAN and its flow-only variant.
    Skd(SkdSettings),
    /// Architectures without settings of their own.
    None {},
}

/// What inference asks of a trained model: its logits, eagerly and as ONNX nodes. Every
/// [`Network`] has them, and so does an [`ensemble::Ensemble`] of networks.
pub trait Logits: fmt::Debug {
    /// Main-classifier logits, eagerly.
    fn logits_t(&self, xs: &Tensor, train: bool) -> Tensor;
    /// The same forward as nodes of `g` (eval mode); returns the logits' name.
    fn logits_graph(&self, g: &mut OnnxGraph, input: &str) -> String;
}

/// A built network of any architecture, as the trainer and the exporter use it.
pub trait Network: Logits {
    /// The architecture's training loss of a batch: the loss, its terms for the log, and the
    /// main logits.
    fn training_loss(&self, x: &Tensor, y: &Tensor, targets: &Targets, loss: &LossConfig) -> (Tensor, LossTerms, Tensor);
}

/// The one forward of a network, generic over the backend; every `Forward` is a [`Network`].
pub trait Forward: fmt::Debug {
    fn logits<O: Ops>(&self, ops: &mut O, x: &O::T) -> O::T;

    /// Unweighted cross-entropy unless the architecture says otherwise.
    fn loss(&self, x: &Tensor, y: &Tensor, _targets: &Targets, _loss: &LossConfig) -> (Tensor, LossTerms, Tensor) {
        let logits = self.logits(&mut Eager::new(true), x);
        single_term(logits.cross_entropy_for_logits(y), logits)
    }
}

impl<F: Forward> Logits for F {
    fn logits_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.logits(&mut Eager::new(train), xs)
    }

    fn logits_graph(&self, g: &mut OnnxGraph, input: &str) -> String {
        self.logits(g, &input.to_string())
    }
}

impl<F: Forward> Network for F {
    fn training_loss(&self, x: &Tensor, y: &Tensor, targets: &Targets, loss: &LossConfig) -> (Tensor, LossTerms, Tensor) {
        self.loss(x, y, targets, loss)
    }
}

/// A boxed network is a network, so the registry's `build` result goes wherever one is asked for.
impl Logits for Box<dyn Network> {
    fn logits_t(&self, xs: &Tensor, train: bool) -> Tensor {
        (**self).logits_t(xs, train)
    }

    fn logits_graph(&self, g: &mut OnnxGraph, input: &str) -> String {
        (**self).logits_graph(g, input)
    }
}

impl Network for Box<dyn Network> {
    fn training_loss(&self, x: &Tensor, y: &Tensor, targets: &Targets, loss: &LossConfig) -> (Tensor, LossTerms, Tensor) {
        (**self).training_loss(x, y, targets, loss)
    }
}
