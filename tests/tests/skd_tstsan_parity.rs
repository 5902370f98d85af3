//! Logit parity with the PyTorch SKD-TSTSAN (scripts/reference/skd_tstsan.py, the official module
//! restated key for key): its `torch.save`d state dict imports with no missing, unexpected or
//! mis-shaped key and our forward pass gives the same six outputs (max abs difference ≤ 1e-4).
//! Skipped with a message when the venv lacks torch, unless MER_REQUIRE_REFERENCE=1.

use std::path::Path;
use std::process::Command;

use mer_tests::reference_python_with;
use mer_host::import::official::import_skd_tstsan;
use mer_host::model::skd_tstsan::{SkdConfig, SkdTstsan};
use mer_host::train::checkpoint::load_weights;
use tch::{Device, Tensor, nn};

#[test]
fn official_state_dict_imports_exactly_and_gives_the_same_outputs() {
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
}
