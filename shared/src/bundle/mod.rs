//! Signed model bundles: the one file a device takes a model from.
//!
//! A bundle is `MERB` followed by a postcard-encoded [`Bundle`]: format number, the model
//! manifest (JSON text, opaque here), the ONNX bytes, the signer's public key and an ed25519
//! signature over `"mer bundle v1\n" || sha256(manifest) || sha256(onnx)`. Reading a bundle
//! ([`Bundle::from_bytes`]) checks only its structure; [`Bundle::verify`] decides whether its
//! contents may be used, so nothing from a bundle should be acted on before that. A bundle on
//! disk can be checked without holding it in memory ([`BundleFile`]).

mod file;
pub mod keys;

use std::borrow::Cow;

use ed25519_dalek::{Signature, Signer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
pub use file::{BundleFile, BundleHead, FileSection};
pub use keys::{PublicKey, SecretKey, key_id, read_public_key, read_secret_key, write_public_key, write_secret_key};

/// The first bytes of every bundle file.
pub const MAGIC: &[u8; 4] = b"MERB";
/// The format this code writes and reads; a change in layout or signed message bumps it.
pub const FORMAT: u32 = 1;
/// Starts the signed message, so a bundle signature can never be replayed as another kind.
const DOMAIN: &[u8] = b"mer bundle v1\n";

/// A model bundle; field order is the file layout. One read from bytes borrows its model from
/// them (a model can be hundreds of megabytes).
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Bundle<'a> {
    format: u32,
    manifest: String,
    onnx: Cow<'a, [u8]>,
    signer: [u8; 32],
    signature: Vec<u8>,
}

impl Bundle<'static> {
    /// Signs `manifest` and `onnx` with `key`.
    pub fn sign(manifest: String, onnx: Vec<u8>, key: &SecretKey) -> Bundle<'static> {
        let message = signed_message(&Sha256::digest(manifest.as_bytes()).into(), &Sha256::digest(&onnx).into());
        let signature = key.signing_key().sign(&message);
        Bundle {
            format: FORMAT,
            manifest,
            onnx: Cow::Owned(onnx),
            signer: key.public().to_bytes(),
            signature: signature.to_bytes().to_vec(),
        }
    }
}

impl<'a> Bundle<'a> {
    /// The file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let body = postcard::to_stdvec(self).expect("postcard encodes strings, byte vectors and arrays");
        let mut out = Vec::with_capacity(MAGIC.len() + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&body);
        out
    }

    /// Reads the file bytes, checking structure only (see [`Bundle::verify`]). Lengths in the
    /// file are checked against the bytes present before anything is allocated.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Bundle<'a>> {
        let mut reader = Reader::after_magic(bytes, bytes.len())?;
        let (format, manifest) = reader.format_and_manifest()?;
        let onnx: &[u8] = reader.field("the ONNX model", true)?;
        let (signer, signature) = reader.seal()?;
        Ok(Bundle { format, manifest, onnx: Cow::Borrowed(onnx), signer, signature })
    }

    /// Checks that the embedded signer signed exactly these contents (integrity) and that the
    /// signer is one of `trusted` (authenticity). Returns the trusted key that matched.
    pub fn verify<'k>(&self, trusted: &'k [PublicKey]) -> Result<&'k PublicKey> {
        find_trusted(self.verify_integrity()?, trusted)
    }

    /// Checks the signature against the embedded signer key only: for tools that inspect a
    /// bundle without trusted keys. It proves the contents are as signed, not who signed them.
    pub fn verify_integrity(&self) -> Result<PublicKey> {
        let message = signed_message(&Sha256::digest(self.manifest.as_bytes()).into(), &Sha256::digest(&self.onnx).into());
        check_seal(&self.signer, &self.signature, &message)
    }

    pub fn format(&self) -> u32 {
        self.format
    }
    /// The model manifest, as signed (JSON text).
    pub fn manifest(&self) -> &str {
        &self.manifest
    }
    /// The ONNX model, as signed.
    pub fn onnx(&self) -> &[u8] {
        &self.onnx
    }
    /// Manifest and ONNX bytes (copied if borrowed).
    pub fn into_parts(self) -> (String, Vec<u8>) {
        (self.manifest, self.onnx.into_owned())
    }
    /// The key id of the embedded signer key, whether or not it is valid.
    pub fn signer_key_id(&self) -> String {
        key_id(&self.signer)
    }
    /// Hex SHA-256 of the ONNX bytes, to compare with a manifest or a published digest.
    pub fn onnx_sha256(&self) -> String {
        hex::encode(Sha256::digest(&self.onnx))
    }
    /// Hex SHA-256 of the manifest text.
    pub fn manifest_sha256(&self) -> String {
        hex::encode(Sha256::digest(self.manifest.as_bytes()))
    }
}

