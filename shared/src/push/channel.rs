//! The encrypted, authenticated channel every push-protocol message travels in.
//!
//! The handshake is Noise NX (X25519, ChaChaPoly, BLAKE2s, through `snow`): the client sends an
//! ephemeral key; the device answers with its own ephemeral key and its long-term [`DeviceKey`],
//! so the client learns which device it reached (and compares the key with the one it enrolled)
//! and both sides hold session keys that no later key theft can recover (forward secrecy). The
//! client then proves its own long-term identity inside the channel: its first message is
//! `Request::Authenticate`, an ed25519 signature over the handshake hash by a key the device
//! trusts, which binds the proof to this one session so a recording of it is useless. The
//! device serves nothing before that proof. Keys stay single-purpose: the device's X25519 key
//! only agrees keys, the host's ed25519 key only signs.
//!
//! On the wire each Noise message is a 2-byte big-endian length and the message. Protocol frames
//! ([`super::frame`]) are cut into transport messages of at most [`MAX_RECORD`] bytes. Before
//! the handshake a device too busy to take the connection sends an empty message and closes.

use std::io::{self, ErrorKind, Read, Write};
use std::path::Path;

use curve25519_dalek::montgomery::MontgomeryPoint;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use snow::{Builder, HandshakeState, TransportState};

use super::PROTOCOL;
use super::frame::{FrameError, encode, read_frame, read_full};
use crate::atomic_file::AtomicFile;
use crate::error::{Error, Result};

const NOISE: &str = "Noise_NX_25519_ChaChaPoly_BLAKE2s";
/// Mixed into the handshake, so a peer speaking some other Noise protocol fails it at once.
const PROLOGUE: &[u8] = b"mer fleet channel";
/// The largest Noise message.
pub const MAX_RECORD: usize = 65535;
/// ChaChaPoly's authentication tag.
const TAG: usize = 16;
/// The client's first message: its ephemeral key and its protocol number, nothing else.
const FIRST_MESSAGE: usize = 32 + 4;
const DEVICE_KEY_COMMENT: &str = "# merd device key (X25519). It proves this device's identity: keep it on the device only.";

fn params() -> snow::params::NoiseParams {
    NOISE.parse().expect("a valid Noise protocol name")
}

/// A device's long-term key pair, made on its first start.
pub struct DeviceKey {
    secret: [u8; 32],
    public: DevicePublicKey,
}

/// What a host enrols and checks on every connection.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DevicePublicKey(pub [u8; 32]);

impl DeviceKey {
    pub fn generate() -> Result<DeviceKey> {
        let pair = Builder::new(params()).generate_keypair().map_err(|e| Error::Key(format!("cannot make a device key: {e}")))?;
        let secret: [u8; 32] = pair.private.as_slice().try_into().expect("X25519 keys are 32 bytes");
        Ok(DeviceKey::from_secret(secret))
    }

    fn from_secret(secret: [u8; 32]) -> DeviceKey {
        DeviceKey { secret, public: DevicePublicKey(MontgomeryPoint::mul_base_clamped(secret).to_bytes()) }
    }

    pub fn public(&self) -> DevicePublicKey {
        self.public
    }

    /// Reads the key at `path`, or makes one there (readable by its owner only) when there is
    /// none yet. Returns whether it was made.
    pub fn load_or_create(path: &Path) -> Result<(DeviceKey, bool)> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((DeviceKey::parse(&text).map_err(|e| Error::KeyFile { path: path.into(), reason: e.to_string() })?, false)),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let key = DeviceKey::generate()?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                }
                let mut file = AtomicFile::options().replace(false).mode(0o600).create(path)?;
                file.write_all(format!("{DEVICE_KEY_COMMENT}\n{}\n", hex::encode(key.secret)).as_bytes())
                    .map_err(|e| Error::io(path, e))?;
                file.commit()?;
                Ok((key, true))
            }
            Err(e) => Err(Error::io(path, e)),
        }
    }

    fn parse(text: &str) -> Result<DeviceKey> {
        let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'));
        let mut secret = [0u8; 32];
        match line.map(|l| hex::decode_to_slice(l, &mut secret)) {
            Some(Ok(())) => Ok(DeviceKey::from_secret(secret)),
            _ => Err(Error::Key("not a device key file (a comment line, then 64 hex digits)".into())),
        }
    }
}

