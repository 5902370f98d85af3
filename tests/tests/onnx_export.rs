//! The exported inference graph against the tch forward pass, in tract and in onnxruntime, for
//! the full model and every graph-changing ablation. Weights and batch-norm statistics are
//! randomised so that folding the batch norms is actually exercised. The onnxruntime and
//! `onnx.checker` half needs the venv; it says so and passes without it, unless
//! MER_REQUIRE_REFERENCE=1.

use std::path::Path;
use std::process::Command;

use mer_host::export::{inference_graph, tch_logits};
use mer_host::model::ArchSettings;
use mer_host::model::am3f_flownet::AM3F_FLOWNET;
use mer_host::model::htnet::{Htnet, HtnetConfig};
use mer_host::model::skd_tstsan::{Ablation, SKD_TSTSAN, SKD_TSTSAN_FLOW, SkdSettings};
use mer_shared::inference::OnnxModel;
use mer_shared::manifest::{LogitAgreement, Probe};
use mer_tests::reference_python_with;
use tch::{Device, Kind, Tensor, nn};

const SHAPE: [usize; 3] = [38, 48, 48];

/// Batch-norm statistics and affine parameters far from their initial 0/1, so a wrong fold shows.
fn randomise_batch_norms(vs: &nn::VarStore) {
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            let n = t.size().first().copied().unwrap_or(1);
            let fresh = if name.ends_with("running_mean") || (name.contains("bn") && name.ends_with(".bias")) {
                Tensor::randn([n], (Kind::Float, Device::Cpu)) * 0.2
            } else if name.ends_with("running_var") || (name.contains("bn") && name.ends_with(".weight")) {
                Tensor::rand([n], (Kind::Float, Device::Cpu)) + 0.5
            } else {
                continue;
            };
            t.copy_(&fresh);
        }
    });
}

fn logits_rows(path: &Path, classes: usize) -> Vec<Vec<f32>> {
    let (shape, values) = mer_shared::npy::decode(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(shape[1], classes);
    values.chunks(classes).map(<[f32]>::to_vec).collect()
}

/// The graph against the tch logits in tract (at the batch given and at batch one) and, with the
/// venv, in onnxruntime after `onnx.checker`.
fn check(what: &str, onnx: &[u8], input: &[f32], batch: usize, shape: [usize; 3], expected: &[Vec<f32>], python: Option<&Path>) {
    let tract = OnnxModel::from_bytes(onnx).unwrap();
    let got = tract.run(input, batch).unwrap();
    let agreement = LogitAgreement::between(expected, &got);
    assert!(agreement.within_tolerance(), "{what}: tract {agreement:?}");
    // Another batch size through the same model (the batch is symbolic in the file).
    let one = tract.run(&input[..shape.iter().product()], 1).unwrap();
    assert!(LogitAgreement::between(&expected[..1], &one).within_tolerance(), "{what}: batch of one");
    let Some(python) = python else { return };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/reference/onnx_reference.py");
    let dir = tempfile::tempdir().unwrap();
    let (model_path, in_path, out_path) = (dir.path().join("m.onnx"), dir.path().join("x.npy"), dir.path().join("y.npy"));
    std::fs::write(&model_path, onnx).unwrap();
    std::fs::write(&in_path, mer_shared::npy::encode(&[batch, shape[0], shape[1], shape[2]], input)).unwrap();
    let out = Command::new(python).arg(&script).arg("check").args([&model_path, &in_path, &out_path]).output().unwrap();
    assert!(out.status.success(), "{what}: onnx check failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("\"checker\": \"passed\"") && report.contains("\"opset\": 17"), "{report}");
    let ort = logits_rows(&out_path, expected[0].len());
    let agreement = LogitAgreement::between(expected, &ort);
    assert!(agreement.within_tolerance(), "{what}: onnxruntime {agreement:?}");
}

#[test]
fn export_matches_tch_in_tract_and_onnxruntime_for_every_variant() {
    let python = reference_python_with(&["onnx", "onnxruntime"], "onnxruntime");
    tch::manual_seed(3);
    let batch = 3;
    let input = Probe::input(41, batch, SHAPE);
    for (spec, classes) in [("none", 5), ("mag", 3), ("eca", 5), ("tsm", 7), ("mag,eca,tsm", 3)] {
        let ablation: Ablation = spec.parse().unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let model = SKD_TSTSAN.build(&vs.root(), classes, &ArchSettings::Skd(SkdSettings { ablation, ..SkdSettings::default() }));
        randomise_batch_norms(&vs);
        let expected = tch_logits(&model, &input, batch, SHAPE);
        let onnx = inference_graph(&model, SHAPE, classes as usize, vec![]);
        check(spec, &onnx, &input, batch, SHAPE, &expected, python.as_deref());
    }
}

/// AM3F-FlowNet, the flow-only SKD-TSTSAN (with and without magnification) and HTNet: in its
/// published shape at reduced widths (one token per block), and at a size where every block
/// holds 16 tokens so attention is not trivial. (The full-width HTNet is exported the same way;
/// its 140 M weights make it too slow for the suite.)
#[test]
fn flow_image_architectures_export_with_the_same_parity() {
    let python = reference_python_with(&["onnx", "onnxruntime"], "onnxruntime");
    tch::manual_seed(5);
    let batch = 2;
    let shape = [3, 28, 28];
    let input = Probe::input(43, batch, shape);
    for (arch, ablation) in [(AM3F_FLOWNET, "none"), (SKD_TSTSAN_FLOW, "none"), (SKD_TSTSAN_FLOW, "mag")] {
        let vs = nn::VarStore::new(Device::Cpu);
        let settings = ArchSettings::Skd(SkdSettings { ablation: ablation.parse().unwrap(), ..SkdSettings::default() });
        let model = arch.build(&vs.root(), 3, &arch.settings_or_default(&settings));
        randomise_batch_norms(&vs);
        let expected = tch_logits(&model, &input, batch, shape);
        let onnx = inference_graph(&model, shape, 3, vec![]);
        check(&format!("{arch} ({ablation} ablated)"), &onnx, &input, batch, shape, &expected, python.as_deref());
    }
    for (image_size, patch_size) in [(28, 7), (32, 2)] {
        let config = HtnetConfig { image_size, patch_size, dim: 24, heads: 3, block_repeats: [1, 1, 2], ..HtnetConfig::official(3) };
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Htnet::new(&vs.root(), config);
        let shape = [3, image_size as usize, image_size as usize];
        let input = Probe::input(44, batch, shape);
        let x = Tensor::from_slice(&input).view([batch as i64, 3, image_size, image_size]);
        let logits = tch::no_grad(|| model.forward(&x));
        let expected: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(logits).unwrap();
        let onnx = inference_graph(&model, shape, 3, vec![]);
        check(&format!("htnet {image_size}/{patch_size}"), &onnx, &input, batch, shape, &expected, python.as_deref());
    }
}
