//! `mer export` → `mer keys generate` → `mer bundle` → `mer bundle verify` → `mer infer`, as a
//! user runs them on a freshly trained model, and the mistakes and attacks each must refuse.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::*;

/// A tiny model trained on all samples of a small synthetic set.
fn trained(dir: &Path) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    let cache = dir.join("cache");
    let run = dir.join("run");
    ok(&mer(&["synth", "casme2", "--out", s(&data), "--subjects", "3", "--per-subject", "4", "--seed", "4"]));
    ok(&mer(&["prepare", "--dataset", "casme2", "--root", s(&data), "--crop", "none", "--out", s(&cache)]));
    ok(&mer(&["train", "--data", s(&cache), "--out", s(&run), "--all-samples", "--iters", "4", "--batch", "4", "--device", "cpu"]));
    (cache, run.join("model.safetensors"))
}

fn infer_json(out: &Output) -> serde_json::Value {
    serde_json::from_str(ok(out).trim()).expect("mer infer prints JSON")
}

#[test]
fn export_bundle_verify_infer_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cache, checkpoint) = trained(d);
    let onnx = d.join("model.onnx");
    let report = ok(&mer(&["export", s(&checkpoint), "-o", s(&onnx), "--model-version", "test-1"]));
    assert_eq!(report.matches("arg-max identical").count(), 3, "{report}");
    assert!(report.contains("samples of the run's data"), "{report}");

    let key = d.join("keys/site");
    std::fs::create_dir_all(d.join("keys")).unwrap();
    ok(&mer(&["keys", "generate", "-o", s(&key)]));
    let public = d.join("keys/site.pub");
    let bundle = d.join("model.merb");
    ok(&mer(&["bundle", s(&onnx), "--key", s(&key), "-o", s(&bundle)]));
    let verified = ok(&mer(&["bundle", "verify", s(&bundle), "--pub", s(&public)]));
    assert!(verified.contains("test-1") && verified.trim_end().ends_with("OK"), "{verified}");

    // One prepared sample and a batch of three, through the ONNX file and the bundle alike.
    let first = std::fs::read_dir(cache.join("samples"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "npy"))
        .min()
        .unwrap();
    let (shape, values) = mer_shared::npy::decode(&std::fs::read(&first).unwrap()).unwrap();
    let mut three = values.clone();
    three.extend(values.iter().map(|v| 1.0 - v));
    three.extend(values.iter().map(|v| v * 0.5));
    let batch = d.join("batch.npy");
    std::fs::write(&batch, mer_shared::npy::encode(&[3, shape[0], shape[1], shape[2]], &three)).unwrap();
    let from_onnx = infer_json(&mer(&["infer", s(&onnx), s(&batch)]));
    let from_bundle = infer_json(&mer(&["infer", s(&bundle), s(&batch), "--pub", s(&public), "--threads", "2"]));
    assert_eq!(from_onnx, from_bundle);
    assert_eq!(from_onnx["classes"].as_array().unwrap().len(), 5);
    let probabilities = from_onnx["probabilities"].as_array().unwrap();
    assert_eq!(probabilities.len(), 3);
    for row in probabilities {
        let sum: f64 = row.as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-5, "{row}");
    }
    // A single C×H×W sample is a batch of one and gives the batch's first row.
    let single = infer_json(&mer(&["infer", s(&onnx), s(&first)]));
    assert_eq!(single["logits"][0], from_onnx["logits"][0]);

    // The benchmark reads a bundle as well as an ONNX file, and the profile names tract's nodes.
    let bench = ok(&mer(&["bench-infer", s(&bundle), "--batches", "1", "--iters", "2", "--warmup", "1", "--profile"]));
    assert!(bench.contains("tract") && bench.contains("tch (libtorch) forward"), "{bench}");
    assert!(bench.contains("OptMatMul m:"), "{bench}");
    if std::env::var_os("MER_REQUIRE_REFERENCE").is_some() {
        assert!(bench.contains("onnxruntime"), "{bench}");
    }

    // Every tampered byte position tried here is refused, never a panic.
    let good = std::fs::read(&bundle).unwrap();
    let tampered = d.join("tampered.merb");
    for at in [0, 5, 100, good.len() / 2, good.len() - 70, good.len() - 1] {
        let mut bytes = good.clone();
        bytes[at] ^= 0x01;
        std::fs::write(&tampered, &bytes).unwrap();
        err(&mer(&["bundle", "verify", s(&tampered), "--pub", s(&public)]));
    }
    std::fs::write(&tampered, &good[..good.len() / 3]).unwrap();
    err(&mer(&["bundle", "verify", s(&tampered), "--pub", s(&public)]));

    // Someone else's key.
    let other = d.join("keys/other");
    ok(&mer(&["keys", "generate", "-o", s(&other)]));
    let e = err(&mer(&["bundle", "verify", s(&bundle), "--pub", s(&d.join("keys/other.pub"))]));
    assert!(e.contains("not among the trusted keys"), "{e}");
    let e = err(&mer(&["keys", "generate", "-o", s(&key)]));
    assert!(e.contains("already exists"), "{e}");

    // Truncated and foreign models, inputs of the wrong shape or kind.
    let bytes = std::fs::read(&onnx).unwrap();
    let truncated = d.join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = err(&mer(&["infer", s(&truncated), s(&batch)]));
    assert!(e.contains("not a readable ONNX file"), "{e}");
    let e = err(&mer(&["bundle", s(&truncated), "--key", s(&key), "-o", s(&d.join("t.merb"))]));
    assert!(e.contains("cannot be bundled"), "{e}");
    let e = err(&mer(&["infer", s(&first), s(&batch)]));
    assert!(e.contains("ONNX"), "{e}");
    let wrong = d.join("wrong.npy");
    std::fs::write(&wrong, mer_shared::npy::encode(&[2, 38, 32, 32], &vec![0.5; 2 * 38 * 32 * 32])).unwrap();
    let e = err(&mer(&["infer", s(&onnx), s(&wrong)]));
    assert!(e.contains("[2, 38, 32, 32]") && e.contains("[N, 38, 48, 48]"), "{e}");
    let e = err(&mer(&["infer", s(&onnx), s(&key)]));
    assert!(e.contains("not a .npy file"), "{e}");

    imported_weights_export_with_their_classes(d, &cache, &checkpoint);

    // An export whose data moved says what to pass.
    std::fs::rename(&cache, d.join("moved")).unwrap();
    let e = err(&mer(&["export", s(&checkpoint), "-o", s(&d.join("again.onnx"))]));
    assert!(e.contains("--data"), "{e}");
    ok(&mer(&["export", s(&checkpoint), "-o", s(&d.join("again.onnx")), "--data", s(&d.join("moved"))]));
    let e = err(&mer(&["export", s(&d.join("nowhere/model.safetensors")), "-o", s(&d.join("x.onnx"))]));
    assert!(e.contains("not inside a training run") && e.contains("--classes"), "{e}");
}