impl DevicePublicKey {
    /// 32 hex digits (128 bits of its SHA-256) in groups of four: what a person compares.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0);
        let hex = hex::encode(&digest[..16]);
        hex.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).expect("hex")).collect::<Vec<_>>().join(":")
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Result<DevicePublicKey> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut key).map_err(|_| Error::Key(format!("{text:?} is not a device key (64 hex digits)")))?;
        Ok(DevicePublicKey(key))
    }
}

impl std::fmt::Debug for DevicePublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DevicePublicKey({})", self.fingerprint())
    }
}

/// An open channel: sends and receives protocol frames, encrypted.
pub struct Channel {
    transport: TransportState,
    handshake_hash: Vec<u8>,
    /// Decrypted bytes not yet consumed, from `read_at` on.
    plaintext: Vec<u8>,
    read_at: usize,
}

impl Channel {
    fn open(handshake: HandshakeState) -> std::result::Result<Channel, FrameError> {
        let handshake_hash = handshake.get_handshake_hash().to_vec();
        let transport = handshake.into_transport_mode().map_err(|e| FrameError::Handshake(e.to_string()))?;
        Ok(Channel { transport, handshake_hash, plaintext: Vec::new(), read_at: 0 })
    }

    /// Identifies this session: what the client's authentication signs.
    pub fn handshake_hash(&self) -> &[u8] {
        &self.handshake_hash
    }

    pub fn send<T: Serialize>(&mut self, writer: &mut impl Write, message: &T) -> std::result::Result<(), FrameError> {
        self.send_bytes(writer, &encode(message))
    }

    /// Encrypts and sends `bytes` as they are (whole frames, or anything for a test).
    pub fn send_bytes(&mut self, writer: &mut impl Write, bytes: &[u8]) -> std::result::Result<(), FrameError> {
        let mut record = vec![0u8; 2 + MAX_RECORD];
        for piece in bytes.chunks(MAX_RECORD - TAG) {
            let n = self.transport.write_message(piece, &mut record[2..]).map_err(|e| FrameError::Handshake(e.to_string()))?;
            record[..2].copy_from_slice(&(n as u16).to_be_bytes());
            writer.write_all(&record[..2 + n])?;
        }
        writer.flush()?;
        Ok(())
    }

    /// Reads one frame of at most `limit` body bytes.
    pub fn receive<T: DeserializeOwned>(&mut self, reader: &mut impl Read, limit: usize) -> std::result::Result<T, FrameError> {
        read_frame(&mut Decrypting { channel: self, reader }, limit)
    }
}

/// The channel's plaintext as a byte stream, decrypting one message at a time.
struct Decrypting<'a, R> {
    channel: &'a mut Channel,
    reader: &'a mut R,
}

impl<R: Read> Read for Decrypting<'_, R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let channel = &mut *self.channel;
        if channel.read_at == channel.plaintext.len() {
            let Some(record) = read_record(self.reader, MAX_RECORD)? else { return Ok(0) };
            channel.plaintext.resize(record.len(), 0);
            let n = channel.transport.read_message(&record, &mut channel.plaintext).map_err(|_| {
                io::Error::new(ErrorKind::InvalidData, "a message failed authentication (altered, replayed or from another session)")
            })?;
            channel.plaintext.truncate(n);
            channel.read_at = 0;
        }
        let n = buffer.len().min(channel.plaintext.len() - channel.read_at);
        buffer[..n].copy_from_slice(&channel.plaintext[channel.read_at..channel.read_at + n]);
        channel.read_at += n;
        Ok(n)
    }
}

/// One length-prefixed message, `None` when the stream ends cleanly before it.
fn read_record(reader: &mut impl Read, limit: usize) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 2];
    match read_full(reader, &mut header)? {
        0 => return Ok(None),
        2 => {}
        _ => return Err(io::Error::new(ErrorKind::UnexpectedEof, "the connection ended inside a message")),
    }
    let length = u16::from_be_bytes(header) as usize;
    if length > limit {
        return Err(io::Error::new(ErrorKind::InvalidData, format!("a {length}-byte handshake message; at most {limit} are expected")));
    }
    let mut record = vec![0u8; length];
    if read_full(reader, &mut record)? < length {
        return Err(io::Error::new(ErrorKind::UnexpectedEof, "the connection ended inside a message"));
    }
    Ok(Some(record))
}

fn write_record(writer: &mut impl Write, message: &[u8]) -> io::Result<()> {
    let mut record = (message.len() as u16).to_be_bytes().to_vec();
    record.extend_from_slice(message);
    writer.write_all(&record)?;
    writer.flush()
}

