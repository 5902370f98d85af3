//! Ed25519 keys that sign model bundles, and their text files.
//!
//! Both files are a `#` comment followed by one line of 64 hex digits: the 32-byte seed of a
//! secret key, or the 32-byte public key. The lengths are equal, so the comment line is what
//! tells the two apart; the parsers use it to refuse a file of the other kind, which keeps a
//! secret key out of places meant for public ones.

use std::fs;
use std::io::Write;
use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::atomic_file::{self, AtomicFile};
use crate::error::{Error, Result};

const SECRET_COMMENT: &str = "# mer signing key (ed25519). Keep it private: anyone holding it can sign models.";
const PUBLIC_COMMENT: &str = "# mer public key";

/// A signing key. Its `Debug` shows only the key id, so the seed never reaches a log.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

/// A public key: what a device trusts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<SecretKey> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| Error::Key(format!("cannot get random bytes from the operating system for a new key: {e}")))?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// The key with this 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.0
    }

    /// The secret key file's text.
    pub fn to_file_text(&self) -> String {
        format!("{SECRET_COMMENT}\n{}\n", hex::encode(self.0.to_bytes()))
    }

    /// Reads secret key file text (see [`SecretKey::to_file_text`]).
    pub fn parse(text: &str) -> Result<SecretKey> {
        if has_comment(text, "mer public key") {
            return Err(Error::Key(
                "this is a public key file; signing needs the secret key file (written with it by key generation)".into(),
            ));
        }
        Ok(SecretKey::from_seed(&key_bytes(text)?))
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(public key {})", self.public().key_id())
    }
}

impl PublicKey {
    /// The key with these bytes; refuses bytes that are not a curve point and weak
    /// (small-order) keys, for which signatures prove nothing.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey> {
        let key =
            VerifyingKey::from_bytes(bytes).map_err(|_| Error::Key(format!("{} is not a valid ed25519 public key", hex::encode(bytes))))?;
        if key.is_weak() {
            return Err(Error::Key(format!("{} is a weak (small-order) ed25519 key; it cannot vouch for anything", hex::encode(bytes))));
        }
        Ok(PublicKey(key))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub(crate) fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }

    /// A short name for the key: 16 hex digits of its SHA-256, for messages and file names.
    pub fn key_id(&self) -> String {
        key_id(&self.to_bytes())
    }

    /// The public key file's text.
    pub fn to_file_text(&self) -> String {
        format!("{PUBLIC_COMMENT} {}\n{}\n", self.key_id(), hex::encode(self.to_bytes()))
    }

    /// Reads public key file text (see [`PublicKey::to_file_text`]).
    pub fn parse(text: &str) -> Result<PublicKey> {
        if has_comment(text, "mer signing key") {
            return Err(Error::Key(
                "this is a secret signing key file, not a public key; give the public key file written with it \
                 (and keep the secret one off devices)"
                    .into(),
            ));
        }
        PublicKey::from_bytes(&key_bytes(text)?)
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

/// The key id of public key bytes, valid key or not (so a damaged bundle can still be named).
pub fn key_id(public: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

/// Writes `key` to a new file at `path`, readable by its owner only, and never over an
/// existing file: a replaced signing key cannot be recovered. Atomic: the file appears complete
/// or not at all.
pub fn write_secret_key(path: &Path, key: &SecretKey) -> Result<()> {
    let key_file = |e: Error| {
        let reason = match e {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
                "already exists; refusing to overwrite a signing key (move it away first, or choose another path)".to_string()
            }
            Error::Io { source, .. } => format!("cannot create the secret key file: {source}"),
            other => format!("cannot create the secret key file: {other}"),
        };
        Error::KeyFile { path: path.to_path_buf(), reason }
    };
    let mut file = AtomicFile::options().replace(false).mode(0o600).create(path).map_err(key_file)?;
    file.write_all(key.to_file_text().as_bytes())
        .map_err(|e| Error::KeyFile { path: path.to_path_buf(), reason: format!("cannot write the secret key: {e}") })?;
    file.commit().map_err(key_file)
}

/// Writes `key` to `path`, atomically replacing any file there (a public key is no secret).
pub fn write_public_key(path: &Path, key: &PublicKey) -> Result<()> {
    atomic_file::write(path, key.to_file_text().as_bytes())
}

pub fn read_secret_key(path: &Path) -> Result<SecretKey> {
    read_key(path, SecretKey::parse)
}

pub fn read_public_key(path: &Path) -> Result<PublicKey> {
    read_key(path, PublicKey::parse)
}

fn read_key<K>(path: &Path, parse: fn(&str) -> Result<K>) -> Result<K> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(&text).map_err(|e| match e {
        Error::Key(reason) => Error::KeyFile { path: path.to_path_buf(), reason },
        other => other,
    })
}

/// Whether a comment line of `text` mentions `what`.
fn has_comment(text: &str, what: &str) -> bool {
    text.lines().map(str::trim).any(|l| l.starts_with('#') && l.to_ascii_lowercase().contains(what))
}