/// Weights outside any training run (as `mer import-pytorch` writes them; here a trained
/// SKD-TSTSAN checkpoint copied out of its run) export with `--classes`, are marked as trained
/// elsewhere on external inputs, and every inconsistent option is refused with nothing written.
fn imported_weights_export_with_their_classes(d: &Path, cache: &Path, checkpoint: &Path) {
    let elsewhere = d.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let weights = elsewhere.join("official.safetensors");
    std::fs::copy(checkpoint, &weights).unwrap();
    let onnx = d.join("imported.onnx");
    let export = |extra: &[&str]| mer(&[&["export", s(&weights), "-o", s(&onnx)], extra].concat());

    let e = err(&export(&[]));
    assert!(e.contains("not inside a training run") && e.contains("--classes TAXONOMY"), "{e}");
    let e = err(&export(&["--classes", "casme2-3"]));
    assert!(e.contains("casme2-3 names 3 classes") && e.contains("has 5"), "{e}");
    let e = err(&export(&["--classes", "casme9-5"]));
    assert!(e.contains("'casme9-5'") && e.contains("possible values: casme2-5, casme2-3,"), "{e}");
    let e = err(&export(&["--classes", "casme2-5", "--input", "flow-strain28"]));
    assert!(e.contains("--input flow-strain28") && e.contains("skd-tstsan reads skd-tstsan inputs"), "{e}");
    let e = err(&export(&["--classes", "casme2-5", "--input", "optical-flow"]));
    assert!(e.contains("'optical-flow'") && e.contains("possible values: skd-tstsan, flow-strain28, htnet-mosaic28"), "{e}");
    // Parity data must hold the layout's inputs, exactly as the project prepares them.
    let flow_cache = d.join("cache-flow");
    let root = d.join("data");
    ok(&mer(&[
        "prepare",
        "--dataset",
        "casme2",
        "--root",
        s(&root),
        "--crop",
        "none",
        "--input",
        "flow-strain28",
        "--out",
        s(&flow_cache),
    ]));
    let e = err(&export(&["--classes", "casme2-5", "--data", s(&flow_cache)]));
    assert!(e.contains("another input spec") && e.contains("layout: \"flow_strain28\" ≠ \"skd_tstsan38\""), "{e}");
    assert!(!onnx.exists(), "a refused export wrote {}", onnx.display());

    let report = ok(&export(&["--classes", "casme2-5", "--data", s(cache), "--model-version", "imported-1"]));
    assert_eq!(report.matches("arg-max identical").count(), 3, "{report}");
    assert!(report.contains("samples of the prepared casme2 data") && report.contains("inputs as external"), "{report}");
    let classifier = mer_shared::classifier::Classifier::load(&onnx, mer_shared::classifier::Trust::IntegrityOnly).unwrap();
    let m = classifier.manifest();
    assert_eq!((m.version.as_str(), m.taxonomy.as_str(), m.training.run.as_str()), ("imported-1", "casme2-5", "imported"));
    assert_eq!(m.inputs, mer_shared::manifest::InputProvenance::External);
    let mer_shared::manifest::WeightsOrigin::Imported { checkpoint: name, sha256 } = &m.training.weights else {
        panic!("an export outside a run must record imported weights: {:?}", m.training.weights)
    };
    assert_eq!((name.as_str(), sha256.len()), ("official.safetensors", 64));

    // Inside a run, --classes and --input must be the run's.
    let e = err(&mer(&["export", s(checkpoint), "-o", s(&onnx), "--classes", "casme2-3"]));
    assert!(e.contains("belongs to the training run") && e.contains("casme2-5"), "{e}");
    let e = err(&mer(&["export", s(checkpoint), "-o", s(&onnx), "--input", "htnet-mosaic28"]));
    assert!(e.contains("reads skd-tstsan inputs"), "{e}");
}