fn handshake_error(e: snow::Error) -> FrameError {
    FrameError::Handshake(e.to_string())
}

/// The client's side: opens a channel and returns it with the device's long-term key, which the
/// caller must check before sending anything.
pub fn connect(reader: &mut impl Read, writer: &mut impl Write) -> std::result::Result<(Channel, DevicePublicKey), FrameError> {
    connect_speaking(PROTOCOL, reader, writer)
}

fn connect_speaking(
    protocol: u32,
    reader: &mut impl Read,
    writer: &mut impl Write,
) -> std::result::Result<(Channel, DevicePublicKey), FrameError> {
    let mut handshake = Builder::new(params()).prologue(PROLOGUE).and_then(|b| b.build_initiator()).map_err(handshake_error)?;
    let mut message = [0u8; 256];
    let n = handshake.write_message(&protocol.to_le_bytes(), &mut message).map_err(handshake_error)?;
    write_record(writer, &message[..n])?;
    let reply = match read_record(reader, 1024)? {
        None => return Err(FrameError::Closed),
        Some(reply) if reply.is_empty() => return Err(FrameError::Busy),
        Some(reply) => reply,
    };
    let mut payload = [0u8; 1024];
    let n = handshake.read_message(&reply, &mut payload).map_err(|_| {
        FrameError::Handshake("the device's answer does not complete the handshake (not a merd, or a much older one)".into())
    })?;
    let device_protocol = <[u8; 4]>::try_from(&payload[..n])
        .map(u32::from_le_bytes)
        .map_err(|_| FrameError::Handshake(format!("the device's handshake carries {n} bytes where its protocol number belongs")))?;
    if device_protocol != protocol {
        return Err(FrameError::Protocol { device: device_protocol, client: protocol });
    }
    let remote = handshake.get_remote_static().and_then(|k| <[u8; 32]>::try_from(k).ok());
    let device_key = remote.map(DevicePublicKey).ok_or_else(|| FrameError::Handshake("the device sent no key".into()))?;
    Ok((Channel::open(handshake)?, device_key))
}

/// The device's side: answers a client's handshake with `key`. A client of another protocol
/// version is told this device's and refused.
pub fn accept(reader: &mut impl Read, writer: &mut impl Write, key: &DeviceKey) -> std::result::Result<Channel, FrameError> {
    let first = match read_record(reader, FIRST_MESSAGE) {
        Ok(Some(first)) => first,
        Ok(None) => return Err(FrameError::Closed),
        Err(e) if e.kind() == ErrorKind::InvalidData => {
            return Err(FrameError::Handshake("the first message is not a mer channel handshake (an older mer, or not mer at all)".into()));
        }
        Err(e) => return Err(e.into()),
    };
    let mut handshake = Builder::new(params())
        .prologue(PROLOGUE)
        .and_then(|b| b.local_private_key(&key.secret))
        .and_then(|b| b.build_responder())
        .map_err(handshake_error)?;
    let mut payload = [0u8; FIRST_MESSAGE];
    let n = handshake.read_message(&first, &mut payload).map_err(|e| FrameError::Handshake(format!("a malformed handshake ({e})")))?;
    let client_protocol = <[u8; 4]>::try_from(&payload[..n])
        .map(u32::from_le_bytes)
        .map_err(|_| FrameError::Handshake(format!("the handshake carries {n} bytes where the protocol number belongs")))?;
    let mut message = [0u8; 256];
    let n = handshake.write_message(&PROTOCOL.to_le_bytes(), &mut message).map_err(handshake_error)?;
    write_record(writer, &message[..n])?;
    if client_protocol != PROTOCOL {
        return Err(FrameError::Protocol { device: PROTOCOL, client: client_protocol });
    }
    Channel::open(handshake)
}

