//! Running the `mer` binary from the CLI tests.
#![allow(dead_code)] // each test file uses its own subset

use std::path::Path;
use std::process::{Command, Output};

pub fn mer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mer")).args(args).output().expect("mer runs")
}

/// stdout of a run that must succeed.
pub fn ok(out: &Output) -> String {
    assert!(out.status.success(), "mer failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr of a run that must fail with a message, not a panic.
pub fn err(out: &Output) -> String {
    assert!(!out.status.success(), "mer should have failed: {}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "mer panicked: {stderr}");
    stderr
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
