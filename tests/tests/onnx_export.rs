//! The exported inference graph against the tch forward pass, in tract and in onnxruntime, for
//! the full model and every graph-changing ablation. Weights and batch-norm statistics are
//! randomised so that folding the batch norms is actually exercised. The onnxruntime and
//! `onnx.checker` half needs the venv; it says so and passes without it, unless
//! MER_REQUIRE_REFERENCE=1.

use std::path::Path;
use std::process::Command;

use mer_host::export::{inference_graph, tch_logits};
use mer_tests::reference_python_with;
use mer_host::model::skd_tstsan::{Ablation, SkdConfig, SkdTstsan};
use mer_shared::inference::OnnxModel;
use mer_shared::manifest::{LogitAgreement, Probe};
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

#[test]
fn export_matches_tch_in_tract_and_onnxruntime_for_every_variant() {
    let python = reference_python_with(&["onnx", "onnxruntime"], "onnxruntime");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/reference/onnx_reference.py");
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(3);
    let batch = 3;
    let input = Probe::input(41, batch, SHAPE);
    for (spec, classes) in [("none", 5), ("mag", 3), ("eca", 5), ("tsm", 7), ("mag,eca,tsm", 3)] {
        let ablation: Ablation = spec.parse().unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let model = SkdTstsan::new(&vs.root(), SkdConfig { ablation, ..SkdConfig::new(classes) });
        randomise_batch_norms(&vs);
        let expected = tch_logits(&model, &input, batch, SHAPE);
        let onnx = inference_graph(&model, SHAPE, classes as usize, vec![]);

        let tract = OnnxModel::from_bytes(&onnx).unwrap();
        let got = tract.run(&input, batch).unwrap();
        let agreement = LogitAgreement::between(&expected, &got);
        assert!(agreement.within_tolerance(), "{spec}: tract {agreement:?}");
        // Another batch size through the same model (the batch is symbolic in the file).
        let one = tract.run(&input[..SHAPE.iter().product()], 1).unwrap();
        assert!(LogitAgreement::between(&expected[..1], &one).within_tolerance(), "{spec}: batch of one");

        if let Some(python) = &python {
            let (model_path, in_path, out_path) = (dir.path().join("m.onnx"), dir.path().join("x.npy"), dir.path().join("y.npy"));
            std::fs::write(&model_path, &onnx).unwrap();
            let dims = [batch, SHAPE[0], SHAPE[1], SHAPE[2]];
            std::fs::write(&in_path, mer_shared::npy::encode(&dims, &input)).unwrap();
            let out = Command::new(python).arg(&script).arg("check").args([&model_path, &in_path, &out_path]).output().unwrap();
            assert!(out.status.success(), "{spec}: onnx check failed:\n{}", String::from_utf8_lossy(&out.stderr));
            let report = String::from_utf8_lossy(&out.stdout);
            assert!(report.contains("\"checker\": \"passed\"") && report.contains("\"opset\": 17"), "{report}");
            let ort = logits_rows(&out_path, classes as usize);
            let agreement = LogitAgreement::between(&expected, &ort);
            assert!(agreement.within_tolerance(), "{spec}: onnxruntime {agreement:?}");
        }
    }
}
