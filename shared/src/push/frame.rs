//! Length-delimited postcard frames: a 4-byte little-endian body length, then the body.
//! The length is checked against a limit before anything is allocated, and a body must decode
//! exactly, so a malformed or hostile peer costs at most one limit's worth of memory.

use std::io::{ErrorKind, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    #[error("the connection was closed")]
    Closed,
    #[error("a frame announces {announced} bytes; at most {limit} are accepted")]
    Oversized { announced: usize, limit: usize },
    #[error("the connection ended {got} bytes into a {expected}-byte frame")]
    Truncated { expected: usize, got: usize },
    #[error("a frame of {bytes} bytes is not a valid message ({reason})")]
    Malformed { bytes: usize, reason: String },
    /// The channel's handshake failed (see [`super::channel`]).
    #[error("the channel's handshake failed: {0}")]
    Handshake(String),
    /// The device turned the connection away before the handshake.
    #[error("the device is taking no more connections just now")]
    Busy,
    #[error("the device speaks protocol {device}, the client {client}; update one of them")]
    Protocol { device: u32, client: u32 },
    /// Includes read timeouts (`WouldBlock`/`TimedOut`).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// A stalled peer, as opposed to a broken or hostile one.
    pub fn is_timeout(&self) -> bool {
        matches!(self, FrameError::Io(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
    }
}

impl From<FrameError> for Error {
    fn from(e: FrameError) -> Error {
        match e {
            FrameError::Busy => Error::PushBusy(e.to_string()),
            e => Error::Push(e.to_string()),
        }
    }
}

pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let body = postcard::to_stdvec(message).expect("protocol messages always encode");
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    frame
}

pub fn write_frame<T: Serialize>(writer: &mut impl Write, message: &T) -> Result<(), FrameError> {
    writer.write_all(&encode(message))?;
    writer.flush()?;
    Ok(())
}

/// Decodes one frame body; trailing bytes inside the frame make it malformed.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let malformed = |reason: String| FrameError::Malformed { bytes: body.len(), reason };
    match postcard::take_from_bytes::<T>(body) {
        Ok((message, [])) => Ok(message),
        Ok((_, rest)) => Err(malformed(format!("{} bytes left over after the message", rest.len()))),
        Err(e) => Err(malformed(e.to_string())),
    }
}

/// Reads one frame of at most `limit` body bytes.
pub fn read_frame<T: DeserializeOwned>(reader: &mut impl Read, limit: usize) -> Result<T, FrameError> {
    let mut header = [0u8; 4];
    let got = read_full(reader, &mut header)?;
    if got == 0 {
        return Err(FrameError::Closed);
    }
    if got < header.len() {
        return Err(FrameError::Truncated { expected: header.len(), got });
    }
    let announced = u32::from_le_bytes(header) as usize;
    if announced > limit {
        return Err(FrameError::Oversized { announced, limit });
    }
    let mut body = vec![0u8; announced];
    let got = read_full(reader, &mut body)?;
    if got < announced {
        return Err(FrameError::Truncated { expected: announced + 4, got: got + 4 });
    }
    decode_body(&body)
}

/// Fills `buffer` unless the stream ends first; returns the bytes read.
pub(crate) fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::push::{Action, MAX_FRAME_BYTES, Request, Response, SignedCommand};

    fn request_strategy() -> impl Strategy<Value = Request> {
        prop_oneof![
            (any::<[u8; 32]>(), proptest::collection::vec(any::<u8>(), 0..80))
                .prop_map(|(key, signature)| Request::Authenticate { key, signature }),
            Just(Request::Status),
            (any::<[u8; 32]>(), any::<u64>()).prop_map(|(sha256, size)| Request::Upload { sha256, size }),
            (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..2048)).prop_map(|(offset, data)| Request::Chunk { offset, data }),
            (any::<[u8; 32]>(), any::<[u8; 32]>(), any::<bool>()).prop_map(|(nonce, sha256, rollback)| {
                let action = if rollback { Action::Rollback } else { Action::Activate { sha256 } };
                Request::Command(SignedCommand { action, nonce, signer: [3; 32], signature: vec![9; 64] })
            }),
        ]
    }

    /// 10000 cases per property in the suite; a long fuzzing run sets PROPTEST_CASES (see
    /// docs/BENCHMARKS.md for the last one).
    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

        /// Any bytes at all: an error or a message, never a panic or a read past the limit.
        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = read_frame::<Request>(&mut bytes.as_slice(), MAX_FRAME_BYTES);
            let _ = read_frame::<Response>(&mut bytes.as_slice(), MAX_FRAME_BYTES);
            let _ = decode_body::<Request>(&bytes);
        }

        /// Valid frames round-trip; the same frames cut short or with a byte flipped are
        /// refused or decode to some message, never panic.
        #[test]
        fn frames_round_trip_and_survive_damage(request in request_strategy(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), bit in 0u8..8) {
            let frame = encode(&request);
            prop_assert_eq!(read_frame::<Request>(&mut frame.as_slice(), MAX_FRAME_BYTES).unwrap(), request);
            let short = &frame[..cut.index(frame.len())];
            let truncated = read_frame::<Request>(&mut &short[..], MAX_FRAME_BYTES).unwrap_err();
            prop_assert!(matches!(truncated, FrameError::Closed | FrameError::Truncated { .. }), "{truncated:?}");
            let mut flipped = frame.clone();
            flipped[flip.index(frame.len())] ^= 1 << bit;
            let _ = read_frame::<Request>(&mut flipped.as_slice(), MAX_FRAME_BYTES);
        }
    }

    #[test]
    fn oversized_and_trailing_frames_are_refused_before_allocation() {
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        let e = read_frame::<Request>(&mut huge.as_slice(), MAX_FRAME_BYTES).unwrap_err();
        assert!(matches!(e, FrameError::Oversized { announced, .. } if announced == u32::MAX as usize), "{e:?}");

        let mut frame = encode(&Request::Status);
        frame.push(0);
        frame[0] += 1;
        let e = read_frame::<Request>(&mut frame.as_slice(), MAX_FRAME_BYTES).unwrap_err();
        assert!(e.to_string().contains("1 bytes left over"), "{e}");
        assert!(matches!(read_frame::<Request>(&mut [].as_slice(), 16).unwrap_err(), FrameError::Closed));
    }
}
