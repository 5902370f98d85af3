//! The `mer` binary as a user runs it.

use std::path::Path;

mod common;
use common::*;

#[test]
fn synth_then_flow_then_picture() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("casme2");
    let d = data.to_str().unwrap();
    let stdout = ok(&mer(&["synth", "casme2", "--out", d, "--subjects", "2", "--per-subject", "1", "--seed", "3"]));
    assert!(stdout.contains("wrote 2 samples"), "{stdout}");
    let sheet = std::fs::read_to_string(data.join("CASME2-coding.csv")).unwrap();
    let row: Vec<&str> = sheet.lines().nth(1).unwrap().split(',').collect();
    let frames = data.join("CASME2_RAW_selected").join(format!("sub{}", row[0])).join(row[1]);
    let (onset, apex) = (frames.join(format!("img{}.jpg", row[2])), frames.join(format!("img{}.jpg", row[3])));
    let flo = dir.path().join("f.flo");
    let png = dir.path().join("f.png");
    ok(&mer(&[
        "flow",
        onset.to_str().unwrap(),
        apex.to_str().unwrap(),
        "-o",
        flo.to_str().unwrap(),
        "--threads",
        "2",
        "--png",
        png.to_str().unwrap(),
    ]));
    let flow = mer_shared::flow::read_flo(&flo).unwrap();
    assert_eq!((flow.width(), flow.height()), (140, 170));
    let peak = flow.u().iter().zip(flow.v()).map(|(u, v)| (u * u + v * v).sqrt()).fold(0f32, f32::max);
    assert!(peak > 0.3, "a micro-expression should move something: peak {peak}");
    let again = dir.path().join("g.png");
    ok(&mer(&["flow-image", flo.to_str().unwrap(), "-o", again.to_str().unwrap(), "--max", "2"]));
    assert!(png.exists() && again.exists());
}

