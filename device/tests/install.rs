//! deploy/install.sh, staged into a temporary root (no users, no systemctl): the files land
//! where the unit and the Jetson configuration expect them, and a second run keeps an edited
//! configuration.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mer_device::config::{DaemonConfig, SourceConfig};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn install(root: &Path, extra: &[&str]) -> Output {
    let repo = repo();
    Command::new("bash")
        .arg(repo.join("deploy/install.sh"))
        .arg("--root")
        .arg(root)
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_merd"))
        .arg("--model")
        .arg(repo.join("models/skd-tstsan-synthetic.merb"))
        .arg("--key")
        .arg(repo.join("models/demo-key.pub"))
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn staged_install_puts_every_file_in_place() {
    let root = tempfile::tempdir().unwrap();
    let out = install(root.path(), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let at = |p: &str| root.path().join(p);
    let mode = |p: &str| std::fs::metadata(at(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("usr/local/bin/merd"), 0o755);
    assert_eq!(mode("var/lib/merd"), 0o750);
    for file in
        ["var/lib/merd/model.merb", "etc/merd/keys/site.pub", "etc/systemd/system/merd.service", "etc/udev/rules.d/99-merd-gpio.rules"]
    {
        assert!(at(file).is_file(), "{file} missing");
    }
    let unit = std::fs::read_to_string(at("etc/systemd/system/merd.service")).unwrap();
    for line in [
        "User=merd",
        "SupplementaryGroups=video gpio",
        "Restart=on-failure",
        "Type=notify",
        "WatchdogSec=60",
        "ExecStart=/usr/local/bin/merd run --config /etc/merd/merd.toml",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit lacks {line}");
    }

    // The installed configuration is the Jetson one and points at the installed files.
    let config = DaemonConfig::load(&at("etc/merd/merd.toml")).unwrap();
    assert!(matches!(config.source, SourceConfig::Camera(_)), "{:?}", config.source);
    assert_eq!(config.model.path, Path::new("/var/lib/merd/model.merb"));
    assert_eq!(config.model.public_keys, vec![PathBuf::from("/etc/merd/keys/site.pub")]);
    assert_eq!(config.control.socket.as_deref(), Some(Path::new("/run/merd/merd.sock")));
    assert_eq!(config.log.dir, Path::new("/var/lib/merd/events"));
    let push = config.push.expect("the installed configuration takes model pushes");
    assert_eq!(push.store, Path::new("/var/lib/merd/models"));
    assert!(
        unit.lines().any(|l| l.starts_with("RestrictAddressFamilies=") && l.contains("AF_INET")),
        "the unit lets merd listen for pushes"
    );

    // Running again keeps a configuration edited on the device.
    let edited = std::fs::read_to_string(at("etc/merd/merd.toml")).unwrap().replace("fps = 120", "fps = 100");
    std::fs::write(at("etc/merd/merd.toml"), &edited).unwrap();
    let out = install(root.path(), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(at("etc/merd/merd.toml")).unwrap(), edited);
    assert!(at("etc/merd/merd.toml.new").is_file());
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept the existing merd.toml"));
}

#[test]
fn missing_inputs_are_named() {
    let root = tempfile::tempdir().unwrap();
    let out = install(root.path(), &["--model", "/nonexistent/model.merb"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/model.merb does not exist"), "{err}");
    assert!(!root.path().join("usr/local/bin/merd").exists(), "nothing is installed");
}
