//! Numeric reference tests against OpenCV (Python, from the repo-local venv).
//!
//! When the venv is missing these tests say so and pass, unless MER_REQUIRE_REFERENCE=1
//! (set by scripts/test.sh), in which case a missing reference is a failure.

use std::path::Path;
use std::process::Command;

use mer_host::flow_bench::{make_pairs, mean_epe, opencv_flows, own_flows, reference_python};
use mer_shared::GrayImage;
use mer_shared::flow::Tvl1Params;
use mer_shared::image::{Interpolation, resize};
use mer_tests::reference_python_with;

fn write_f32(path: &Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[test]
fn resize_agrees_with_cv2_within_one_level() {
    if reference_python_with(&["cv2"], "OpenCV").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // a [0, 1] image with fine detail, edges and smooth parts
    let img = GrayImage::from_fn(128, 96, |x, y| {
        let v = 0.5 + 0.3 * ((x as f32) * 0.37).sin() * ((y as f32) * 0.21).cos() + if (x / 9 + y / 7) % 2 == 0 { 0.15 } else { -0.15 };
        v.clamp(0.0, 1.0)
    });
    write_f32(&dir.path().join("img.bin"), img.data());
    let sizes = [(48, 48), (32, 32), (100, 77), (128, 96), (200, 150), (64, 48), (13, 7), (300, 40)];
    let mut cases = Vec::new();
    for (w, h) in sizes {
        for interp in ["linear", "area"] {
            cases.push(serde_json::json!({"width": w, "height": h, "interp": interp}));
        }
    }
    let spec = serde_json::json!({"width": 128, "height": 96, "cases": cases});
    std::fs::write(dir.path().join("cases.json"), spec.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/reference/resize_opencv.py");
    let status = Command::new(reference_python()).arg(script).arg(dir.path()).status().unwrap();
    assert!(status.success());
    for (k, case) in cases.iter().enumerate() {
        let (w, h) = (case["width"].as_u64().unwrap() as usize, case["height"].as_u64().unwrap() as usize);
        let interp = if case["interp"] == "area" { Interpolation::Area } else { Interpolation::Bilinear };
        let ours = resize(&img, w, h, interp);
        let cv = read_f32(&dir.path().join(format!("out_{k}.bin")));
        let worst = ours.data().iter().zip(&cv).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= 1.0 / 255.0, "{w}x{h} {interp:?}: max difference {worst}");
        println!("{w}x{h} {interp:?}: max |ours - cv2| = {worst:.2e}");
    }
}

#[test]
fn tvl1_is_at_least_as_accurate_as_opencv_on_face_pairs() {
    if reference_python_with(&["cv2"], "OpenCV").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let n = 8;
    let pairs = make_pairs(dir.path(), n, 11).unwrap();
    let (cv, _, version) = opencv_flows(dir.path(), n).unwrap();
    let (own, _) = own_flows(&pairs, &Tvl1Params::default()).unwrap();
    let (own_epe, cv_epe) = (mean_epe(&own, &pairs).unwrap(), mean_epe(&cv, &pairs).unwrap());
    println!("mean EPE over {n} pairs: ours {own_epe:.4} px, OpenCV {version} {cv_epe:.4} px");
    assert!(own_epe <= 1.05 * cv_epe, "ours {own_epe} vs OpenCV {cv_epe}");
    // and the two solvers agree with each other far better than either misses the truth
    let mut gap = 0.0;
    for (a, b) in own.iter().zip(&cv) {
        gap += a.mean_endpoint_error(b, 0).unwrap() as f64;
    }
    assert!(gap / (n as f64) < own_epe.max(0.05), "solvers differ by {} px on average", gap / n as f64);
}