impl std::fmt::Debug for Bundle<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("format", &self.format)
            .field("manifest_bytes", &self.manifest.len())
            .field("onnx_bytes", &self.onnx.len())
            .field("onnx_sha256", &self.onnx_sha256())
            .field("signer", &self.signer_key_id())
            .finish()
    }
}

/// What the signature covers: the domain, then both digests (of the manifest, then of the
/// ONNX model), so the signature binds the manifest to this one model.
fn signed_message(manifest_sha256: &[u8; 32], onnx_sha256: &[u8; 32]) -> Vec<u8> {
    [DOMAIN, manifest_sha256, onnx_sha256].concat()
}

/// Whether `signer` signed `message` with `signature`: the signer key as embedded in the bundle.
fn check_seal(signer: &[u8; 32], signature: &[u8], message: &[u8]) -> Result<PublicKey> {
    let damaged = |what: String| Error::Bundle(format!("{what} (the bundle was altered or damaged)"));
    let key = PublicKey::from_bytes(signer)
        .map_err(|_| damaged(format!("the signer key {} is not a usable ed25519 public key", key_id(signer))))?;
    let signature: [u8; 64] = signature.try_into().map_err(|_| damaged(format!("the signature is {} bytes, not 64", signature.len())))?;
    key.verifying_key()
        .verify_strict(message, &Signature::from_bytes(&signature))
        .map_err(|_| damaged("signature does not match the contents".into()))?;
    Ok(key)
}

/// The trusted key equal to `signer`, or an error naming both sides.
pub(crate) fn find_trusted(signer: PublicKey, trusted: &[PublicKey]) -> Result<&PublicKey> {
    trusted.iter().find(|k| **k == signer).ok_or_else(|| {
        let ids = if trusted.is_empty() {
            "(none given)".to_string()
        } else {
            trusted.iter().map(PublicKey::key_id).collect::<Vec<_>>().join(", ")
        };
        Error::Bundle(format!(
            "signed by key {}, which is not among the trusted keys {ids}; add its public key to the trusted keys only if you trust whoever holds it",
            signer.key_id()
        ))
    })
}

