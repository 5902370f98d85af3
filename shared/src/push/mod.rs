//! The model-push protocol between `mer push` (host) and `merd` (device), over TCP.
//!
//! Every message is one frame: a 4-byte little-endian length, then a postcard-encoded
//! [`Request`] or [`Response`] ([`frame`]). A session opens with `Hello`/`Welcome`, which fixes
//! the protocol version and hands the client a fresh random nonce. Uploading a bundle changes
//! nothing the device runs, so it needs no signature (the bundle carries its own); it is
//! bounded by the device's size limit and can resume from the last acknowledged offset.
//! Changing the active model (activate, rollback) takes a [`SignedCommand`]: the action and
//! the device's current nonce, signed by a host key the device trusts. The device replaces the
//! nonce after every command, so a recorded command is useless on any later connection or
//! later in the same one.

pub mod client;
pub mod frame;

use ed25519_dalek::{Signature, Signer};
use serde::{Deserialize, Serialize};

use crate::bundle::keys::{PublicKey, SecretKey, key_id};
use crate::error::{Error, Result};

/// The protocol this code speaks; both sides must agree.
pub const PROTOCOL: u32 = 1;
/// Bundle bytes per upload chunk.
pub const CHUNK_BYTES: usize = 256 << 10;
/// Largest frame either side accepts: a full chunk and its envelope.
pub const MAX_FRAME_BYTES: usize = CHUNK_BYTES + 4096;
/// Default TCP port of `merd`'s push listener.
pub const DEFAULT_PORT: u16 = 7878;
/// Starts every signed command, so its signature can never pass for a bundle's or vice versa.
const COMMAND_DOMAIN: &[u8] = b"mer command v1\n";

pub type Nonce = [u8; 32];
pub type Digest = [u8; 32];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    Hello {
        protocol: u32,
    },
    Status,
    /// Starts or resumes the upload of a bundle of `size` bytes with SHA-256 `sha256`.
    Upload {
        sha256: Digest,
        size: u64,
    },
    /// Bytes of the upload in progress, starting at `offset`.
    Chunk {
        offset: u64,
        data: Vec<u8>,
    },
    Command(SignedCommand),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Welcome {
        protocol: u32,
        device: String,
        nonce: Nonce,
    },
    Status(DeviceStatus),
    /// Send the upload from this offset (bytes before it are already on the device).
    UploadFrom {
        offset: u64,
    },
    /// The chunk is written; the upload continues at `offset`.
    Ack {
        offset: u64,
    },
    /// The whole bundle arrived and passed every check; it can be activated.
    Staged(ModelInfo),
    /// A command was carried out; `nonce` signs the next one.
    Done {
        status: DeviceStatus,
        nonce: Nonce,
    },
    /// The request was refused and nothing changed; with a nonce when a command used one up.
    Refused {
        reason: String,
        nonce: Option<Nonce>,
    },
    /// Another client is uploading the same bundle; try again shortly.
    Busy {
        reason: String,
    },
}

/// A state-changing request, signed together with the nonce the device issued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedCommand {
    pub action: Action,
    pub nonce: Nonce,
    pub signer: [u8; 32],
    pub signature: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Make the bundle with this SHA-256 (staged, or kept from before) the active model.
    Activate { sha256: Digest },
    /// Go back to the model that was active before the current one.
    Rollback,
}

impl SignedCommand {
    pub fn sign(action: Action, nonce: Nonce, key: &SecretKey) -> SignedCommand {
        let signature = key.signing_key().sign(&command_message(&action, &nonce));
        SignedCommand { action, nonce, signer: key.public().to_bytes(), signature: signature.to_bytes().to_vec() }
    }

    /// Checks the signature and that the signer is trusted; the caller checks the nonce.
    pub fn verify(&self, trusted: &[PublicKey]) -> Result<PublicKey> {
        let refused = |why: String| Err(Error::Push(why));
        let Some(signer) = trusted.iter().find(|k| k.to_bytes() == self.signer) else {
            return refused(format!("the command is signed by key {}, which this device does not trust", key_id(&self.signer)));
        };
        let Ok(bytes) = <[u8; 64]>::try_from(self.signature.as_slice()) else {
            return refused(format!("the command's signature is {} bytes, not 64", self.signature.len()));
        };
        match signer.verifying_key().verify_strict(&command_message(&self.action, &self.nonce), &Signature::from_bytes(&bytes)) {
            Ok(()) => Ok(*signer),
            Err(_) => refused("the command's signature does not match it".into()),
        }
    }
}

fn command_message(action: &Action, nonce: &Nonce) -> Vec<u8> {
    let mut message = COMMAND_DOMAIN.to_vec();
    message.extend_from_slice(nonce);
    message.extend_from_slice(&postcard::to_stdvec(action).expect("an action always encodes"));
    message
}

/// One model a device holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Hex SHA-256 of the bundle file.
    pub sha256: String,
    pub version: String,
    pub architecture: String,
    pub classes: Vec<String>,
    /// Key id of the key that signed the bundle.
    pub signer: String,
    pub bytes: u64,
}

/// What `mer devices` shows.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeviceStatus {
    pub device: String,
    pub active: Option<ModelInfo>,
    /// Earlier active models kept for rollback, newest first.
    pub previous: Vec<ModelInfo>,
    pub health: Health,
}

/// How the running pipeline is doing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Health {
    pub uptime_s: f64,
    pub fps: f64,
    pub frames: u64,
    pub dropped_frames: u64,
    pub events: u64,
    /// Whether a face is in view ("in view at …", "searching", "lost") or the fixed box.
    pub face: String,
}

/// Hex digits of a digest, as `ModelInfo::sha256` and file names spell it.
pub fn digest_hex(digest: &Digest) -> String {
    hex::encode(digest)
}

/// The digest spelt by [`digest_hex`].
pub fn parse_digest(text: &str) -> Result<Digest> {
    let bad = || Error::Push(format!("{text:?} is not a SHA-256 digest in hex"));
    let mut digest = [0u8; 32];
    hex::decode_to_slice(text, &mut digest).map_err(|_| bad())?;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip_through_hex() {
        let digest: Digest = std::array::from_fn(|i| i as u8 * 7);
        assert_eq!(parse_digest(&digest_hex(&digest)).unwrap(), digest);
        assert!(parse_digest("abc").is_err() && parse_digest(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn commands_verify_only_with_their_nonce_action_and_a_trusted_key() {
        let key = SecretKey::from_seed(&[7; 32]);
        let other = SecretKey::from_seed(&[8; 32]);
        let trusted = [key.public()];
        let command = SignedCommand::sign(Action::Rollback, [1; 32], &key);
        assert_eq!(command.verify(&trusted).unwrap(), key.public());

        let mut replayed = command.clone();
        replayed.nonce = [2; 32];
        assert!(replayed.verify(&trusted).unwrap_err().to_string().contains("does not match"));
        let mut changed = command.clone();
        changed.action = Action::Activate { sha256: [0; 32] };
        assert!(changed.verify(&trusted).is_err());
        let foreign = SignedCommand::sign(Action::Rollback, [1; 32], &other);
        assert!(foreign.verify(&trusted).unwrap_err().to_string().contains("does not trust"));
        let mut short = command;
        short.signature.pop();
        assert!(short.verify(&trusted).unwrap_err().to_string().contains("63 bytes"));
    }
}