/// The 32 bytes of the one key line of a key file.
fn key_bytes(text: &str) -> Result<[u8; 32]> {
    let mut key_lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let (line, digits) =
        key_lines.next().ok_or_else(|| Error::Key("no key line: a key file holds one line of 64 hex digits after its comment".into()))?;
    if let Some((second, _)) = key_lines.next() {
        return Err(Error::Key(format!("two key lines (lines {line} and {second}); a key file holds exactly one")));
    }
    if let Some((column, c)) = digits.chars().enumerate().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(Error::Key(format!("line {line}: {c:?} at column {} is not a hex digit", column + 1)));
    }
    if digits.len() != 64 {
        return Err(Error::Key(format!("line {line} has {} hex digits; an ed25519 key is 64 (32 bytes)", digits.len())));
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(digits, &mut bytes).expect("checked to be 64 hex digits");
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> SecretKey {
        SecretKey::from_seed(&[7; 32])
    }

    #[test]
    fn text_round_trips_and_names_the_key() {
        let secret = SecretKey::generate().unwrap();
        let text = secret.to_file_text();
        assert!(text.starts_with(SECRET_COMMENT) && text.ends_with('\n'), "{text}");
        assert_eq!(SecretKey::parse(&text).unwrap().public(), secret.public());
        let public = secret.public();
        let text = public.to_file_text();
        assert!(text.starts_with(&format!("# mer public key {}\n", public.key_id())), "{text}");
        assert_eq!(PublicKey::parse(&text).unwrap(), public);
        // Hand-edited files: other comments, blank lines, CRLF, upper case, no comment at all.
        let hand = format!("# from the release machine\r\n\r\n  {}  \r\n# end\r\n", hex::encode(public.to_bytes()).to_uppercase());
        assert_eq!(PublicKey::parse(&hand).unwrap(), public);
        assert_eq!(PublicKey::parse(&hex::encode(public.to_bytes())).unwrap(), public);

        assert_ne!(SecretKey::generate().unwrap().public(), public);
        let id = fixed().public().key_id();
        assert_eq!(id.len(), 16);
        assert_eq!(id, key_id(&fixed().public().to_bytes()));
        assert!(id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{id}");
        let debug = format!("{:?}", fixed());
        assert!(debug.contains(&id) && !debug.contains(&hex::encode([7; 32])), "{debug}");
    }

    #[test]
    fn bad_text_is_explained() {
        let err = |r: Result<PublicKey>| r.unwrap_err().to_string();
        let good = hex::encode(fixed().public().to_bytes());
        let e = err(PublicKey::parse("# mer public key\n"));
        assert!(e.contains("no key line"), "{e}");
        let e = err(PublicKey::parse(&format!("{good}\n# x\n{good}\n")));
        assert!(e.contains("two key lines (lines 1 and 3)"), "{e}");
        let e = err(PublicKey::parse(&good[..62]));
        assert!(e.contains("62 hex digits") && e.contains("64"), "{e}");
        let e = err(PublicKey::parse(&format!("# k\n{}g{}", &good[..10], &good[11..])));
        assert!(e.contains("line 2") && e.contains("'g' at column 11") && e.contains("not a hex digit"), "{e}");
        let e = err(PublicKey::parse(&format!("{good}00")));
        assert!(e.contains("66 hex digits"), "{e}");
        // The identity point is on the curve but of small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let e = err(PublicKey::parse(&hex::encode(identity)));
        assert!(e.contains("weak"), "{e}");
        let off_curve = (2u8..=255).map(|y| [y; 32]).find(|b| VerifyingKey::from_bytes(b).is_err()).unwrap();
        let e = err(PublicKey::parse(&hex::encode(off_curve)));
        assert!(e.contains("not a valid ed25519 public key"), "{e}");
    }

    #[test]
    fn the_wrong_kind_of_file_is_refused() {
        let e = PublicKey::parse(&fixed().to_file_text()).unwrap_err().to_string();
        assert!(e.contains("secret signing key file, not a public key"), "{e}");
        let e = SecretKey::parse(&fixed().public().to_file_text()).unwrap_err().to_string();
        assert!(e.contains("public key file") && e.contains("secret key file"), "{e}");
    }

    #[test]
    fn key_files() {
        let dir = tempfile::tempdir().unwrap();
        let secret_path = dir.path().join("signing.key");
        let public_path = dir.path().join("signing.pub");
        let key = fixed();
        write_secret_key(&secret_path, &key).unwrap();
        write_public_key(&public_path, &key.public()).unwrap();
        assert_eq!(read_secret_key(&secret_path).unwrap().public(), key.public());
        assert_eq!(read_public_key(&public_path).unwrap(), key.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&secret_path).unwrap().permissions().mode() & 0o777, 0o600);
        }

        // Never over an existing file, whatever it holds.
        let other = SecretKey::from_seed(&[9; 32]);
        let e = write_secret_key(&secret_path, &other).unwrap_err().to_string();
        assert!(e.contains("signing.key") && e.contains("refusing to overwrite"), "{e}");
        assert_eq!(read_secret_key(&secret_path).unwrap().public(), key.public());
        write_public_key(&public_path, &other.public()).unwrap();
        assert_eq!(read_public_key(&public_path).unwrap(), other.public());

        // Errors from files name the file.
        let e = read_public_key(&secret_path).unwrap_err().to_string();
        assert!(e.contains("signing.key") && e.contains("not a public key"), "{e}");
        let e = read_secret_key(&public_path).unwrap_err().to_string();
        assert!(e.contains("signing.pub") && e.contains("public key file"), "{e}");
        fs::write(&public_path, "# mer public key\nxyz\n").unwrap();
        let e = read_public_key(&public_path).unwrap_err().to_string();
        assert!(e.contains("signing.pub") && e.contains("line 2"), "{e}");
        let e = read_public_key(&dir.path().join("missing.pub")).unwrap_err().to_string();
        assert!(e.contains("missing.pub"), "{e}");
        let e = write_secret_key(&dir.path().join("no/such/dir.key"), &key).unwrap_err().to_string();
        assert!(e.contains("dir.key") && e.contains("cannot create"), "{e}");
    }
}
