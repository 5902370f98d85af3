//! `mer train --dataset composite` for the architectures that take three-plane flow images,
//! on a small composite layout written the way HTNet/STSTNet publish theirs.

use std::path::{Path, PathBuf};

mod common;
use common::*;

/// 3 subjects × 4 samples, one per source dataset; each class has its own pattern so a model
/// can learn something.
fn composite(dir: &Path) -> PathBuf {
    composite_of(dir, &[("casme2", "sub01"), ("samm", "006"), ("smic", "s03")])
}

/// 4 samples for each (source, subject).
fn composite_of(dir: &Path, subjects: &[(&str, &str)]) -> PathBuf {
    let root = dir.join("composite");
    std::fs::create_dir_all(root.join("STSNet_whole_norm_u_v_os")).unwrap();
    let mut csv = String::from("dataset,sub,filename_o,label,apex,imagename,sub_filename\n");
    for (s, (source, sub)) in subjects.iter().enumerate() {
        for i in 0..4 {
            let label = (s + i) % 3;
            let clip = format!("EP0{i}_0{s}");
            csv.push_str(&format!("{source},{sub},{clip},{label},,{sub}_{clip}.jpg,\n"));
            let image = image::RgbImage::from_fn(28, 28, |x, y| {
                let wave = ((x as usize * (label + 1) + y as usize + i) % 28) as u8 * 9;
                image::Rgb([wave, 255 - wave, (label * 100) as u8])
            });
            image.save(root.join("STSNet_whole_norm_u_v_os").join(format!("{sub}_{clip} .png"))).unwrap();
        }
    }
    std::fs::write(root.join("combined_3_class2_for_optical_flow.csv"), csv).unwrap();
    root
}

fn train(data: &Path, out: &Path, arch: &str, extra: &[&str]) -> std::process::Output {
    let mut args =
        vec!["train", "--arch", arch, "--dataset", "composite", "--data", s(data), "--out", s(out), "--device", "cpu", "--batch", "4"];
    args.extend_from_slice(extra);
    mer(&args)
}

fn results(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap()).unwrap()
}

