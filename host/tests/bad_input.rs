//! The bad-input battery for `mer` (docs/RELIABILITY.md): each case makes its own cut, foreign or
//! mismatched input and checks that the command refuses it by name, without a panic and without
//! leaving a half-written file.

use std::path::{Path, PathBuf};

mod common;
use common::*;

/// stderr of a refused run, after checking that nothing half-written is left in `dir`.
fn refused(dir: &Path, args: &[&str], needles: &[&str]) -> String {
    let stderr = err(&mer(args));
    for needle in needles {
        assert!(stderr.contains(needle), "{args:?}: stderr lacks {needle:?}: {stderr}");
    }
    let leftovers: Vec<PathBuf> = walk(dir).into_iter().filter(|p| p.to_string_lossy().contains(".partial")).collect();
    assert!(leftovers.is_empty(), "{args:?}: half-written files left: {leftovers:?}");
    stderr
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let g = image::GrayImage::from_fn(width, height, |x, y| image::Luma([((x * 7 + y * 13) % 251) as u8]));
    let mut bytes = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(g).write_to(&mut bytes, image::ImageFormat::Jpeg).unwrap();
    bytes.into_inner()
}

#[test]
fn cut_and_mismatched_frames_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b, cut, small) = (d.join("a.jpg"), d.join("b.jpg"), d.join("cut.jpg"), d.join("small.jpg"));
    std::fs::write(&a, jpeg(120, 100)).unwrap();
    std::fs::write(&b, jpeg(120, 100)).unwrap();
    let whole = jpeg(120, 100);
    std::fs::write(&cut, &whole[..whole.len() / 3]).unwrap();
    std::fs::write(&small, jpeg(60, 50)).unwrap();
    let out = d.join("f.flo");
    refused(d, &["flow", s(&a), s(&cut), "-o", s(&out)], &["cut.jpg", "cut off"]);
    refused(d, &["flow", s(&a), s(&small), "-o", s(&out)], &["120", "60"]);
    refused(d, &["flow", s(&a), s(&b), "-o", s(d)], &[s(d)]);
    refused(d, &["flow", s(&a), s(&b), "-o", s(&out), "--png", s(&d.join("absent/f.png"))], &["absent"]);
    refused(d, &["flow", s(&a), s(&b), "-o", s(&out), "--threads", "0"], &["--threads", "0 is not in 1..=256"]);
    assert!(!out.exists(), "no output from a refused run");
}

#[test]
fn cut_and_foreign_tensors_and_models_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let bundle = models.join("skd-tstsan-synthetic.merb");
    let npy = mer_shared::npy::encode(&[1, 38, 48, 48], &vec![0.5; 38 * 48 * 48]);
    let cases: [(&str, Vec<u8>); 3] = [("cut.npy", npy[..npy.len() / 2].to_vec()), ("foreign.npy", jpeg(8, 8)), ("empty.npy", Vec::new())];
    for (name, bytes) in cases {
        let path = d.join(name);
        std::fs::write(&path, bytes).unwrap();
        refused(d, &["infer", s(&bundle), s(&path)], &[name]);
    }
    let good = d.join("good.npy");
    std::fs::write(&good, &npy).unwrap();
    let model = std::fs::read(&bundle).unwrap();
    let cases: [(&str, Vec<u8>); 2] = [("cut.merb", model[..model.len() / 3].to_vec()), ("foreign.onnx", jpeg(8, 8))];
    for (name, bytes) in cases {
        let path = d.join(name);
        std::fs::write(&path, bytes).unwrap();
        refused(d, &["infer", s(&path), s(&good)], &[name]);
    }
    refused(d, &["infer", s(&bundle), s(&good), "--threads", "0"], &["--threads"]);
}

#[test]
fn a_dataset_with_a_cut_frame_is_prepared_without_it_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("casme2");
    ok(&mer(&["synth", "casme2", "--out", s(&data), "--subjects", "2", "--per-subject", "2", "--seed", "4"]));
    let sheet = std::fs::read_to_string(data.join("CASME2-coding.csv")).unwrap();
    let row: Vec<&str> = sheet.lines().nth(1).unwrap().split(',').collect();
    let apex = data.join("CASME2_RAW_selected").join(format!("sub{}", row[0])).join(row[1]).join(format!("img{}.jpg", row[3]));
    let bytes = std::fs::read(&apex).unwrap();
    std::fs::write(&apex, &bytes[..bytes.len() / 3]).unwrap();
    let out = d.join("prepared");
    let args = ["prepare", "--dataset", "casme2", "--root", s(&data), "--crop", "none", "--input", "flow-strain28", "--out", s(&out)];
    // The failed sample is listed with the run's summary on stdout, the refusal on stderr.
    let run = mer(&args);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = err(&run);
    assert!(
        stdout.contains(&format!("FAILED sub01_{}", row[1]))
            && stdout.contains(&format!("img{}.jpg", row[3]))
            && stdout.contains("cut off"),
        "{stdout}"
    );
    assert!(stderr.contains("could not be prepared"), "{stderr}");
    let mut threads = args.to_vec();
    threads.extend(["--threads", "0"]);
    refused(d, &threads, &["--threads"]);
    // The other samples (one more is left out by its label, fear) were prepared and kept;
    // --allow-failed accepts the run.
    let mut allowed = args.to_vec();
    allowed.push("--allow-failed");
    ok(&mer(&allowed));
    let index: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["samples"].as_array().unwrap().len(), 2, "{index}");
}

#[test]
fn zero_counts_are_refused_consistently() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out");
    for args in [
        vec!["synth", "casme2", "--out", s(&out), "--subjects", "0"],
        vec!["synth", "casme2", "--out", s(&out), "--per-subject", "0"],
        vec!["synth", "faces", "--photos", s(d), "--out", s(&out), "--clips", "0"],
        vec!["spot-eval", "--dataset", "interview", "--root", s(d), "--out", s(&out), "--threads", "0"],
        vec!["bench-infer", "model.onnx", "--batches", "1,0"],
        vec!["bench-flow", "--pairs", "0", "--dir", s(&out)],
    ] {
        refused(d, &args, &["0 is not in 1..="]);
        assert!(!out.exists(), "{args:?} created its output before refusing");
    }
}
