#![allow(dead_code)] // included by several test crates, each using a subset
//! Distinct, validly signed bundles for the push tests (unit and CLI): the default model under
//! other version names.

use std::path::{Path, PathBuf};

use mer_shared::bundle::{Bundle, SecretKey, read_secret_key};
use mer_shared::manifest::{Manifest, ONNX_METADATA_KEY};
use prost::Message;
use sha2::{Digest as _, Sha256};

pub fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// The key the demo model is signed with; the test devices trust it.
pub fn site_key() -> SecretKey {
    read_secret_key(&models().join("demo-key")).unwrap()
}

/// The default model re-versioned (inside its ONNX metadata too) and signed by `key`.
pub fn bundle(version: &str, key: &SecretKey) -> Vec<u8> {
    bundle_with(version, key, |_| {})
}

/// [`bundle`] with its manifest changed by `edit` as well.
pub fn bundle_with(version: &str, key: &SecretKey, edit: impl FnOnce(&mut Manifest)) -> Vec<u8> {
    let bytes = std::fs::read(models().join("skd-tstsan-synthetic.merb")).unwrap();
    let (manifest, onnx) = Bundle::from_bytes(&bytes).unwrap().into_parts();
    let mut manifest = Manifest::from_json(&manifest).unwrap();
    manifest.version = version.to_string();
    edit(&mut manifest);
    let json = manifest.to_json();
    let mut proto = tract_onnx::pb::ModelProto::decode(onnx.as_slice()).unwrap();
    let entry = proto.metadata_props.iter_mut().find(|e| e.key == ONNX_METADATA_KEY).unwrap();
    entry.value = json.clone();
    Bundle::sign(json, proto.encode_to_vec(), key).to_bytes()
}

pub fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}
