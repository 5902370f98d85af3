//! Logit parity with the PyTorch SKD-TSTSAN (scripts/reference/skd_tstsan.py, the official module
//! restated key for key): its `torch.save`d state dict imports with no missing, unexpected or
//! mis-shaped key and our forward pass gives the same six outputs (max abs difference ≤ 1e-4);
//! exported outside any training run, tract on the ONNX file and on its signed bundle gives the
//! PyTorch logits too, and the manifest says the weights and their inputs came from elsewhere.
//! Skipped with a message when the venv lacks torch, unless MER_REQUIRE_REFERENCE=1.

use std::path::Path;
use std::process::Command;

use mer_host::export::{ExportOptions, export_to_file};
use mer_host::import::official::import_skd_tstsan;
use mer_host::model::skd_tstsan::{SkdConfig, SkdTstsan};
use mer_host::weights::load_weights;
use mer_shared::bundle::{Bundle, SecretKey, write_public_key};
use mer_shared::classifier::{Classifier, Trust, classify_file};
use mer_shared::input::InputLayout;
use mer_shared::labels::Taxonomy;
use mer_shared::manifest::{InputProvenance, LogitAgreement, WeightsOrigin};
use mer_tests::reference_python_with;
use tch::{Device, Tensor, nn};

#[test]
fn official_state_dict_imports_exactly_gives_the_same_outputs_and_deploys() {
    let Some(python) = reference_python_with(&["torch", "safetensors"], "PyTorch") else { return };
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/reference/skd_tstsan.py");
    let classes = 5;
    let out = Command::new(&python)
        .arg(&script)
        .args(["--classes", &classes.to_string(), "--seed", "11", "--batch", "4", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "reference script failed:\n{}", String::from_utf8_lossy(&out.stderr));

    let ckpt = dir.path().join("imported.safetensors");
    let report = import_skd_tstsan(&dir.path().join("state_dict.pth"), classes, &ckpt).unwrap();
    assert!(report.is_exact(), "{}", report.describe());
    assert_eq!(report.matched, 255);

    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = SkdTstsan::new(&vs.root(), SkdConfig::new(classes));
    load_weights(&mut vs, &ckpt).unwrap();
    let probe: Vec<(String, Tensor)> = Tensor::read_safetensors(dir.path().join("probe.safetensors")).unwrap();
    let get = |name: &str| probe.iter().find(|(n, _)| n == name).map(|(_, t)| t.shallow_clone()).unwrap();
    let outputs = tch::no_grad(|| model.forward_t(&get("x"), false));
    for (name, ours) in [
        ("logits", &outputs.logits),
        ("ac1_logits", &outputs.ac1_logits),
        ("ac2_logits", &outputs.ac2_logits),
        ("final_feature", &outputs.final_feature),
        ("ac1_feature", &outputs.ac1_feature),
        ("ac2_feature", &outputs.ac2_feature),
    ] {
        let theirs = get(name);
        assert_eq!(ours.size(), theirs.size(), "{name}");
        let diff = f64::try_from((ours - &theirs).abs().max()).unwrap();
        eprintln!("{name}: max |ours − PyTorch| = {diff:.2e}");
        assert!(diff <= 1e-4, "{name}: max abs difference {diff}");
    }
    // The logits must depend on the input, or parity would prove little.
    let spread = f64::try_from(outputs.logits.std(false)).unwrap();
    assert!(spread > 1e-3, "logits barely vary ({spread})");

    // The wrong class count is refused with the mismatching keys and a hint.
    let err = import_skd_tstsan(&dir.path().join("state_dict.pth"), 3, &dir.path().join("x.safetensors")).unwrap_err().to_string();
    assert!(err.contains("mis-shaped (6)") && err.contains("fc2.weight") && err.contains("--classes 5"), "{err}");

    exports_and_classifies_like_pytorch(&python, dir.path(), &ckpt, &get("x"), &get("logits"));
}

/// The imported checkpoint (no training run around it) → `mer export --classes casme2-5` →
/// tract, through the ONNX file and through a signed bundle as `merd classify` loads it.
fn exports_and_classifies_like_pytorch(python: &Path, dir: &Path, ckpt: &Path, x: &Tensor, pytorch_logits: &Tensor) {
    let onnx = dir.join("official.onnx");
    let options = ExportOptions {
        checkpoint: ckpt.to_path_buf(),
        ensemble: vec![],
        out: onnx.clone(),
        data: None,
        evaluation: None,
        version: Some("official-import".into()),
        probe_seed: 3,
        classes: Some(Taxonomy::Casme2Five),
        input: None,
        uncertain_below: None,
    };
    let exported = export_to_file(&options).unwrap();
    assert_eq!(exported.checks.len(), 2, "probe and batch of one, no prepared data");
    assert!(exported.checks.iter().all(|c| c.agreement.within_tolerance()));

    let m = &exported.manifest;
    assert_eq!(m.architecture, "skd-tstsan");
    assert_eq!(m.taxonomy, "casme2-5");
    assert_eq!(m.classes, Taxonomy::Casme2Five.classes());
    assert_eq!(m.input, InputLayout::SkdTstsan38.spec());
    assert_eq!(m.inputs, InputProvenance::External);
    assert_eq!((m.training.run.as_str(), m.training.scope.as_str()), ("imported", "imported"));
    assert!(m.training.evaluation.is_none());
    let sha256 = Command::new(python)
        .args(["-c", "import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest())"])
        .arg(ckpt)
        .output()
        .unwrap();
    let sha256 = String::from_utf8(sha256.stdout).unwrap().trim().to_string();
    assert_eq!(m.training.weights, WeightsOrigin::Imported { checkpoint: "imported.safetensors".into(), sha256 });

    let batch = x.size()[0] as usize;
    let input = Vec::<f32>::try_from(x.flatten(0, -1)).unwrap();
    let expected: Vec<Vec<f32>> = Vec::<f32>::try_from(pytorch_logits.flatten(0, -1)).unwrap().chunks(5).map(<[f32]>::to_vec).collect();
    let classifier = Classifier::load(&onnx, Trust::IntegrityOnly).unwrap();
    let got = classifier.classify(&input, batch).unwrap();
    let agreement = LogitAgreement::between(&expected, &got.logits);
    eprintln!("logits: max |tract − PyTorch| = {:.2e}", agreement.max_abs_diff);
    assert!(agreement.within_tolerance(), "{agreement:?}");

    // The signed bundle classifies the same (what `merd classify` runs), and `merd run` refuses
    // it until foreign inputs are allowed, saying why.
    let key = SecretKey::from_seed(&[9; 32]);
    let public = dir.join("site.pub");
    write_public_key(&public, &key.public()).unwrap();
    let bundle = dir.join("official.merb");
    std::fs::write(&bundle, Bundle::sign(m.to_json(), exported.onnx.clone(), &key).to_bytes()).unwrap();
    let npy = dir.join("x.npy");
    std::fs::write(&npy, mer_shared::npy::encode(&[batch, 38, 48, 48], &input)).unwrap();
    let (from_bundle, _) = classify_file(&bundle, &npy, &[public], 1).unwrap();
    assert_eq!(from_bundle.logits, got.logits);
    let refused = mer_device::model_store::check_compatible(m, false).unwrap_err().to_string();
    assert!(refused.contains("trained elsewhere") && refused.contains("allow_foreign_inputs"), "{refused}");
    mer_device::model_store::check_compatible(m, true).unwrap();

    // Another taxonomy's class count is refused, naming both counts; nothing is written.
    let wrong = ExportOptions { classes: Some(Taxonomy::Casme2Three), out: dir.join("wrong.onnx"), ..options };
    let err = export_to_file(&wrong).unwrap_err().to_string();
    assert!(err.contains("3 classes") && err.contains("has 5"), "{err}");
    assert!(!dir.join("wrong.onnx").exists());
}
