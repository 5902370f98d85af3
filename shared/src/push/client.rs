//! The host side of a push session: what `mer push`, `mer rollback` and `mer devices` use.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use super::channel::{self, Channel, DevicePublicKey};
use super::{
    Action, CHUNK_BYTES, DEFAULT_PORT, DeviceStatus, MAX_FRAME_BYTES, ModelInfo, Nonce, Request, Response, SignedCommand, authenticate,
    parse_digest,
};
use crate::bundle::keys::SecretKey;
use crate::error::{Error, Result};

/// How long a push keeps reconnecting and resuming after the connection breaks.
const RESUME_ATTEMPTS: usize = 5;
/// How long a push waits for another client uploading the same bundle.
const BUSY_WAIT: Duration = Duration::from_secs(60);

/// Which device key a connection accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect<'a> {
    /// The key enrolled for this address; any other is refused before the host says a word.
    Key(DevicePublicKey),
    /// A key with this fingerprint, as `merd key` printed it (enrolment checked out of band).
    Fingerprint(&'a str),
    /// Any key (enrolment on first contact, which shows the key to a person and records it).
    AnyKey,
}

impl Expect<'_> {
    /// Why `key` is not the one expected, if it is not.
    fn mismatch(&self, key: &DevicePublicKey) -> Option<String> {
        let plain = |f: &str| f.chars().filter(char::is_ascii_hexdigit).collect::<String>().to_ascii_lowercase();
        match self {
            Expect::Key(enrolled) if enrolled != key => Some(format!("not the key {} enrolled for it", enrolled.fingerprint())),
            Expect::Fingerprint(given) if plain(given) != plain(&key.fingerprint()) => Some(format!("not the fingerprint {given} given")),
            _ => None,
        }
    }
}

/// Who the client is and which device it expects.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// A key the device trusts; it authenticates every session.
    pub key: &'a SecretKey,
    pub expect: Expect<'a>,
}

pub struct Client {
    stream: TcpStream,
    channel: Channel,
    nonce: Nonce,
    device: String,
    device_key: DevicePublicKey,
}

impl Client {
    /// Connects to `address` (`host` or `host:port`), checks the device's key against
    /// `credentials.expect`, authenticates and opens a session; `timeout` bounds the
    /// connection and every reply.
    pub fn connect(address: &str, credentials: Credentials, timeout: Duration) -> Result<Client> {
        let target = with_default_port(address);
        let resolved = target
            .to_socket_addrs()
            .map_err(|e| Error::Push(format!("cannot resolve {target}: {e}")))?
            .next()
            .ok_or_else(|| Error::Push(format!("{target} resolves to no address")))?;
        let stream = TcpStream::connect_timeout(&resolved, timeout).map_err(|e| Error::Push(format!("cannot connect to {target}: {e}")))?;
        let setup = |e: std::io::Error| Error::Push(format!("{target}: {e}"));
        stream.set_read_timeout(Some(timeout)).map_err(setup)?;
        stream.set_write_timeout(Some(timeout)).map_err(setup)?;
        stream.set_nodelay(true).map_err(setup)?;
        let (channel, device_key) = channel::connect(&mut &stream, &mut &stream)?;
        if let Some(mismatch) = credentials.expect.mismatch(&device_key) {
            return Err(Error::Untrusted(format!(
                "{target} presents device key {}, {mismatch}: a different or reinstalled device, or someone in between. \
                 Nothing was sent. If the device was reinstalled, compare `merd key` on it and enrol it again with \
                 `mer devices enroll {address} --replace`",
                device_key.fingerprint(),
            )));
        }
        let mut client = Client { stream, channel, nonce: [0; 32], device: String::new(), device_key };
        let proof = authenticate(client.channel.handshake_hash(), credentials.key);
        match client.call(&proof) {
            Ok(Response::Welcome { device, nonce }) => {
                client.nonce = nonce;
                client.device = device;
                Ok(client)
            }
            Ok(other) => Err(unexpected(&other)),
            Err(Error::Push(reason)) if reason.starts_with("refused:") => Err(Error::Untrusted(format!(
                "{target} {reason}; add the public key of {} to the device's [model] public_keys",
                credentials.key.public().key_id()
            ))),
            Err(e) => Err(e),
        }
    }

    /// The name the device gave itself.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The device's own key, which the channel proved it holds.
    pub fn device_key(&self) -> DevicePublicKey {
        self.device_key
    }

