//! The `torch.save` reader against archives that PyTorch itself writes (Python, from the
//! repo-local venv), against the published magnification checkpoint, and against the
//! SKD-TSTSAN reference script.
//!
//! Python writes each set of tensors twice, as `torch.save` and as safetensors (which tch reads
//! natively); every value must come back bit for bit. When the venv or its torch is missing
//! these tests say so and pass, unless MER_REQUIRE_REFERENCE=1 (set by scripts/test.sh), in
//! which case a missing reference is a failure.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use mer_host::import::{Kind, Tensor, describe, read_checkpoint, read_state_dict};
use mer_tests::reference_python_with;

fn run_python(python: &Path, args: &[&str]) -> String {
    let out = Command::new(python).args(args).output().unwrap();
    assert!(out.status.success(), "python {:?} failed:\n{}", args.first(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Bitwise equality: same kind, same shape, same bytes (so -0.0 differs from 0.0 and NaN
/// payloads count).
fn assert_identical(what: &str, ours: &Tensor, theirs: &Tensor) {
    assert_eq!(ours.kind(), theirs.kind(), "{what}: kind");
    assert_eq!(ours.size(), theirs.size(), "{what}: shape");
    let as_bits = |t: &Tensor| match t.kind() {
        Kind::Double => t.view_dtype(Kind::Int64),
        Kind::Float => t.view_dtype(Kind::Int),
        Kind::Half | Kind::BFloat16 => t.view_dtype(Kind::Int16),
        _ => t.shallow_clone(),
    };
    assert!(as_bits(ours).equal(&as_bits(theirs)), "{what}: values differ");
}

fn by_name(tensors: Vec<(String, Tensor)>) -> HashMap<String, Tensor> {
    tensors.into_iter().collect()
}

/// Writes one archive per case, each with a safetensors twin, plus files in other formats.
const WRITE_ARCHIVES: &str = r#"
import argparse, json, sys
import torch
from torch import nn
from safetensors.torch import save_file

out = sys.argv[1]
torch.manual_seed(0)
manifest = {}

def save(name, obj, tensors, **kw):
    torch.save(obj, f"{out}/{name}.pth", **kw)
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, f"{out}/{name}.safetensors")
    manifest[name] = [[k, str(v.dtype).removeprefix("torch."), list(v.shape)] for k, v in tensors.items()]

net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
net.train()
net(torch.randn(2, 3, 8, 8))
sd = net.state_dict()
save("module", sd, sd)

dtypes = {
    "f64": torch.randn(3, 4, dtype=torch.float64),
    "f16": torch.randn(5).half(),
    "bf16": torch.randn(2, 3).bfloat16(),
    "i64": torch.tensor([-(2 ** 62), -1, 0, 2 ** 40]),
    "i32": torch.tensor([-(2 ** 31), 7, 2 ** 31 - 1], dtype=torch.int32),
    "i16": torch.tensor([-32768, 5, 32767], dtype=torch.int16),
    "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
    "u8": torch.tensor([0, 128, 255], dtype=torch.uint8),
    "bool": torch.tensor([True, False, True]),
    "scalar": torch.tensor(3.5),
    "negzero_nan": torch.tensor([-0.0, float("nan"), float("inf")]),
    "empty": torch.zeros(0, 3),
}
save("dtypes", dtypes, dtypes)

base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
views = {
    "base": base, "transposed": base.t(), "row": base[2], "column": base[:, 3],
    "block": base[1:3, 2:5], "expanded": base[0:1].expand(3, 6), "strided": base[::2, ::3],
}
save("views", views, views)

opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
net(torch.randn(2, 3, 8, 8)).sum().backward()
opt.step()
sd2 = net.state_dict()
checkpoint = {"epoch": 7, "best_acc": 0.8125, "args": argparse.Namespace(lr=0.1, name="run"),
              "state_dict": sd2, "optimizer": opt.state_dict(), "history": [0.5, 0.625]}
save("wrapped", checkpoint, sd2)
save("model_key", {"model": sd}, sd)
params = dict(net.named_parameters())
save("parameters", params, params)
save("protocol4", sd, sd, pickle_protocol=4)

torch.save(sd, f"{out}/legacy.pth", _use_new_zipfile_serialization=False)
torch.jit.script(net).save(f"{out}/script.pt")
torch.save(net, f"{out}/whole_model.pth")
print(json.dumps(manifest))
"#;

#[test]
fn archives_written_by_pytorch_read_back_bit_for_bit() {
    let Some(python) = reference_python_with(&["torch", "safetensors"], "PyTorch") else { return };
    let dir = tempfile::tempdir().unwrap();
    let dir_str = dir.path().to_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&run_python(&python, &["-c", WRITE_ARCHIVES, dir_str])).unwrap();
    let manifest = manifest.as_object().unwrap();
    assert_eq!(manifest.len(), 7);
    for (case, expected) in manifest {
        let path = dir.path().join(format!("{case}.pth"));
        let checkpoint = read_checkpoint(&path).unwrap_or_else(|e| panic!("{case}: {e:#}"));
        let wrapper = match case.as_str() {
            "wrapped" => Some("state_dict"),
            "model_key" => Some("model"),
            _ => None,
        };
        assert_eq!(checkpoint.wrapped_under.as_deref(), wrapper, "{case}");

        // Names, dtypes and shapes in file order, from the pickle alone and from the full read.
        let listed: Vec<(String, String, Vec<i64>)> = expected
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let shape = e[2].as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect();
                (e[0].as_str().unwrap().to_string(), e[1].as_str().unwrap().to_string(), shape)
            })
            .collect();
        let description = describe(&path).unwrap();
        let described: Vec<(String, String, Vec<i64>)> =
            description.entries.iter().map(|e| (e.name.clone(), e.dtype.to_string(), e.shape.clone())).collect();
        assert_eq!(described, listed, "{case}: describe");
        let names: Vec<&str> = checkpoint.entries.iter().map(|(n, _)| n.as_str()).collect();
        let expected_names: Vec<&str> = listed.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, expected_names, "{case}: order");

        let twin = by_name(Tensor::read_safetensors(dir.path().join(format!("{case}.safetensors"))).unwrap());
        for (name, ours) in &checkpoint.entries {
            assert_identical(&format!("{case}/{name}"), ours, &twin[name]);
        }
        println!("{case}: {} tensors identical", checkpoint.entries.len());
    }

    // Spot checks that do not lean on the safetensors twin.
    let views = by_name(read_state_dict(&dir.path().join("views.pth")).unwrap());
    let row = |t: &Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
    assert_eq!(row(&views["transposed"])[..4], [0.0, 6.0, 12.0, 18.0]);
    assert_eq!(row(&views["block"]), [8.0, 9.0, 10.0, 14.0, 15.0, 16.0]);
    assert_eq!(row(&views["strided"]), [0.0, 3.0, 12.0, 15.0]);
    let description = describe(&dir.path().join("views.pth")).unwrap();
    assert!(description.entries.iter().all(|e| e.storage == description.entries[0].storage), "one shared storage");
    let module = by_name(read_state_dict(&dir.path().join("module.pth")).unwrap());
    let tracked = &module["1.num_batches_tracked"];
    assert_eq!((tracked.kind(), tracked.dim(), tracked.int64_value(&[])), (Kind::Int64, 0, 1));

    // Files that are not torch.save zip archives are named as what they are.
    let error = |file: &str| format!("{:#}", read_state_dict(&dir.path().join(file)).unwrap_err());
    let legacy = error("legacy.pth");
    assert!(legacy.contains("legacy.pth") && legacy.contains("legacy torch.save format"), "{legacy}");
    let script = error("script.pt");
    assert!(script.contains("TorchScript"), "{script}");
    let whole = error("whole_model.pth");
    assert!(whole.contains("Sequential object") && whole.contains("state_dict()"), "{whole}");
    let safetensors = error("module.safetensors");
    assert!(safetensors.contains("safetensors file"), "{safetensors}");
    println!("{legacy}\n{script}\n{whole}\n{safetensors}");
}

