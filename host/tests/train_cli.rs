//! `mer prepare` → `mer train` → `mer report` as a user runs them, including a run killed
//! mid-fold and resumed, which must end with exactly the uninterrupted run's results and weights.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// Synthetic CASME II (3 subjects) prepared into a cache.
fn prepared(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let cache = dir.join("cache");
    ok(&mer(&["synth", "casme2", "--out", s(&data), "--subjects", "3", "--per-subject", "4", "--seed", "2"]));
    let out = ok(&mer(&["prepare", "--dataset", "casme2", "--root", s(&data), "--crop", "none", "--out", s(&cache)]));
    assert!(out.contains("per class:") && out.contains("wrote"), "{out}");
    // A second run reuses every sample.
    let again = ok(&mer(&["prepare", "--dataset", "casme2", "--root", s(&data), "--crop", "none", "--out", s(&cache)]));
    assert!(again.contains("0 prepared now"), "{again}");
    cache
}

const TRAIN: [&str; 6] = ["--iters", "10", "--batch", "4", "--checkpoint-every", "2"];

fn train(cache: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mer"));
    c.args(["train", "--data", s(cache), "--out", s(out), "--device", "cpu"]).args(TRAIN);
    c
}

fn any_checkpoint(run: &Path) -> bool {
    std::fs::read_dir(run.join("folds")).map(|entries| entries.flatten().any(|e| e.path().join("progress.json").exists())).unwrap_or(false)
}

/// Trains `extra` twice, once killed at its first checkpoint and resumed; both runs must end
/// with the same results and the same reported weights.
fn killed_run_resumes_to_the_same_results_with(cache: &Path, dir: &Path, extra: &[&str]) {
    let whole = dir.join("whole");
    let out = train(cache, &whole).args(extra).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("honest LOSO") && stdout.contains("UF1"), "{stdout}");

    let resumed = dir.join("resumed");
    let mut child = train(cache, &resumed).args(extra).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    loop {
        if any_checkpoint(&resumed) {
            child.kill().unwrap();
            child.wait().unwrap();
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run finished before it could be interrupted");
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!resumed.join("results.json").exists());
    let out = train(cache, &resumed).args(extra).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = |p: &Path| std::fs::read_to_string(p.join("results.json")).unwrap();
    assert_eq!(read(&resumed), read(&whole));
    for fold in std::fs::read_dir(whole.join("folds")).unwrap().flatten() {
        let weights = |run: &Path| std::fs::read(run.join("folds").join(fold.file_name()).join("model.safetensors")).unwrap();
        assert!(weights(&resumed) == weights(&whole), "{:?}: the reported weights differ", fold.file_name());
    }
    for f in ["confusion.png", "loss.png"] {
        assert!(resumed.join(f).exists(), "{f}");
    }
}

#[test]
fn killed_run_resumes_to_the_same_results() {
    let dir = tempfile::tempdir().unwrap();
    let cache = prepared(dir.path());
    killed_run_resumes_to_the_same_results_with(&cache, &dir.path().join("budget"), &[]);
    // Selection on a validation subject: the best weights so far must survive the interruption.
    killed_run_resumes_to_the_same_results_with(&cache, &dir.path().join("validation"), &["--val-subjects", "1"]);
}

#[test]
fn shards_report_and_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = prepared(dir.path());
    let (a, b, merged) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("merged"));
    for (shard, out) in [("1/2", &a), ("2/2", &b)] {
        let o = train(&cache, out).args(["--fold", shard, "--protocol", "paper", "--ablate", "eca,tsm"]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("INCOMPLETE"));
    }
    let report = ok(&mer(&["report", s(&a), s(&b), "--out", s(&merged)]));
    assert!(report.contains("paper LOSO over") && !report.contains("INCOMPLETE") && report.contains("optimistic"), "{report}");
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(merged.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["complete"], true);
    assert_eq!(results["config"]["ablation"]["eca"], true);
    assert_eq!(results["folds"].as_array().unwrap().len(), 3);

    // Mistakes a user makes, each answered with what was wrong.
    let e = err(&mer(&["train", "--data", s(&dir.path().join("nope")), "--out", s(&dir.path().join("x"))]));
    assert!(e.contains("nope"), "{e}");
    let e = err(&train(&cache, &a).args(["--fold", "3/2"]).output().unwrap());
    assert!(e.contains("i/n"), "{e}");
    let e = err(&train(&cache, &a).args(["--ablate", "mag,colour"]).output().unwrap());
    assert!(e.contains("colour"), "{e}");
    let e = err(&mer(&["train", "--data", s(&cache), "--out", s(&a), "--iters", "11", "--batch", "4", "--fold", "1/2"]));
    assert!(e.contains("already holds another run"), "{e}");
    let e = err(&mer(&[
        "prepare",
        "--dataset",
        "casme2",
        "--root",
        s(&dir.path().join("data")),
        "--classes",
        "4",
        "--out",
        s(&dir.path().join("c4")),
    ]));
    assert!(e.contains("casme2-5") && e.contains("casme2-3"), "{e}");
    let e = err(&mer(&["report", s(&a), s(&a), "--out", s(&dir.path().join("m2"))]));
    assert!(e.contains("has a fold in both"), "{e}");
}

#[test]
fn magnification_weights_from_magnet_pth() {
    let magnet = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/weights/magnet.pth");
    if !magnet.exists() {
        assert!(std::env::var("MER_REQUIRE_REFERENCE").as_deref() != Ok("1"), "{} is missing (MER_REQUIRE_REFERENCE=1)", magnet.display());
        eprintln!("SKIPPED: {} is missing", magnet.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = prepared(dir.path());
    let run = dir.path().join("run");
    let out = train(&cache, &run).args(["--fold", "1/3", "--magnet", s(&magnet)]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("45 copied, 3 adapted, 3 left fresh"), "{stderr}");
    let e = err(&train(&cache, &dir.path().join("r2")).args(["--magnet", s(&magnet), "--ablate", "mag"]).output().unwrap());
    assert!(e.contains("no magnification front ends"), "{e}");
}

#[test]
fn import_pytorch_reports_problems_precisely() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("weights.pth");
    std::fs::write(&bogus, b"not a checkpoint").unwrap();
    let e = err(&mer(&["import-pytorch", "--classes", "5", s(&bogus), "-o", s(&dir.path().join("o.safetensors"))]));
    assert!(e.contains("weights.pth"), "{e}");
    let magnet = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/weights/magnet.pth");
    if !magnet.exists() {
        assert!(std::env::var("MER_REQUIRE_REFERENCE").as_deref() != Ok("1"), "{} is missing (MER_REQUIRE_REFERENCE=1)", magnet.display());
        eprintln!("SKIPPED the magnet.pth part: {} is missing", magnet.display());
        return;
    }
    // A magnification checkpoint is not an SKD-TSTSAN state dict: every key is listed.
    let e = err(&mer(&["import-pytorch", "--classes", "5", s(&magnet), "-o", s(&dir.path().join("o.safetensors"))]));
    assert!(e.contains("missing (255)") && e.contains("unexpected (42)") && e.contains("encoder.cba_1.conv2d.weight"), "{e}");
}
