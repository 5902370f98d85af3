//! `mer train --dataset composite` for the architectures that take three-plane flow images,
//! on a small composite layout written the way HTNet/STSTNet publish theirs.

use std::path::{Path, PathBuf};

mod common;
use common::*;

/// 3 subjects × 4 samples; each class has its own pattern so a model can learn something.
fn composite(dir: &Path) -> PathBuf {
    let root = dir.join("composite");
    std::fs::create_dir_all(root.join("STSNet_whole_norm_u_v_os")).unwrap();
    let mut csv = String::from("dataset,sub,filename_o,label,apex,imagename,sub_filename\n");
    for (s, sub) in ["sub01", "006", "s03"].iter().enumerate() {
        for i in 0..4 {
            let label = (s + i) % 3;
            let clip = format!("EP0{i}_0{s}");
            csv.push_str(&format!("casme2,{sub},{clip},{label},,{sub}_{clip}.jpg,\n"));
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
    let mut args = vec!["train", "--arch", arch, "--dataset", "composite", "--data", s(data), "--out", s(out), "--device", "cpu", "--batch", "4"];
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
    for (arch, extra) in [("am3f-flownet", vec!["--iters", "6"]), ("skd-tstsan-flow", vec!["--iters", "6", "--protocol", "paper"])] {
        let run = dir.path().join(arch);
        let out = ok(&train(&data, &run, arch, &extra));
        assert!(out.contains(&format!("{arch} ")) && out.contains("UF1"), "{out}");
        let r = results(&run);
        assert_eq!(r["folds"].as_array().map(Vec::len), Some(3), "{r}");
        let run_info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
        assert_eq!(run_info["config"]["arch"], arch);
        assert_eq!(run_info["data"]["taxonomy"], "composite-3");
    }
    // HTNet (139.6 M parameters) for one step of one fold: the mosaic input trains end to end.
    let run = dir.path().join("htnet");
    ok(&train(&data, &run, "htnet", &["--iters", "1", "--fold", "1/3"]));
    let run_info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert!(run_info["data"]["digest"].as_str().unwrap().ends_with("+htnet-mosaic"));
}

#[test]
fn mismatched_architectures_and_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = composite(dir.path());
    let run = dir.path().join("run");
    let e = err(&train(&data, &run, "skd-tstsan", &["--iters", "1"]));
    assert!(e.contains("skd-tstsan takes samples of shape [38, 48, 48]") && e.contains("[3, 28, 28]"), "{e}");
    assert!(err(&train(&data, &run, "alexnet", &[])).contains("use one of skd-tstsan, skd-tstsan-flow, htnet, am3f-flownet"));
    assert!(err(&train(&data, &run, "skd-tstsan-flow", &["--ablate", "eca"])).contains("no ECA"));
    assert!(err(&train(&data, &run, "am3f-flownet", &["--ablate", "mag"])).contains("has none of them"));
    assert!(err(&train(&data, &run, "htnet", &["--magnet", "magnet.pth"])).contains("--init and --magnet"));
    let e = err(&mer(&["train", "--arch", "htnet", "--dataset", "composite", "--data", s(dir.path()), "--out", s(&run)]));
    assert!(e.contains("combined_3_class2_for_optical_flow.csv"), "{e}");
}