/// The encoder/manipulator/decoder weights of the learned motion magnification network, as
/// published next to the official SKD-TSTSAN code (an OrderedDict saved with torch.save).
#[test]
fn magnet_checkpoint_reads_like_python() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/weights/magnet.pth");
    if !path.exists() {
        assert!(std::env::var("MER_REQUIRE_REFERENCE").as_deref() != Ok("1"), "{} is missing (MER_REQUIRE_REFERENCE=1)", path.display());
        eprintln!("SKIPPED: {} does not exist, so the published magnet.pth checkpoint was not tested", path.display());
        return;
    }
    let entries = read_state_dict(&path).unwrap();
    assert_eq!(entries.len(), 42);
    assert!(entries.iter().all(|(n, _)| ["encoder.", "manipulator.", "decoder."].iter().any(|p| n.starts_with(p))));
    let abs_sum = |t: &Tensor| t.abs().sum(Kind::Double).double_value(&[]);
    let first = &entries.iter().find(|(n, _)| n == "encoder.cba_1.conv2d.weight").unwrap().1;
    assert_eq!(first.size(), [16, 3, 7, 7]);
    // Figures measured with PyTorch: sum |w| of this first tensor, and over all 42 tensors.
    assert!((abs_sum(first) - 40.259280).abs() < 1e-3, "sum |w| = {}", abs_sum(first));
    let total: f64 = entries.iter().map(|(_, t)| abs_sum(t)).sum();
    assert!((total - 29_932.133_7).abs() < 1e-2, "sum |w| over all tensors = {total}");
    println!("magnet.pth: 42 tensors, sum |w| {:.6} (encoder.cba_1), {total:.4} (all)", abs_sum(first));

    let Some(python) = reference_python_with(&["torch", "safetensors"], "PyTorch") else { return };
    let dir = tempfile::tempdir().unwrap();
    let twin = dir.path().join("magnet.safetensors");
    run_python(
        &python,
        &[
            "-c",
            "import sys, torch; from safetensors.torch import save_file; \
         save_file({k: v.contiguous() for k, v in torch.load(sys.argv[1], weights_only=True).items()}, sys.argv[2])",
            path.to_str().unwrap(),
            twin.to_str().unwrap(),
        ],
    );
    let twin = by_name(Tensor::read_safetensors(&twin).unwrap());
    assert_eq!(twin.len(), entries.len());
    for (name, ours) in &entries {
        assert_identical(name, ours, &twin[name]);
    }
}

