//! Build script of mer-shared: copies the face-detection model that the rustface package ships
//! into OUT_DIR, so the binaries embed it with `include_bytes!` and the repository never carries
//! the 1.2 MB file. The package directory comes from `cargo metadata`, which also works with
//! vendored sources and a custom CARGO_HOME, unlike guessing registry paths. It is passed on as
//! MER_RUSTFACE_DIR for the tests that use the package's group photo.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// File name of the SeetaFace frontal model inside the rustface package's `model/` directory.
const FACE_MODEL: &str = "seeta_fd_frontal_v1.0.bin";

fn main() {
    copy_face_model();
    println!("cargo:rerun-if-changed=build.rs");
}

fn copy_face_model() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"));
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = env::var("TARGET").expect("cargo sets TARGET for build scripts");
    // Offline and limited to the target platform: only packages this build already
    // downloaded are needed (without the filter cargo wants e.g. Windows-only crates too).
    let output = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--filter-platform", &target, "--manifest-path"])
        .arg(&manifest)
        .output()
        .unwrap_or_else(|e| panic!("could not run `{} metadata` to locate the rustface package: {e}", cargo.to_string_lossy()));
    if !output.status.success() {
        panic!(
            "`cargo metadata --offline` failed ({}), so the face model in the rustface package cannot be located; \
             run `cargo fetch` once with network access.\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8(output.stdout).expect("cargo metadata prints UTF-8");
    let meta: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("cannot read the output of cargo metadata: {e}"));

    if let Some(root) = meta.get("workspace_root").and_then(serde_json::Value::as_str) {
        // A different rustface version (or source) changes the lock file.
        println!("cargo:rerun-if-changed={}", Path::new(root).join("Cargo.lock").display());
    }
    let packages = meta.get("packages").and_then(serde_json::Value::as_array).expect("cargo metadata lists packages");
    let candidates: Vec<PathBuf> = packages
        .iter()
        .filter(|p| p.get("name").and_then(serde_json::Value::as_str) == Some("rustface"))
        .filter_map(|p| p.get("manifest_path").and_then(serde_json::Value::as_str))
        .filter_map(|m| Path::new(m).parent().map(|dir| dir.join("model").join(FACE_MODEL)))
        .collect();
    let Some(model) = candidates.iter().find(|m| m.is_file()) else {
        panic!(
            "the rustface package should ship model/{FACE_MODEL}, but it was not found (looked at {candidates:?}); \
             is rustface still a dependency of the workspace?"
        );
    };
    println!("cargo:rerun-if-changed={}", model.display());
    // The package also ships a group photo that the face-detection tests use.
    let package_dir = model.parent().and_then(Path::parent).expect("model/<file> has a package directory");
    println!("cargo:rustc-env=MER_RUSTFACE_DIR={}", package_dir.display());
    let dest = out_dir.join(FACE_MODEL);
    std::fs::copy(model, &dest).unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", model.display(), dest.display()));
}
