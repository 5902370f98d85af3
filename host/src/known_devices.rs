//! The devices this host has enrolled: each address with the device key it presented then, so
//! that every later connection can insist on the same key (as SSH's known_hosts does).
//!
//! A TOML file, by default `$MER_KNOWN_DEVICES`, else `$XDG_CONFIG_HOME/mer/known-devices.toml`,
//! else `~/.config/mer/known-devices.toml`; written atomically, readable by its owner only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mer_shared::push::channel::DevicePublicKey;
use mer_shared::push::client::with_default_port;
use mer_shared::{Error, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnownDevice {
    /// The device's public key, 64 hex digits.
    pub key: String,
    /// The name the device gave when it was enrolled.
    pub name: String,
    /// When (UTC, RFC 3339).
    pub enrolled: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    devices: BTreeMap<String, KnownDevice>,
}

pub struct KnownDevices {
    path: PathBuf,
    file: File,
}

impl KnownDevices {
    /// Where the list lives when no path is given.
    pub fn default_path() -> Result<PathBuf> {
        if let Some(path) = std::env::var_os("MER_KNOWN_DEVICES").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(path));
        }
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").filter(|p| !p.is_empty()).map(|home| PathBuf::from(home).join(".config")))
            .ok_or_else(|| Error::InvalidArgument("no HOME to keep the enrolled devices under; give --known-devices".into()))?;
        Ok(config.join("mer/known-devices.toml"))
    }

    /// Reads the list; a missing file is an empty list.
    pub fn load(path: &Path) -> Result<KnownDevices> {
        let file = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| Error::InvalidArgument(format!("{}: not a list of enrolled devices ({e})", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => return Err(Error::io(path, e)),
        };
        Ok(KnownDevices { path: path.to_path_buf(), file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entry for `address` (`host` and `host:7878` are the same device).
    pub fn get(&self, address: &str) -> Option<&KnownDevice> {
        self.file.devices.get(&with_default_port(address))
    }

    /// The enrolled key for `address`, or why there is none.
    pub fn key(&self, address: &str) -> Result<DevicePublicKey> {
        let Some(entry) = self.get(address) else {
            return Err(Error::Untrusted(format!(
                "{address} is not enrolled on this host ({}): run `mer devices enroll {address}` and compare the \
                 fingerprint it shows with `merd key` on the device",
                self.path.display()
            )));
        };
        DevicePublicKey::from_hex(&entry.key).map_err(|e| Error::InvalidArgument(format!("{}: {address}: {e}", self.path.display())))
    }

    pub fn insert(&mut self, address: &str, key: DevicePublicKey, name: &str, enrolled: String) {
        let entry = KnownDevice { key: key.to_hex(), name: name.to_string(), enrolled };
        self.file.devices.insert(with_default_port(address), entry);
    }

    /// Writes the list (creating its directory), readable by its owner only.
    pub fn save(&self) -> Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let text = format!(
            "# Devices this host has enrolled (`mer devices enroll`): address, device key, name.\n{}",
            toml::to_string(&self.file).expect("the list always encodes")
        );
        let mut file = mer_shared::atomic_file::AtomicFile::options().mode(0o600).create(&self.path)?;
        std::io::Write::write_all(&mut file, text.as_bytes()).map_err(|e| Error::io(&self.path, e))?;
        file.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrolled_devices_round_trip_and_an_unknown_one_says_how_to_enrol() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mer/known.toml");
        let mut known = KnownDevices::load(&path).unwrap();
        let e = known.key("board-1").unwrap_err().to_string();
        assert!(e.contains("mer devices enroll board-1"), "{e}");
        let key = DevicePublicKey([5; 32]);
        known.insert("board-1", key, "room-1", "2026-12-03T10:00:00Z".into());
        known.save().unwrap();
        let read = KnownDevices::load(&path).unwrap();
        assert_eq!(read.key("board-1:7878").unwrap(), key);
        assert_eq!(read.get("board-1").unwrap().name, "room-1");
        std::fs::write(&path, "devices = 3").unwrap();
        assert!(KnownDevices::load(&path).err().unwrap().to_string().contains("not a list of enrolled devices"));
    }
}