/// The SKD-TSTSAN reference script writes its state dict exactly as the official training code
/// does; the reader must recover all 255 entries of the specification's table.
#[test]
fn skd_tstsan_reference_state_dict_reads_back() {
    let Some(python) = reference_python_with(&["torch", "safetensors"], "PyTorch") else { return };
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/reference/skd_tstsan.py");
    let args = ["--classes", "3", "--seed", "5", "--batch", "2", "--out", dir.path().to_str().unwrap()];
    let mut argv = vec![script.to_str().unwrap()];
    argv.extend(args);
    let summary: serde_json::Value = serde_json::from_str(run_python(&python, &argv).trim()).unwrap();
    assert_eq!((summary["keys"].as_u64(), summary["buffers"].as_u64()), (Some(255), Some(81)));
    assert_eq!(summary["params"].as_u64(), Some(2_940_439 + 1_155 * 3));

    let checkpoint = read_checkpoint(&dir.path().join("state_dict.pth")).unwrap();
    assert_eq!(checkpoint.wrapped_under, None);
    let entries = checkpoint.entries;
    assert_eq!(entries.len(), 255);
    // A few fixed rows of the table (0-based here).
    for (i, name) in [
        (0, "Aug_Encoder_L.cba_1.conv2d.weight"),
        (61, "bn1_L.num_batches_tracked"),
        (76, "AC1_conv1_T.net.weight"),
        (244, "fc2.weight"),
        (254, "AC2_ECA2.conv.weight"),
    ] {
        assert_eq!(entries[i].0, name, "entry {i}");
    }
    assert_eq!(entries[244].1.size(), [3, 384]);
    assert_eq!((entries[61].1.kind(), entries[61].1.dim()), (Kind::Int64, 0));
    assert!(entries[61].1.int64_value(&[]) > 0, "BatchNorm statistics were measured before saving");

    let twin = by_name(Tensor::read_safetensors(dir.path().join("state_dict.safetensors")).unwrap());
    assert_eq!(twin.len(), 255);
    for (name, ours) in &entries {
        assert_identical(name, ours, &twin[name]);
    }

    let probe = by_name(Tensor::read_safetensors(dir.path().join("probe.safetensors")).unwrap());
    let shapes: [(&str, &[i64]); 7] = [
        ("x", &[2, 38, 48, 48]),
        ("logits", &[2, 3]),
        ("ac1_logits", &[2, 3]),
        ("ac2_logits", &[2, 3]),
        ("final_feature", &[2, 384]),
        ("ac1_feature", &[2, 384]),
        ("ac2_feature", &[2, 384]),
    ];
    assert_eq!(probe.len(), shapes.len());
    for (name, shape) in shapes {
        assert_eq!(probe[name].size(), shape, "{name}");
    }
}
