//! The fleet protocol between `mer` (host) and `merd` (device), over TCP.
//!
//! Everything travels in an encrypted channel ([`channel`]) that authenticates the device by
//! its own key (which the host enrolled) and the host by a key the device trusts. Every message
//! is one frame inside it: a 4-byte little-endian length, then a postcard-encoded [`Request`] or
//! [`Response`] ([`frame`]). A session opens with `Authenticate`/`Welcome`: the client signs the
//! channel's handshake hash, and the device answers with its name and a fresh random nonce. Uploading a bundle changes
//! nothing the device runs, so it needs no signature (the bundle carries its own); it is
//! bounded by the device's size limit and can resume from the last acknowledged offset.
//! Changing the active model (activate, rollback) takes a [`SignedCommand`]: the action and
//! the device's current nonce, signed by a host key the device trusts. The device replaces the
//! nonce after every command, so a recorded command is useless on any later connection or
//! later in the same one.

pub mod channel;
pub mod client;
pub mod frame;

use ed25519_dalek::{Signature, Signer};
use serde::{Deserialize, Serialize};

use crate::bundle::keys::{PublicKey, SecretKey, key_id};
use crate::error::{Error, Result};

/// The protocol this code speaks; both sides must agree. 2: the encrypted channel.
pub const PROTOCOL: u32 = 2;
/// Bundle bytes per upload chunk.
pub const CHUNK_BYTES: usize = 256 << 10;
/// Largest frame either side accepts: a full chunk and its envelope.
pub const MAX_FRAME_BYTES: usize = CHUNK_BYTES + 4096;
/// Default TCP port of `merd`'s push listener.
pub const DEFAULT_PORT: u16 = 7878;
/// Starts every signed command, so its signature can never pass for a bundle's or vice versa.
const COMMAND_DOMAIN: &[u8] = b"mer command v1\n";
/// Starts what a client signs to authenticate a channel.
const SESSION_DOMAIN: &[u8] = b"mer session v1\n";

pub type Nonce = [u8; 32];
pub type Digest = [u8; 32];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// The first message of every session: `signature` by `key` over the channel's handshake
    /// hash ([`authenticate`]).
    Authenticate {
        key: [u8; 32],
        signature: Vec<u8>,
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
    /// Events recorded after sequence number `since` (which also says the client holds every
    /// event up to it), in order, as many as fit one answer.
    Events {
        since: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Welcome {
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
    /// Events after the `since` asked for, oldest first; `more` when others follow.
    Events {
        device: String,
        events: Vec<crate::event::Event>,
        more: bool,
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

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Activate { sha256 } => write!(f, "activate {}", &digest_hex(sha256)[..12]),
            Action::Rollback => write!(f, "rollback"),
        }
    }
}

impl SignedCommand {
    pub fn sign(action: Action, nonce: Nonce, key: &SecretKey) -> SignedCommand {
        let signature = key.signing_key().sign(&command_message(&action, &nonce));
        SignedCommand { action, nonce, signer: key.public().to_bytes(), signature: signature.to_bytes().to_vec() }
    }

    /// Checks the signature and that the signer is trusted; the caller checks the nonce.
    pub fn verify(&self, trusted: &[PublicKey]) -> Result<PublicKey> {
        verify_trusted("the command", &self.signer, &self.signature, &command_message(&self.action, &self.nonce), trusted)
    }
}

/// The client's proof of identity for the channel with this handshake hash.
pub fn authenticate(handshake_hash: &[u8], key: &SecretKey) -> Request {
    let signature = key.signing_key().sign(&[SESSION_DOMAIN, handshake_hash].concat());
    Request::Authenticate { key: key.public().to_bytes(), signature: signature.to_bytes().to_vec() }
}

/// Checks an `Authenticate` against the channel's handshake hash and the trusted keys.
pub fn verify_authentication(handshake_hash: &[u8], key: &[u8; 32], signature: &[u8], trusted: &[PublicKey]) -> Result<PublicKey> {
    verify_trusted("the client", key, signature, &[SESSION_DOMAIN, handshake_hash].concat(), trusted)
}

fn verify_trusted(what: &str, signer: &[u8; 32], signature: &[u8], message: &[u8], trusted: &[PublicKey]) -> Result<PublicKey> {
    let refused = |why: String| Err(Error::Push(why));
    let Some(signer) = trusted.iter().find(|k| k.to_bytes() == *signer) else {
        return refused(format!("{what} is signed by key {}, which this device does not trust", key_id(signer)));
    };
    let Ok(bytes) = <[u8; 64]>::try_from(signature) else {
        return refused(format!("{what}'s signature is {} bytes, not 64", signature.len()));
    };
    match signer.verifying_key().verify_strict(message, &Signature::from_bytes(&bytes)) {
        Ok(()) => Ok(*signer),
        Err(_) => refused(format!("{what}'s signature does not match it")),
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
    /// What runs: the architecture, or an ensemble's members (`Manifest::model_name`).
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
    /// The probation in progress, else how the last one ended; `None` if there never was one.
    pub probation: Option<ProbationReport>,
}

/// A newly activated model's probation (`[push] probation_s`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbationReport {
    pub version: String,
    pub sha256: String,
    pub state: ProbationState,
    /// Windows classified so far (while running).
    pub windows: u32,
    /// Until the time is served (while running).
    pub seconds_left: f64,
    /// Why it failed.
    pub reason: String,
    /// When it ended (Unix milliseconds; 0 while running).
    pub at_unix_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbationState {
    Running,
    Passed,
    Failed,
}

impl std::fmt::Display for ProbationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.state {
            ProbationState::Running => {
                write!(f, "{} on probation ({} windows, {:.0} s left)", self.version, self.windows, self.seconds_left)
            }
            ProbationState::Passed => write!(f, "{} passed its probation", self.version),
            ProbationState::Failed => write!(f, "{} failed its probation and was replaced: {}", self.version, self.reason),
        }
    }
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

    #[test]
    fn an_authentication_holds_only_for_its_own_session_and_a_trusted_key() {
        let key = SecretKey::from_seed(&[7; 32]);
        let trusted = [key.public()];
        let Request::Authenticate { key: public, signature } = authenticate(b"session one", &key) else { panic!() };
        assert_eq!(verify_authentication(b"session one", &public, &signature, &trusted).unwrap(), key.public());
        let e = verify_authentication(b"session two", &public, &signature, &trusted).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        let stranger = SecretKey::from_seed(&[9; 32]);
        let Request::Authenticate { key: public, signature } = authenticate(b"session one", &stranger) else { panic!() };
        let e = verify_authentication(b"session one", &public, &signature, &trusted).unwrap_err();
        assert!(e.to_string().contains("does not trust"), "{e}");
        // A command's signature never passes for a session's, nor the reverse.
        let command = SignedCommand::sign(Action::Rollback, [1; 32], &key);
        assert!(verify_authentication(&[1; 32], &command.signer, &command.signature, &trusted).is_err());
    }
}
