//! Neural network models trained by the host, and the one type the trainer handles them by.

pub mod am3f_flownet;
pub mod htnet;
pub mod layers;
pub mod ops;
pub mod skd_tstsan;

use std::fmt;
use std::str::FromStr;

use anyhow::bail;
use mer_shared::input::InputLayout;
use tch::{Tensor, nn};

use am3f_flownet::Am3fFlowNet;
use htnet::{Htnet, HtnetConfig};
use ops::{Eager, Ops};
use skd_tstsan::{SkdConfig, SkdFlow, SkdOutputs, SkdTstsan};

/// The architectures `mer train --arch` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    SkdTstsan,
    /// SKD-TSTSAN's temporal stream alone on one flow.
    SkdTstsanFlow,
    Htnet,
    Am3fFlowNet,
}

impl Arch {
    pub const ALL: [Arch; 4] = [Arch::SkdTstsan, Arch::SkdTstsanFlow, Arch::Htnet, Arch::Am3fFlowNet];

    pub fn name(self) -> &'static str {
        match self {
            Arch::SkdTstsan => "skd-tstsan",
            Arch::SkdTstsanFlow => "skd-tstsan-flow",
            Arch::Htnet => "htnet",
            Arch::Am3fFlowNet => "am3f-flownet",
        }
    }

    /// (channels, height, width) of one input sample.
    pub fn input_shape(self) -> [usize; 3] {
        match self {
            Arch::SkdTstsan => [38, 48, 48],
            Arch::SkdTstsanFlow | Arch::Htnet | Arch::Am3fFlowNet => [3, 28, 28],
        }
    }

    /// The input layout the network reads.
    pub fn input_layout(self) -> InputLayout {
        match self {
            Arch::SkdTstsan => InputLayout::SkdTstsan38,
            Arch::SkdTstsanFlow | Arch::Am3fFlowNet => InputLayout::FlowStrain28,
            Arch::Htnet => InputLayout::HtnetMosaic28,
        }
    }

    /// Whether the model has SKD-TSTSAN's auxiliary classifiers (and its loss).
    pub fn self_distilled(self) -> bool {
        matches!(self, Arch::SkdTstsan | Arch::SkdTstsanFlow)
    }
}

impl FromStr for Arch {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Arch> {
        match Arch::ALL.into_iter().find(|a| a.name() == s) {
            Some(arch) => Ok(arch),
            None => bail!("unknown architecture {s:?}; use one of {}", Arch::ALL.map(Arch::name).join(", ")),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One network of any architecture.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per fold; boxing would buy nothing
pub enum Network {
    SkdTstsan(SkdTstsan),
    SkdTstsanFlow(SkdFlow),
    Htnet(Htnet),
    Am3fFlowNet(Am3fFlowNet),
}

impl Network {
    /// `skd` shapes the SKD-TSTSAN variants (classes, amplification, ablation); the others take
    /// only its class count.
    pub fn new(root: &nn::Path, arch: Arch, skd: SkdConfig) -> Network {
        match arch {
            Arch::SkdTstsan => Network::SkdTstsan(SkdTstsan::new(root, skd)),
            Arch::SkdTstsanFlow => Network::SkdTstsanFlow(SkdFlow::new(root, skd)),
            Arch::Htnet => Network::Htnet(Htnet::new(root, HtnetConfig::official(skd.classes))),
            Arch::Am3fFlowNet => Network::Am3fFlowNet(Am3fFlowNet::new(root, skd.classes)),
        }
    }

    /// Main-classifier logits, on either backend (in the graph: eval mode).
    pub fn logits<O: Ops>(&self, ops: &mut O, xs: &O::T) -> O::T {
        match self {
            Network::SkdTstsan(m) => m.forward(ops, xs, false).logits,
            Network::SkdTstsanFlow(m) => m.forward(ops, xs, false).logits,
            Network::Htnet(m) => m.logits(ops, xs),
            Network::Am3fFlowNet(m) => m.logits(ops, xs),
        }
    }

    /// Main-classifier logits, eagerly.
    pub fn logits_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            Network::SkdTstsan(m) => m.logits_t(xs, train),
            _ => self.logits(&mut Eager::new(train), xs),
        }
    }

    /// All outputs of a self-distilled model (main and auxiliary heads with their features).
    pub fn skd_outputs(&self, xs: &Tensor, train: bool) -> Option<SkdOutputs> {
        match self {
            Network::SkdTstsan(m) => Some(m.forward_t(xs, train)),
            Network::SkdTstsanFlow(m) => Some(m.forward_t(xs, train)),
            Network::Htnet(_) | Network::Am3fFlowNet(_) => None,
        }
    }
}
