//! Integration tests live in `tests/`; this is what several of them share.

use std::path::PathBuf;
use std::process::Command;

/// The reference venv's python when it can import `modules`. Otherwise the test says what is
/// missing and is skipped, unless MER_REQUIRE_REFERENCE=1 (set by scripts/test.sh), which turns
/// a missing reference into a failure.
pub fn reference_python_with(modules: &[&str], reference: &str) -> Option<PathBuf> {
    let python = mer_host::flow_bench::reference_python();
    let import = format!("import {}", modules.join(", "));
    let problem = if !python.exists() {
        format!("{} does not exist (run scripts/bootstrap.sh)", python.display())
    } else {
        match Command::new(&python).args(["-c", &import]).output() {
            Ok(out) if out.status.success() => return Some(python),
            Ok(out) => format!(
                "{} cannot {import}: {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr).trim().lines().last().unwrap_or("")
            ),
            Err(e) => format!("cannot run {}: {e}", python.display()),
        }
    };
    let msg = format!("{reference} reference missing: {problem}");
    if std::env::var("MER_REQUIRE_REFERENCE").as_deref() == Ok("1") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}