/// Tells a connection, before any handshake, that the device cannot take it now.
pub fn send_busy(writer: &mut impl Write) -> io::Result<()> {
    write_record(writer, &[])
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::push::{MAX_FRAME_BYTES, Request};

    fn open_pair(key: &DeviceKey) -> (Channel, DevicePublicKey, Channel, UnixStream, UnixStream) {
        let (client, device) = UnixStream::pair().unwrap();
        let device_key = DeviceKey::from_secret(key.secret);
        let device_side = std::thread::spawn(move || {
            let channel = accept(&mut &device, &mut &device, &device_key).unwrap();
            (channel, device)
        });
        let (channel, seen) = connect(&mut &client, &mut &client).unwrap();
        let (device_channel, device) = device_side.join().unwrap();
        (channel, seen, device_channel, client, device)
    }

    #[test]
    fn both_sides_agree_and_frames_of_any_size_cross_encrypted() {
        let key = DeviceKey::generate().unwrap();
        let (mut client_channel, seen, mut device_channel, client, device) = open_pair(&key);
        assert_eq!(seen, key.public());
        assert_eq!(client_channel.handshake_hash(), device_channel.handshake_hash());

        let big = Request::Chunk { offset: 9, data: (0..300_000u32).map(|i| (i % 251) as u8).collect() };
        let sender = std::thread::spawn(move || {
            client_channel.send(&mut &client, &big).unwrap();
            client_channel.send(&mut &client, &Request::Status).unwrap();
            (client_channel, client, big)
        });
        let got: Request = device_channel.receive(&mut &device, 400_000).unwrap();
        let (_, _, big) = sender.join().unwrap();
        assert_eq!(got, big);
        assert_eq!(device_channel.receive::<Request>(&mut &device, MAX_FRAME_BYTES).unwrap(), Request::Status);
    }

    #[test]
    fn an_altered_or_replayed_message_is_refused() {
        let key = DeviceKey::generate().unwrap();
        let (mut client_channel, _, mut device_channel, _client, _device) = open_pair(&key);
        let mut wire = Vec::new();
        client_channel.send(&mut wire, &Request::Status).unwrap();
        let mut altered = wire.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        let e = device_channel.receive::<Request>(&mut altered.as_slice(), MAX_FRAME_BYTES).unwrap_err();
        assert!(e.to_string().contains("failed authentication"), "{e}");

        // A fresh pair: the message read once, then again.
        let (mut client_channel, _, mut device_channel, _client, _device) = open_pair(&key);
        let mut wire = Vec::new();
        client_channel.send(&mut wire, &Request::Status).unwrap();
        let mut twice = wire.clone();
        twice.extend_from_slice(&wire);
        let mut reader = twice.as_slice();
        assert_eq!(device_channel.receive::<Request>(&mut reader, MAX_FRAME_BYTES).unwrap(), Request::Status);
        assert!(device_channel.receive::<Request>(&mut reader, MAX_FRAME_BYTES).is_err());
    }

    #[test]
    fn a_client_of_another_protocol_is_told_both_versions() {
        let key = DeviceKey::generate().unwrap();
        let (client, device) = UnixStream::pair().unwrap();
        let device_side = std::thread::spawn(move || accept(&mut &device, &mut &device, &key).err().unwrap().to_string());
        let e = connect_speaking(PROTOCOL + 97, &mut &client, &mut &client).err().unwrap().to_string();
        let expected = format!("the device speaks protocol {PROTOCOL}, the client {}; update one of them", PROTOCOL + 97);
        assert_eq!(e, expected);
        assert_eq!(device_side.join().unwrap(), expected);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]

        /// Any first bytes at all: a refusal, never a panic, and nothing but a handshake answer
        /// (for bytes that happen to be a well-formed first message) goes back.
        #[test]
        fn arbitrary_first_messages_never_panic_the_device(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            let key = DeviceKey::from_secret([7; 32]);
            let mut answer = Vec::new();
            let opened = accept(&mut bytes.as_slice(), &mut answer, &key);
            proptest::prop_assert!(opened.is_err() || answer.len() > 2);
        }
    }

    #[test]
    fn an_old_plain_hello_is_not_a_handshake() {
        let key = DeviceKey::generate().unwrap();
        // Protocol 1's Hello { protocol: 1 }: a 4-byte length, then postcard.
        let old_hello = [2u8, 0, 0, 0, 0, 1];
        let mut answer = Vec::new();
        let e = accept(&mut old_hello.as_slice(), &mut answer, &key).err().unwrap();
        assert!(e.to_string().contains("not a mer channel handshake"), "{e}");
        assert!(answer.is_empty());
    }

    #[test]
    fn device_keys_are_made_once_kept_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/device.key");
        let (made, created) = DeviceKey::load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (read, created) = DeviceKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(read.public(), made.public());
        assert_eq!(made.public().fingerprint().len(), 39);
        std::fs::write(&path, "# nothing\nxyz\n").unwrap();
        let e = DeviceKey::load_or_create(&path).err().unwrap().to_string();
        assert!(e.contains("not a device key file") && e.contains("device.key"), "{e}");
    }
}