#[test]
fn every_flow_architecture_trains_on_the_composite_layout() {
    let dir = tempfile::tempdir().unwrap();
    let data = composite(dir.path());
    for (arch, extra) in
        [("am3f-flownet", vec!["--iters", "6", "--augment", "flip"]), ("skd-tstsan-flow", vec!["--iters", "6", "--protocol", "paper"])]
    {
        let run = dir.path().join(arch);
        let out = ok(&train(&data, &run, arch, &extra));
        assert!(out.contains(&format!("{arch} ")) && out.contains("UF1"), "{out}");
        let r = results(&run);
        assert_eq!(r["folds"].as_array().map(Vec::len), Some(3), "{r}");
        // Scores per source dataset, as HTNet reports them; each source here is one subject.
        let sources: Vec<&str> = r["by_source"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(sources, ["casme2", "samm", "smic"]);
        assert_eq!(r["by_source"]["samm"]["samples"], 4);
        assert!(out.contains("  smic: 4 samples"), "{out}");
        let run_info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
        assert_eq!(run_info["config"]["arch"], arch);
        assert_eq!(run_info["data"]["taxonomy"], "composite-3");
        assert_eq!(run_info["config"]["augment"], if arch == "am3f-flownet" { "flip" } else { "none" });
    }
    // HTNet (139.6 M parameters) for one step of one fold: the mosaic input trains end to end.
    let run = dir.path().join("htnet");
    ok(&train(&data, &run, "htnet", &["--iters", "1", "--fold", "1/3"]));
    let run_info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert!(run_info["data"]["digest"].as_str().unwrap().ends_with("+htnet-mosaic"));
}

/// AM3F-FlowNet trained on the composite layout, exported (parity checked on its samples),
/// signed, and run by the device pipeline on a synthetic interview: the device computes the
/// flow image from its own frames with mer-shared and logs events classified by that model.
#[test]
fn a_composite_model_exports_and_runs_in_the_device_pipeline() {
    use mer_device::event_log::{EventLog, FsyncPolicy, LogConfig};
    use mer_device::pipeline::{FaceSetting, Pipeline, PipelineConfig, Roi};
    use mer_device::source::{FrameSource, SyntheticSource};
    use mer_device::spotting::SpotterConfig;
    use mer_shared::classifier::{Classifier, Trust};
    use mer_shared::input::InputLayout;
    use mer_shared::synth::interview::InterviewOptions;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = composite(d);
    let run = d.join("run");
    ok(&train(&data, &run, "am3f-flownet", &["--iters", "4", "--all-samples"]));
    let onnx = d.join("am3f.onnx");
    let report = ok(&mer(&["export", s(&run.join("model.safetensors")), "-o", s(&onnx), "--model-version", "am3f-test"]));
    assert_eq!(report.matches("arg-max identical").count(), 3, "{report}");
    let key = d.join("site");
    ok(&mer(&["keys", "generate", "-o", s(&key)]));
    let bundle = d.join("am3f.merb");
    ok(&mer(&["bundle", s(&onnx), "--key", s(&key), "-o", s(&bundle)]));
    let public = mer_shared::bundle::read_public_key(&d.join("site.pub")).unwrap();
    let classifier = Classifier::load(&bundle, Trust::Keys(&[public])).unwrap();
    let manifest = classifier.manifest().clone();
    assert_eq!((manifest.architecture.as_str(), manifest.input.layout), ("am3f-flownet", InputLayout::FlowStrain28));
    assert_eq!(manifest.taxonomy, "composite-3");

    let mut source = SyntheticSource::new(&InterviewOptions { seconds: 1.0, fps: 50.0, width: 320, height: 240, seed: 4 }).unwrap();
    let (cx, cy, rx, ry) = source.scene().face;
    let roi = Roi { x: (cx - rx) as usize, y: (cy - ry) as usize, width: (2.0 * rx) as usize, height: (2.0 * ry) as usize };
    let config = PipelineConfig {
        fps: 50.0,
        face: FaceSetting::Fixed(roi),
        buffer_s: 2.0,
        spotting: SpotterConfig::for_fps(50.0),
        flow_threads: 1,
        max_queued: 4,
    };
    let log = EventLog::open(LogConfig { dir: d.join("events"), max_segment_bytes: 1 << 20, fsync: FsyncPolicy::Never }).unwrap().0;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut pipeline = Pipeline::new(config, classifier, log, tx).unwrap();
    for _ in 0..40 {
        pipeline.push(&source.next_frame().unwrap().unwrap()).unwrap();
    }
    assert!(pipeline.trigger(0.5));
    let (_, report) = pipeline.finish();
    assert_eq!(report.failures, 0, "{:?}", report.last_failure);
    let event = rx.recv().unwrap();
    assert_eq!(event.model_version, "am3f-test");
    assert_eq!(event.classes, ["negative", "positive", "surprise"]);
    assert!((event.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-5);
}

#[test]
fn mismatched_architectures_and_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = composite(dir.path());
    let run = dir.path().join("run");
    let e = err(&train(&data, &run, "skd-tstsan", &["--iters", "1"]));
    assert!(
        e.contains("skd-tstsan reads skd-tstsan inputs (38×48×48)") && e.contains("flow-strain28 inputs") && e.contains("no face frames"),
        "{e}"
    );
    assert!(err(&train(&data, &run, "alexnet", &[])).contains("possible values: skd-tstsan, skd-tstsan-flow, htnet, am3f-flownet"));
    assert!(err(&train(&data, &run, "skd-tstsan-flow", &["--ablate", "eca"])).contains("no ECA"));
    assert!(err(&train(&data, &run, "am3f-flownet", &["--ablate", "mag"])).contains("has none of them"));
    assert!(err(&train(&data, &run, "htnet", &["--magnet", "magnet.pth"])).contains("--init and --magnet"));
    let e = err(&train(&data, &run, "htnet", &["--augment", "flip"]));
    assert!(e.contains("--augment flip") && e.contains("htnet-mosaic28"), "{e}");
    let e = err(&mer(&["train", "--arch", "htnet", "--dataset", "composite", "--data", s(dir.path()), "--out", s(&run)]));
    assert!(e.contains("combined_3_class2_for_optical_flow.csv"), "{e}");
}

/// Synthetic CASME II frames in `raw` prepared as flow images (casme2-5 classes) into `out`.
fn prepare_flows(raw: &Path, out: &Path) {
    ok(&mer(&[
        "prepare",
        "--dataset",
        "casme2",
        "--root",
        s(raw),
        "--crop",
        "none",
        "--input",
        "flow-strain28",
        "--classes",
        "casme2-5",
        "--out",
        s(out),
    ]));
}

/// The cross-dataset protocol as a user runs it: LOSO on two sources (calibration cross-fitted
/// over its folds), one model on all their samples exported with that calibration, and
/// `mer evaluate` on the third source through tract; bad requests are refused by name.
#[test]
fn cross_dataset_evaluation_with_calibration() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = composite_of(d, &[("casme2", "sub01"), ("casme2", "sub02"), ("samm", "006"), ("samm", "007"), ("smic", "s01")]);
    let recipe = ["--iters", "4", "--sources", "casme2,samm"];
    let loso = d.join("loso");
    let out = ok(&train(&data, &loso, "am3f-flownet", &recipe));
    assert!(out.contains("calibration: ECE") && out.contains("uncertain"), "{out}");
    let r = results(&loso);
    assert_eq!(r["samples"], 16, "only the chosen sources: {r}");
    let c = &r["calibration"];
    assert_eq!(c["fold_temperatures"].as_object().unwrap().len(), 4, "{c}");
    assert!(c["temperature"].as_f64().unwrap() > 0.0 && c["ece_before"].as_f64().unwrap() >= 0.0, "{c}");
    assert!(loso.join("reliability.png").is_file());

    let all = d.join("all");
    ok(&train(&data, &all, "am3f-flownet", &[&recipe[..], &["--all-samples"]].concat()));
    let onnx = d.join("cross.onnx");
    let checkpoint = all.join("model.safetensors");
    let export = |extra: &[&str]| {
        let mut args = vec!["export", s(&checkpoint), "-o", s(&onnx), "--model-version", "cross-test"];
        args.extend_from_slice(extra);
        mer(&args)
    };
    let e = err(&export(&["--uncertain-below", "0.9"]));
    assert!(e.contains("--evaluation"), "an --all-samples run has no evaluation of its own: {e}");
    let e = err(&export(&["--evaluation", s(&loso), "--uncertain-below", "1.5"]));
    assert!(e.contains("0 to 1"), "{e}");
    let printed = ok(&export(&["--evaluation", s(&loso), "--uncertain-below", "0.9"]));
    assert!(printed.contains("calibration: temperature") && printed.contains("below p 0.90"), "{printed}");
    let manifest =
        mer_shared::classifier::Classifier::load(&onnx, mer_shared::classifier::Trust::IntegrityOnly).unwrap().manifest().clone();
    let calibration = manifest.calibration.unwrap();
    assert!((f64::from(calibration.temperature) - c["temperature"].as_f64().unwrap()).abs() < 1e-6);
    assert_eq!(calibration.uncertain_below, 0.9);
    assert!(calibration.fitted_on.contains("all 4 folds of loso"), "{}", calibration.fitted_on);

    let evaluation = d.join("on-smic");
    let evaluate = |extra: &[&str]| {
        let mut args = vec!["evaluate", s(&onnx), "--dataset", "composite", "--data", s(&data)];
        args.extend_from_slice(extra);
        mer(&args)
    };
    let printed = ok(&evaluate(&["--sources", "smic", "--out", s(&evaluation)]));
    assert!(printed.contains("cross-test on 4 samples of smic: UF1") && printed.contains("below p 0.90"), "{printed}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(evaluation.join("evaluation.json")).unwrap()).unwrap();
    assert_eq!(v["samples"], 4);
    assert_eq!(v["sources"], serde_json::json!(["smic"]));
    let predictions = v["predictions"].as_array().unwrap();
    assert!(predictions.iter().all(|p| p["id"].as_str().unwrap().starts_with("smic/")));
    // The threshold counts what the device would call uncertain: calibrated best below 0.9.
    let below = predictions
        .iter()
        .filter(|p| p["probabilities"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).fold(0.0, f64::max) < 0.9)
        .count();
    assert_eq!(v["abstention"]["uncertain"], below);
    let correct = predictions.iter().filter(|p| p["truth"] == p["predicted"]).count() as f64;
    assert!((v["accuracy"].as_f64().unwrap() - correct / 4.0).abs() < 1e-12);
    assert!(evaluation.join("confusion.png").is_file() && evaluation.join("reliability.png").is_file());
    // All three sources, scored apart.
    assert!(!printed.contains("own training samples"), "smic was not trained on: {printed}");
    let printed = ok(&evaluate(&[]));
    assert!(printed.contains("20 samples of casme2, samm, smic") && printed.contains("  samm: 8 samples"), "{printed}");
    assert!(printed.contains("own training samples"), "casme2 and samm were trained on: {printed}");

    let e = err(&evaluate(&["--sources", "casme3"]));
    assert!(e.contains("casme3") && e.contains("casme2, samm, smic"), "{e}");
    // Data of another layout: a prepared SKD-TSTSAN cache.
    let raw = d.join("raw");
    ok(&mer(&["synth", "casme2", "--out", s(&raw), "--subjects", "1", "--per-subject", "2", "--seed", "2"]));
    let cache = d.join("cache");
    ok(&mer(&["prepare", "--dataset", "casme2", "--root", s(&raw), "--crop", "none", "--out", s(&cache)]));
    let e = err(&mer(&["evaluate", s(&onnx), "--data", s(&cache)]));
    assert!(e.contains("flow-strain28") && e.contains("skd-tstsan inputs"), "{e}");
    // The model's own layout, but another class set.
    let flows = d.join("flows");
    prepare_flows(&raw, &flows);
    let e = err(&mer(&["evaluate", s(&onnx), "--data", s(&flows)]));
    assert!(e.contains("negative, positive, surprise") && e.contains("casme2-5") && e.contains("composite-3"), "{e}");
    // A prepared cache is one dataset: there are no sources to pick.
    let e = err(&mer(&["evaluate", s(&onnx), "--data", s(&flows), "--sources", "smic"]));
    assert!(e.contains("--sources picks source datasets of composite data"), "{e}");
    // Raw frames: a model trained on one prepared cache, scored on another's samples.
    let frames_run = d.join("frames-run");
    ok(&mer(&[
        "train",
        "--arch",
        "am3f-flownet",
        "--data",
        s(&flows),
        "--out",
        s(&frames_run),
        "--device",
        "cpu",
        "--iters",
        "2",
        "--batch",
        "4",
        "--all-samples",
    ]));
    let frames_onnx = d.join("frames.onnx");
    let printed = ok(&mer(&["export", s(&frames_run.join("model.safetensors")), "-o", s(&frames_onnx)]));
    assert!(printed.contains("no calibration"), "{printed}");
    let raw2 = d.join("raw2");
    ok(&mer(&["synth", "casme2", "--out", s(&raw2), "--subjects", "1", "--per-subject", "3", "--seed", "9"]));
    let other = d.join("other");
    prepare_flows(&raw2, &other);
    let printed = ok(&mer(&["evaluate", s(&frames_onnx), "--data", s(&other)]));
    assert!(printed.contains("samples of casme2: UF1") && printed.contains("no temperature"), "{printed}");
    assert!(!printed.contains("note:"), "same preprocessing, other samples: {printed}");
}

/// One recipe trained with two seeds: `mer ensemble` scores the pair in LOSO, and `mer export
/// --ensemble` ships the pair's all-samples models as one graph whose softmax is the mean of
/// the members' — what the LOSO scored.
#[test]
fn an_ensemble_of_seeds_is_scored_and_exported_as_one_model() {
    use mer_shared::inference::OnnxModel;
    use mer_shared::manifest::Probe;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = composite(d);
    let recipe = ["--iters", "4", "--augment", "flip"];
    let (loso1, loso2) = (d.join("loso-seed1"), d.join("loso-seed2"));
    ok(&train(&data, &loso1, "skd-tstsan-flow", &[&recipe[..], &["--seed", "1"]].concat()));
    ok(&train(&data, &loso2, "skd-tstsan-flow", &[&recipe[..], &["--seed", "2"]].concat()));
    let scored = d.join("ensemble");
    let printed = ok(&mer(&["ensemble", s(&loso1), s(&loso2), "-o", s(&scored)]));
    assert!(printed.contains("ensemble of 2 skd-tstsan-flow models honest LOSO over 12 samples"), "{printed}");
    assert!(printed.contains("member: skd-tstsan-flow (seed 2)") && printed.contains("calibration: ECE"), "{printed}");

    let (all1, all2) = (d.join("all-seed1"), d.join("all-seed2"));
    ok(&train(&data, &all1, "skd-tstsan-flow", &[&recipe[..], &["--seed", "1", "--all-samples"]].concat()));
    ok(&train(&data, &all2, "skd-tstsan-flow", &[&recipe[..], &["--seed", "2", "--all-samples"]].concat()));
    let (first, second) = (all1.join("model.safetensors"), all2.join("model.safetensors"));
    let onnx = d.join("pair.onnx");
    let printed =
        ok(&mer(&["export", s(&first), "--ensemble", s(&second), "--evaluation", s(&scored), "-o", s(&onnx), "--model-version", "pair"]));
    assert_eq!(printed.matches("arg-max identical").count(), 3, "{printed}");
    let bytes = std::fs::read(&onnx).unwrap();
    let pair = OnnxModel::from_bytes(&bytes).unwrap();
    let manifest = pair.manifest().unwrap().unwrap();
    assert_eq!(manifest.architecture, "skd-tstsan-flow");
    assert!(manifest.architecture_options.starts_with("ensemble of 2 skd-tstsan-flow models"), "{}", manifest.architecture_options);
    let seeds: Vec<u64> = manifest.training.ensemble.iter().map(|m| m.config["seed"].as_u64().unwrap()).collect();
    assert_eq!(seeds, [1, 2]);
    assert!(manifest.calibration.as_ref().unwrap().fitted_on.contains("ensemble"), "{:?}", manifest.calibration);
    assert_eq!(manifest.training.evaluation.as_ref().unwrap().protocol, "honest");

    // Each member alone, exported and run by tract: the pair's softmax is their mean.
    let single = |checkpoint: &Path, name: &str| {
        let path = d.join(name);
        ok(&mer(&["export", s(checkpoint), "-o", s(&path)]));
        OnnxModel::from_bytes(&std::fs::read(&path).unwrap()).unwrap()
    };
    let (one, two) = (single(&first, "one.onnx"), single(&second, "two.onnx"));
    let input = Probe::input(99, 3, [3, 28, 28]);
    let softmax = |l: &[f32]| {
        let sum: f32 = l.iter().map(|v| v.exp()).sum();
        l.iter().map(|v| v.exp() / sum).collect::<Vec<f32>>()
    };
    let (p1, p2, pe) = (one.run(&input, 3).unwrap(), two.run(&input, 3).unwrap(), pair.run(&input, 3).unwrap());
    for ((a, b), e) in p1.iter().zip(&p2).zip(&pe) {
        let (a, b, e) = (softmax(a), softmax(b), softmax(e));
        for k in 0..3 {
            assert!((e[k] - (a[k] + b[k]) / 2.0).abs() < 1e-5, "{a:?} {b:?} {e:?}");
        }
    }
    // It evaluates like any model of its architecture.
    let printed = ok(&mer(&["evaluate", s(&onnx), "--dataset", "composite", "--data", s(&data)]));
    assert!(printed.contains("pair on 12 samples"), "{printed}");

    // An evaluation of another number of models: refused.
    let e = err(&mer(&["export", s(&first), "--ensemble", s(&second), "--evaluation", s(&loso1), "-o", s(&onnx)]));
    assert!(e.contains("a single model") && e.contains("an ensemble of 2"), "{e}");
    let e = err(&mer(&["export", s(&first), "--evaluation", s(&scored), "-o", s(&onnx)]));
    assert!(e.contains("an ensemble of 2") && e.contains("a single model"), "{e}");

    // Another architecture of the same input joins; tch and tract agree on the mixed graph, and
    // the latency bench builds each member as its own architecture.
    let am3f = d.join("am3f");
    ok(&train(&data, &am3f, "am3f-flownet", &["--iters", "2", "--all-samples"]));
    let mixed = d.join("mixed.onnx");
    let printed = ok(&mer(&["export", s(&first), "--ensemble", s(&am3f.join("model.safetensors")), "-o", s(&mixed)]));
    assert_eq!(printed.matches("arg-max identical").count(), 3, "{printed}");
    let manifest = OnnxModel::from_bytes(&std::fs::read(&mixed).unwrap()).unwrap().manifest().unwrap().unwrap();
    assert_eq!(manifest.architecture, "skd-tstsan-flow");
    assert!(
        manifest.architecture_options.starts_with("ensemble of 2 models: 1 skd-tstsan-flow + 1 am3f-flownet"),
        "{}",
        manifest.architecture_options
    );
    let archs: Vec<&str> = manifest.training.ensemble.iter().map(|m| m.config["arch"].as_str().unwrap()).collect();
    assert_eq!(archs, ["skd-tstsan-flow", "am3f-flownet"]);
    let bench = ok(&mer(&["bench-infer", s(&mixed), "--batches", "1", "--iters", "2", "--warmup", "1"]));
    assert!(bench.contains("tch"), "{bench}");

    // A member that reads another input (here a run record saying HTNet, whose input is the
    // landmark mosaic): refused, naming both architectures and inputs.
    let htnet = d.join("htnet");
    std::fs::create_dir_all(&htnet).unwrap();
    let mut info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(all2.join("run.json")).unwrap()).unwrap();
    info["config"]["arch"] = "htnet".into();
    std::fs::write(htnet.join("run.json"), info.to_string()).unwrap();
    std::fs::copy(&second, htnet.join("model.safetensors")).unwrap();
    let e = err(&mer(&["export", s(&first), "--ensemble", s(&htnet.join("model.safetensors")), "-o", s(&onnx)]));
    assert!(e.contains("htnet") && e.contains("htnet-mosaic28") && e.contains("skd-tstsan-flow") && e.contains("flow-strain28"), "{e}");
}