/// Decodes a bundle field by field, so errors can say which field and where. `rest` may be a
/// piece of the file that starts at byte `at` of `total` (a file read in parts).
struct Reader<'a> {
    total: usize,
    at: usize,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader of the fields after the magic bytes at the start of `head`, the first bytes of
    /// a file of `total` bytes.
    fn after_magic(head: &'a [u8], total: usize) -> Result<Reader<'a>> {
        let Some(body) = head.strip_prefix(MAGIC.as_slice()) else {
            let start = &head[..head.len().min(MAGIC.len())];
            return Err(Error::Bundle(format!(
                "not a mer bundle (expected MERB at the start, found \"{}\"; {total} bytes)",
                start.escape_ascii()
            )));
        };
        Ok(Reader { total, at: MAGIC.len(), rest: body })
    }

    fn offset(&self) -> usize {
        self.at
    }

    fn format_and_manifest(&mut self) -> Result<(u32, String)> {
        let format: u32 = self.field("the format number", false)?;
        if format != FORMAT {
            return Err(Error::Bundle(format!(
                "bundle format {format} is not supported; this program reads format {FORMAT} (update it to read newer bundles)"
            )));
        }
        Ok((format, self.field("the manifest", true)?))
    }

    /// The signer key and signature, which must end the file.
    fn seal(&mut self) -> Result<([u8; 32], Vec<u8>)> {
        let signer: [u8; 32] = self.field("the signer key", false)?;
        let signature: &[u8] = self.field("the signature", true)?;
        if self.at != self.total {
            return Err(Error::Bundle(format!(
                "{} unexpected bytes after the end of the bundle (it ends at byte {} of {}); the file is damaged or something was appended to it",
                self.total - self.at,
                self.at,
                self.total
            )));
        }
        if signature.len() != 64 {
            return Err(Error::Bundle(format!(
                "the signature is {} bytes, an ed25519 signature is 64 (the bundle is damaged)",
                signature.len()
            )));
        }
        Ok((signer, signature.to_vec()))
    }

    /// Bytes of the file after the point where `rest` (a tail of `self.rest`) starts.
    fn remaining_after(&self, rest: &[u8]) -> usize {
        self.total - (self.at + self.rest.len() - rest.len())
    }

    /// A length-prefixed field that the file holds in full, without reading it: where it starts
    /// and how long it is. The reader then stands at its end.
    fn skip_prefixed(&mut self, what: &str) -> Result<(usize, usize)> {
        let at = self.offset();
        let (len, rest) = match postcard::take_from_bytes::<u64>(self.rest) {
            Ok(read) => read,
            Err(postcard::Error::DeserializeUnexpectedEnd) => {
                return Err(Error::Bundle(format!(
                    "truncated: the bundle ends inside {what}, which starts at byte {at} of {} (an incomplete copy?)",
                    self.total
                )));
            }
            Err(e) => return Err(Error::Bundle(format!("malformed bundle: cannot read {what} at byte {at} of {}: {e}", self.total))),
        };
        let remaining = self.remaining_after(rest);
        if len > remaining as u64 {
            return Err(Error::Bundle(format!(
                "truncated: the bundle ends inside {what}, which starts at byte {at} of {}: it announces {len} bytes, {remaining} remain (an incomplete copy?)",
                self.total
            )));
        }
        let start = self.total - remaining;
        self.at = start + len as usize;
        self.rest = &[];
        Ok((start, len as usize))
    }

    /// The next field; `prefixed` for fields that start with their length.
    fn field<T: Deserialize<'a>>(&mut self, what: &str, prefixed: bool) -> Result<T> {
        let at = self.offset();
        match postcard::take_from_bytes::<T>(self.rest) {
            Ok((value, rest)) => {
                self.at += self.rest.len() - rest.len();
                self.rest = rest;
                Ok(value)
            }
            Err(postcard::Error::DeserializeUnexpectedEnd) => {
                // The length a truncated field announced, read the way postcard writes it.
                let announced = match postcard::take_from_bytes::<u64>(self.rest) {
                    Ok((n, rest)) if prefixed => format!(": it announces {n} bytes, {} remain", self.remaining_after(rest)),
                    _ => String::new(),
                };
                Err(Error::Bundle(format!(
                    "truncated: the bundle ends inside {what}, which starts at byte {at} of {}{announced} (an incomplete copy?)",
                    self.total
                )))
            }
            Err(postcard::Error::DeserializeBadUtf8) => {
                Err(Error::Bundle(format!("{what} at byte {at} is not UTF-8 text; the bundle is damaged")))
            }
            Err(e) => Err(Error::Bundle(format!("malformed bundle: cannot read {what} at byte {at} of {}: {e}", self.total))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed(&[n; 32])
    }

    fn small() -> Bundle<'static> {
        let manifest = r#"{"name":"tiny","classes":["a","b"]}"#.to_string();
        let onnx = (0..300u32).map(|i| (i * 31 % 251) as u8).collect();
        Bundle::sign(manifest, onnx, &key(1))
    }

    fn message(r: Result<impl std::fmt::Debug>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn sign_write_read_verify() {
        let bundle = small();
        let bytes = bundle.to_bytes();
        assert_eq!(&bytes[..5], b"MERB\x01");
        let read = Bundle::from_bytes(&bytes).unwrap();
        assert_eq!(read, bundle);
        let trusted = [key(2).public(), key(1).public()];
        assert_eq!(read.verify(&trusted).unwrap(), &trusted[1]);
        assert_eq!(read.verify_integrity().unwrap(), key(1).public());
        assert_eq!(read.format(), FORMAT);
        assert_eq!(read.manifest(), bundle.manifest());
        assert_eq!(read.onnx().len(), 300);
        assert_eq!(read.signer_key_id(), key(1).public().key_id());
        assert_eq!(read.onnx_sha256(), hex::encode(Sha256::digest(read.onnx())));
        assert_eq!(read.manifest_sha256().len(), 64);
        let debug = format!("{read:?}");
        assert!(debug.contains("onnx_bytes: 300") && debug.contains(&read.signer_key_id()), "{debug}");
        let (manifest, onnx) = read.into_parts();
        assert_eq!((manifest.as_str(), onnx.as_slice()), (bundle.manifest(), bundle.onnx()));

        // Empty parts are still signed parts.
        let empty = Bundle::sign(String::new(), Vec::new(), &key(3));
        let empty_bytes = empty.to_bytes();
        let read = Bundle::from_bytes(&empty_bytes).unwrap();
        assert_eq!(read.verify(&[key(3).public()]).unwrap(), &key(3).public());
    }

    #[test]
    fn every_changed_byte_is_detected() {
        let bytes = small().to_bytes();
        let trusted = [key(1).public()];
        let (mut structural, mut signature) = (0, 0);
        for i in 0..bytes.len() {
            for mask in [1u8, 2, 4, 8, 16, 32, 64, 128, 0xff] {
                let mut changed = bytes.clone();
                changed[i] ^= mask;
                match Bundle::from_bytes(&changed) {
                    Err(_) => structural += 1,
                    Ok(b) => {
                        let err = b.verify(&trusted).expect_err(&format!("byte {i} ^ {mask:#04x} went unnoticed"));
                        assert!(err.to_string().contains("altered or damaged"), "byte {i}: {err}");
                        signature += 1;
                    }
                }
            }
        }
        // Both defences take part: the format and lengths, and the signature.
        assert!(structural > 0 && signature > 0, "{structural} {signature}");
    }

    #[test]
    fn truncated_and_extended_files_are_refused() {
        let bytes = small().to_bytes();
        for n in 0..bytes.len() {
            assert!(Bundle::from_bytes(&bytes[..n]).is_err(), "{n} bytes");
        }
        let e = message(Bundle::from_bytes(&bytes[..100]));
        assert!(e.contains("truncated") && e.contains("inside the ONNX model") && e.contains("announces 300 bytes"), "{e}");
        let e = message(Bundle::from_bytes(&bytes[..bytes.len() - 1]));
        assert!(e.contains("inside the signature") && e.contains("announces 64 bytes, 63 remain"), "{e}");
        let e = message(Bundle::from_bytes(&bytes[..4]));
        assert!(e.contains("inside the format number"), "{e}");

        let mut longer = bytes.clone();
        longer.extend_from_slice(b"\0\0");
        let e = message(Bundle::from_bytes(&longer));
        assert!(e.contains("2 unexpected bytes") && e.contains(&format!("byte {} of {}", bytes.len(), bytes.len() + 2)), "{e}");
    }

    #[test]
    fn foreign_and_future_files_are_named() {
        let e = message(Bundle::from_bytes(b"PK\x03\x04rest of a zip"));
        assert!(e.contains("not a mer bundle (expected MERB") && e.contains("PK\\x03\\x04"), "{e}");
        assert!(message(Bundle::from_bytes(b"")).contains("not a mer bundle"));
        let mut future = small().to_bytes();
        future[4] = 2;
        let e = message(Bundle::from_bytes(&future));
        assert!(e.contains("bundle format 2 is not supported") && e.contains("format 1"), "{e}");
        let e = message(Bundle::from_bytes(b"MERB\x01\x03\xff\xfe\xfd"));
        assert!(e.contains("the manifest at byte 5 is not UTF-8"), "{e}");
        let e = message(Bundle::from_bytes(b"MERB\xff\xff\xff\xff\xff\xff"));
        assert!(e.contains("malformed bundle: cannot read the format number at byte 4"), "{e}");

        let mut short_signature = small();
        short_signature.signature.pop();
        let e = message(Bundle::from_bytes(&short_signature.to_bytes()));
        assert!(e.contains("signature is 63 bytes"), "{e}");
        assert!(message(short_signature.verify_integrity()).contains("signature is 63 bytes"));
    }

    #[test]
    fn hostile_lengths_allocate_nothing() {
        // Lengths near 2^64 in front of a few bytes: refused from the bytes present.
        let mut huge_manifest = b"MERB\x01".to_vec();
        huge_manifest.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        huge_manifest.extend_from_slice(b"{}");
        let e = message(Bundle::from_bytes(&huge_manifest));
        assert!(e.contains("the manifest"), "{e}");

        let mut huge_onnx = b"MERB\x01\x00".to_vec();
        huge_onnx.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40]);
        huge_onnx.extend_from_slice(&[0; 64]);
        let e = message(Bundle::from_bytes(&huge_onnx));
        assert!(e.contains("inside the ONNX model") && e.contains(&format!("announces {} bytes, 64 remain", 1u64 << 62)), "{e}");

        let mut huge_signature = small();
        huge_signature.signature.clear();
        let mut bytes = huge_signature.to_bytes();
        bytes.pop();
        bytes.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]);
        let e = message(Bundle::from_bytes(&bytes));
        assert!(e.contains("inside the signature"), "{e}");
    }

    #[test]
    fn untrusted_and_substituted_signers_are_refused() {
        let bundle = small();
        let (signer, others) = (key(1).public().key_id(), [key(2).public(), key(3).public()]);
        let e = message(bundle.verify(&others));
        assert!(e.starts_with(&format!("signed by key {signer}, which is not among the trusted keys")), "{e}");
        assert!(e.contains(&others[0].key_id()) && e.contains(&others[1].key_id()), "{e}");
        assert!(message(bundle.verify(&[])).contains("trusted keys (none given)"));
        // Integrity alone holds for any correctly signed bundle.
        assert_eq!(Bundle::sign("m".into(), vec![1], &key(2)).verify_integrity().unwrap(), others[0]);

        // Putting a trusted key in place of the real signer breaks the signature.
        let mut forged = bundle.clone();
        forged.signer = others[0].to_bytes();
        let forged_bytes = forged.to_bytes();
        let forged = Bundle::from_bytes(&forged_bytes).unwrap();
        let e = message(forged.verify(&others));
        assert_eq!(e, "signature does not match the contents (the bundle was altered or damaged)");
        // So does re-signing the same contents' digest with another key's claim.
        let mut swapped = Bundle::sign(bundle.manifest().into(), bundle.onnx().to_vec(), &key(2));
        swapped.signature = bundle.signature.clone();
        assert!(message(swapped.verify(&others)).contains("does not match"));
        // An invalid signer key is named, not trusted.
        let mut weak = bundle.clone();
        weak.signer = [0; 32];
        weak.signer[0] = 1;
        let e = message(weak.verify_integrity());
        assert!(e.contains(&key_id(&weak.signer)) && e.contains("not a usable ed25519 public key"), "{e}");
    }
}
