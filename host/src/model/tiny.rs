//! A test-only architecture: what adding one takes (this file and its line in
//! [`super::ARCHITECTURES`]), trained, exported and checked for parity through the same code as
//! the real ones.
//!
//! Flow image (3×28×28) → conv 3×3 with batch norm → ReLU → 2×2 max-pool → global average →
//! dropout → linear.

use mer_shared::input::InputLayout;
use tch::nn;

use super::losses::LossConfig;
use super::ops::{BatchNorm, Conv2d, Ops, linear};
use super::{Arch, ArchSettings, Architecture, Forward, Network};

const WIDTH: i64 = 4;

#[derive(Debug)]
struct Tiny {
    conv: Conv2d,
    bn: BatchNorm,
    head: nn::Linear,
}

impl Forward for Tiny {
    fn logits<O: Ops>(&self, ops: &mut O, x: &O::T) -> O::T {
        let y = self.conv.forward_bn(ops, x, &self.bn);
        let y = ops.relu(&y);
        let y = ops.max_pool2d(&y, 2, 2, 0);
        let y = ops.global_avg_pool(&y);
        let y = ops.dropout(&y, 0.5);
        ops.linear(&y, &self.head)
    }
}

struct TinyArch;
pub const TINY: Arch = Arch(&TinyArch);

impl Architecture for TinyArch {
    fn name(&self) -> &'static str {
        "tiny"
    }

    fn about(&self) -> &'static str {
        "test-only: one conv over a flow image (3×28×28)"
    }

    fn input_layout(&self) -> InputLayout {
        InputLayout::FlowStrain28
    }

    fn build(&self, root: &nn::Path, classes: i64, _settings: &ArchSettings) -> Box<dyn Network> {
        Box::new(Tiny {
            conv: Conv2d::new(&(root / "conv"), 3, WIDTH, 3, 1, 1),
            bn: BatchNorm::new(&(root / "bn"), WIDTH),
            head: linear(&(root / "head"), WIDTH, classes),
        })
    }

    fn describe(&self, _settings: &ArchSettings, _loss: &LossConfig) -> String {
        "one conv".into()
    }
}

#[cfg(test)]
mod tests {
    use mer_shared::input::{InputSpec, InputTensor, KeyFrames};
    use mer_shared::labels::Taxonomy;
    use tch::Device;

    use super::*;
    use crate::export::{ExportOptions, export};
    use crate::prepare::{CacheKey, CropMode, DetectorSettings, PreparationCache, PreparedSample};
    use crate::train::config::TrainConfig;
    use crate::train::data::{DataKind, TrainData};
    use crate::train::run::train_all;

    /// A prepared cache of flow images: two subjects, three classes.
    fn prepared(dir: &std::path::Path) {
        let spec = InputSpec::flow_strain();
        let key = CacheKey::new("tiny", Taxonomy::CompositeThree, spec.clone(), CropMode::None, &DetectorSettings::default());
        let cache = PreparationCache::open(dir, &key).unwrap();
        let per = spec.channels * spec.height * spec.width;
        for i in 0..6usize {
            let data = (0..per).map(|k| ((k * 31 + i * 17) % 101) as f32 / 101.0).collect();
            let tensor = InputTensor { channels: 3, height: 28, width: 28, data };
            let sample = PreparedSample {
                id: format!("s{}/clip{i}", i % 2),
                subject: format!("s{}", i % 2),
                class: i % 3,
                label: "label".into(),
                source: format!("clip{i}"),
                face: None,
                frames: KeyFrames { onset: 0, apex: 1, offset: 2 },
                input_sha256: tensor.sha256(),
                notes: vec![],
            };
            cache.put(&sample, &tensor).unwrap();
        }
        cache.finish(&serde_json::json!({})).unwrap();
    }

    #[test]
    fn a_registered_architecture_trains_exports_and_keeps_parity() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        prepared(&data_dir);
        let arch: Arch = "tiny".parse().unwrap();
        let data = TrainData::load_for(arch, DataKind::Prepared, &data_dir).unwrap();
        let config = TrainConfig { iters: 3, batch: 4, ..TrainConfig::new(arch) };
        let run = dir.path().join("run");
        let checkpoint = train_all(&data, &config, &run, Device::Cpu).unwrap();
        let opts = ExportOptions {
            checkpoint,
            ensemble: vec![],
            out: dir.path().join("tiny.onnx"),
            data: None,
            evaluation: None,
            version: None,
            probe_seed: 7,
            classes: None,
            input: None,
            uncertain_below: None,
        };
        // The export refuses to return a graph that disagrees with the tch model.
        let exported = export(&opts).unwrap();
        assert_eq!(exported.manifest.architecture, "tiny");
        assert_eq!(exported.checks.len(), 3, "probe, batch of one, real samples");
        assert!(exported.checks.iter().all(|c| c.agreement.within_tolerance()));
    }
}