#[test]
fn bad_input_fails_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let out = mer(&["flow", broken.to_str().unwrap(), broken.to_str().unwrap(), "-o", dir.path().join("x.flo").to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.png"), "{err}");
    assert!(!Path::new(&dir.path().join("x.flo")).exists(), "no output on failure");
    let out = mer(&["flow-image", "/no/such.flo", "-o", "/tmp/never.png"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("/no/such.flo"));
}

#[test]
fn spot_eval_scores_interview_clips_and_names_a_broken_frame() {
    let dir = tempfile::tempdir().unwrap();
    let clips = dir.path().join("clips");
    for (name, seed) in [("one", "2"), ("two", "5")] {
        ok(&mer(&["synth", "interview", "--out", s(&clips.join(name)), "--seconds", "3", "--fps", "50", "--seed", seed]));
    }
    let truth: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(clips.join("one/truth.json")).unwrap()).unwrap();
    let config = dir.path().join("merd.toml");
    std::fs::write(&config, format!("[face]\nroi = {}\n[model]\npath = \"unused.merb\"\n", truth["face_box"])).unwrap();
    let out = dir.path().join("eval");
    let run = |threads: &str| {
        mer(&["spot-eval", "--dataset", "interview", "--root", s(&clips), "--config", s(&config), "--out", s(&out), "--threads", threads])
    };

    let e = err(&run("0"));
    assert!(e.contains("--threads"), "{e}");
    assert!(!out.exists(), "nothing written for a run refused");

    let stdout = ok(&run("2"));
    assert!(stdout.contains("2 videos evaluated, 0 failed") && stdout.contains("overall") && stdout.contains("macro"), "{stdout}");
    assert!(out.join("timelines/one.png").is_file() && out.join("timelines/two.png").is_file());
    let results = std::fs::read_to_string(out.join("results.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&results).unwrap();
    assert_eq!(json["videos"].as_array().unwrap().len(), 2);

    std::fs::write(clips.join("two/frames/000050.jpg"), b"garbage").unwrap();
    let failed = run("1");
    let e = err(&failed);
    assert!(e.contains("1 of 2 videos failed"), "{e}");
    let stdout = String::from_utf8_lossy(&failed.stdout);
    assert!(stdout.contains("FAILED two:") && stdout.contains("000050.jpg"), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(json["failed"][0]["id"], "two");
    assert_eq!(json["videos"][0]["id"], "one");
    assert!(!out.join("timelines/two.png").exists(), "the failed video's old timeline is gone");
}

/// Every file directly in `dir`, sorted: what a failed command must leave unchanged.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn outputs_that_cannot_be_written_are_refused_before_anything_is() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = (d.join("a.png"), d.join("b.png"));
    mer_shared::image::save_gray_png(&mer_shared::GrayImage::filled(24, 20, 0.25), &a).unwrap();
    mer_shared::image::save_gray_png(&mer_shared::GrayImage::filled(24, 20, 0.5), &b).unwrap();
    let folder = d.join("out");
    std::fs::create_dir(&folder).unwrap();
    let flow = |extra: &[&str]| mer(&[&["flow", s(&a), s(&b)], extra].concat());
    let before = listing(d);

    // -o a folder: a clear error, and no .partial beside it or inside it.
    let e = err(&flow(&["-o", s(&folder)]));
    assert!(e.contains(s(&folder)) && e.contains("is a folder"), "{e}");
    assert_eq!(listing(d), before);
    assert!(listing(&folder).is_empty());

    // A bad --png is found before the .flo is written, whether it is a folder or has none.
    let flo = d.join("f.flo");
    for png in [folder.clone(), d.join("no/such/f.png"), d.join("a.png/f.png")] {
        let e = err(&flow(&["-o", s(&flo), "--png", s(&png)]));
        assert!(e.contains(s(&png)), "{e}");
        assert_eq!(listing(d), before, "--png {}", png.display());
    }
    let e = err(&flow(&["-o", s(&flo), "--png", s(&d.join(".").join("f.flo"))]));
    assert!(e.contains("same file"), "{e}");

    // A good run writes both; a refused rerun keeps them as they were.
    ok(&flow(&["-o", s(&flo), "--png", s(&d.join("f.png"))]));
    let written = (std::fs::read(&flo).unwrap(), std::fs::read(d.join("f.png")).unwrap());
    let after = listing(d);
    err(&flow(&["-o", s(&flo), "--png", s(&folder)]));
    assert_eq!((std::fs::read(&flo).unwrap(), std::fs::read(d.join("f.png")).unwrap()), written);
    assert_eq!(listing(d), after);

    // mer bundle -o a folder: refused, no 6.5 MB .partial left.
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let bytes = std::fs::read(models.join("skd-tstsan-synthetic.merb")).unwrap();
    let bundle = mer_shared::bundle::Bundle::from_bytes(&bytes).unwrap();
    let onnx = d.join("model.onnx");
    std::fs::write(&onnx, bundle.onnx()).unwrap();
    let after = listing(d);
    let e = err(&mer(&["bundle", s(&onnx), "--key", s(&models.join("demo-key")), "-o", s(&folder)]));
    assert!(e.contains(s(&folder)) && e.contains("is a folder"), "{e}");
    assert_eq!(listing(d), after);
    assert!(listing(&folder).is_empty());

    // mer keys generate: KEY.pub unusable, so KEY is not written either.
    std::fs::create_dir(d.join("site.pub")).unwrap();
    let e = err(&mer(&["keys", "generate", "-o", s(&d.join("site"))]));
    assert!(e.contains("site.pub") && e.contains("is a folder"), "{e}");
    assert!(!d.join("site").exists());
}

#[test]
fn prepare_says_what_it_finds_damaged_and_prepares_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let (data, cache) = (dir.path().join("data"), dir.path().join("cache"));
    ok(&mer(&["synth", "casme2", "--out", s(&data), "--subjects", "2", "--per-subject", "1", "--seed", "5"]));
    let prepare = || mer(&["prepare", "--dataset", "casme2", "--root", s(&data), "--crop", "none", "--out", s(&cache), "--threads", "2"]);
    ok(&prepare());
    let npy = listing(&cache.join("samples")).into_iter().find(|n| n.ends_with(".npy")).unwrap();
    let npy = cache.join("samples").join(npy);
    let intact = std::fs::read(&npy).unwrap();
    std::fs::write(&npy, &intact[..1024]).unwrap();
    std::fs::write(cache.join("index.json"), "{ garbage").unwrap();

    let again = prepare();
    let stdout = ok(&again);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains(&format!("replacing unreadable {}", s(&cache.join("index.json")))), "{stderr}");
    let line = stderr.lines().find(|l| l.contains("damaged sample")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains(npy.file_name().unwrap().to_str().unwrap()) && line.contains("preparing it again"), "{line}");
    assert!(stdout.contains("1 prepared now, 1 reused, 1 damaged in the cache"), "{stdout}");
    assert_eq!(std::fs::read(&npy).unwrap(), intact);
    let index: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(cache.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["summary"]["damaged"], 1);
    assert_eq!(index["samples"].as_array().unwrap().len(), 2);
}
