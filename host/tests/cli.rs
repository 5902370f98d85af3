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
    ok(&mer(&["flow", onset.to_str().unwrap(), apex.to_str().unwrap(), "-o", flo.to_str().unwrap(), "--threads", "2", "--png", png.to_str().unwrap()]));
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