    pub fn status(&mut self) -> Result<DeviceStatus> {
        match self.call(&Request::Status)? {
            Response::Status(status) => Ok(status),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends `bundle` (resuming where an earlier upload of the same bytes stopped) and returns
    /// what the device staged. `progress` sees (bytes on the device, total).
    pub fn upload(&mut self, bundle: &[u8], mut progress: impl FnMut(u64, u64)) -> Result<ModelInfo> {
        let sha256: [u8; 32] = Sha256::digest(bundle).into();
        let total = bundle.len() as u64;
        let mut offset = match self.call(&Request::Upload { sha256, size: total })? {
            Response::UploadFrom { offset } if offset <= total => offset,
            Response::Staged(info) => return Ok(info),
            other => return Err(unexpected(&other)),
        };
        loop {
            progress(offset, total);
            let end = (offset as usize + CHUNK_BYTES).min(bundle.len());
            let data = bundle[offset as usize..end].to_vec();
            match self.call(&Request::Chunk { offset, data })? {
                Response::Ack { offset: next } if next > offset && next <= total => offset = next,
                Response::Staged(info) => {
                    progress(total, total);
                    return Ok(info);
                }
                other => return Err(unexpected(&other)),
            }
        }
    }

    /// One page of the device's events after `since`: (the device id, the events, whether
    /// more follow).
    pub fn events(&mut self, since: u64) -> Result<(String, Vec<crate::event::Event>, bool)> {
        match self.call(&Request::Events { since })? {
            Response::Events { device, events, more } => Ok((device, events, more)),
            other => Err(unexpected(&other)),
        }
    }

    /// Makes the bundle with this digest the device's active model.
    pub fn activate(&mut self, sha256: [u8; 32], key: &SecretKey) -> Result<DeviceStatus> {
        self.command(Action::Activate { sha256 }, key)
    }

    /// Returns the device to the model active before the current one.
    pub fn rollback(&mut self, key: &SecretKey) -> Result<DeviceStatus> {
        self.command(Action::Rollback, key)
    }

    fn command(&mut self, action: Action, key: &SecretKey) -> Result<DeviceStatus> {
        let command = SignedCommand::sign(action, self.nonce, key);
        match self.call(&Request::Command(command))? {
            Response::Done { status, nonce } => {
                self.nonce = nonce;
                Ok(status)
            }
            Response::Refused { reason, nonce } => {
                if let Some(nonce) = nonce {
                    self.nonce = nonce;
                }
                Err(Error::Push(format!("refused: {reason}")))
            }
            other => Err(unexpected(&other)),
        }
    }

    fn call(&mut self, request: &Request) -> Result<Response> {
        self.channel.send(&mut &self.stream, request)?;
        let response = self.channel.receive::<Response>(&mut &self.stream, MAX_FRAME_BYTES)?;
        match response {
            Response::Refused { reason, nonce: None } => Err(Error::Push(format!("refused: {reason}"))),
            Response::Busy { reason } => Err(Error::PushBusy(reason)),
            other => Ok(other),
        }
    }
}

/// What a push did to one device.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub device: String,
    pub staged: ModelInfo,
    pub status: DeviceStatus,
    /// Connections the upload needed (more than one when it resumed after a break).
    pub connections: usize,
}

/// Uploads `bundle` to `address`, reconnecting and resuming when the connection breaks (and
/// waiting while another client uploads the same bundle), then activates it with `key`. A
/// connection lost before the activation was answered (the device closes sessions that reach
/// its `session_s`) is retried too: the upload is then found complete and the activation sent
/// again, which is harmless if the first one went through.
pub fn push(
    address: &str,
    bundle: &[u8],
    credentials: Credentials,
    timeout: Duration,
    mut progress: impl FnMut(u64, u64),
) -> Result<Pushed> {
    let started = Instant::now();
    let mut connections = 0;
    let mut last_error = None;
    while connections < RESUME_ATTEMPTS || (matches!(last_error, Some(Error::PushBusy(_))) && started.elapsed() < BUSY_WAIT) {
        connections += 1;
        let attempt = Client::connect(address, credentials, timeout).and_then(|mut client| {
            let staged = client.upload(bundle, &mut progress)?;
            let status = client.activate(parse_digest(&staged.sha256)?, credentials.key)?;
            Ok((client, staged, status))
        });
        match attempt {
            Ok((client, staged, status)) => return Ok(Pushed { device: client.device, staged, status, connections }),
            // A refusal or a wrong key is final; a broken or busy connection is worth another try.
            Err(Error::Push(reason)) if reason.starts_with("refused:") => return Err(Error::Push(reason)),
            Err(e @ Error::Untrusted(_)) => return Err(e),
            Err(e) => {
                let pause = if matches!(e, Error::PushBusy(_)) {
                    Duration::from_millis(500)
                } else {
                    Duration::from_millis(200 << connections.min(4))
                };
                last_error = Some(e);
                std::thread::sleep(pause);
            }
        }
    }
    Err(last_error.map_or_else(
        || Error::Push("no attempt was made".into()),
        |e| Error::Push(format!("gave up after {connections} connections: {e}")),
    ))
}

/// `host` alone means the default port.
pub fn with_default_port(address: &str) -> String {
    let has_port = match address.rsplit_once(':') {
        Some((host, port)) => port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']')),
        None => false,
    };
    if has_port {
        address.to_string()
    } else if address.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{address}]:{DEFAULT_PORT}")
    } else {
        format!("{address}:{DEFAULT_PORT}")
    }
}

fn unexpected(response: &Response) -> Error {
    let what = match response {
        Response::Refused { reason, .. } => return Error::Push(format!("refused: {reason}")),
        Response::Welcome { .. } => "a second welcome",
        Response::Status(_) => "a status report",
        Response::UploadFrom { .. } => "an upload offset",
        Response::Ack { .. } => "an acknowledgement",
        Response::Staged(_) => "a staged model",
        Response::Done { .. } => "a command result",
        Response::Busy { .. } => "busy",
        Response::Events { .. } => "events",
    };
    Error::Push(format!("the device answered with {what}, which does not fit the request (is it a compatible merd?)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_the_default_port_when_they_have_none() {
        assert_eq!(with_default_port("board-1"), "board-1:7878");
        assert_eq!(with_default_port("10.0.0.5:9000"), "10.0.0.5:9000");
        assert_eq!(with_default_port("[::1]:9000"), "[::1]:9000");
        assert_eq!(with_default_port("::1"), "[::1]:7878");
    }
}
