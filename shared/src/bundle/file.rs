//! A bundle checked from its file in streamed passes instead of held in memory. The first pass
//! reads the structure and hashes every byte (the whole file, and the model section for the
//! signature), so the signature is verified before anything inside is parsed; the second
//! decodes the model straight from the file while hashing it again, and its result is refused
//! unless those bytes are the ones verified. A 470 MB model is then held once, decoded, and
//! never also as file bytes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use prost::bytes::Buf;
use sha2::{Digest, Sha256};

use super::{PublicKey, Reader, check_seal, find_trusted, signed_message};
use crate::error::{Error, Result};

/// What is read at first: enough for the manifest of any ordinary bundle.
const HEAD_BYTES: usize = 64 * 1024;
/// The most a postcard length prefix takes.
const MAX_LENGTH_PREFIX: usize = 10;
/// Bytes read from the file at a time.
const CHUNK_BYTES: usize = 1 << 20;

/// The structure of a bundle file, read without its model: for describing a stored bundle.
/// Nothing in it is verified; see [`BundleFile`].
#[derive(Debug)]
pub struct BundleHead {
    path: PathBuf,
    len: u64,
    manifest: String,
    onnx_start: u64,
    onnx_len: u64,
    signer: [u8; 32],
    signature: Vec<u8>,
}

impl BundleHead {
    /// Reads the file's structure, with the checks and errors of [`super::Bundle::from_bytes`].
    pub fn read(path: &Path) -> Result<BundleHead> {
        let io = |e| Error::io(path, e);
        let mut file = File::open(path).map_err(io)?;
        let total = file.metadata().map_err(io)?.len();
        let size = usize::try_from(total).map_err(|_| Error::Bundle(format!("{} is too large to be a bundle", path.display())))?;

        let mut head = read_span(&mut file, 0, HEAD_BYTES.min(size)).map_err(io)?;
        if let Some(needed) = head_length(&head, size)
            && needed > head.len()
        {
            head = read_span(&mut file, 0, needed.min(size)).map_err(io)?;
        }
        let mut reader = Reader::after_magic(&head, size)?;
        let (_, manifest) = reader.format_and_manifest()?;
        let (onnx_start, onnx_len) = reader.skip_prefixed("the ONNX model")?;
        let onnx_end = onnx_start + onnx_len;
        let tail_len = (size - onnx_end).min(32 + MAX_LENGTH_PREFIX + 64);
        let tail = read_span(&mut file, onnx_end as u64, tail_len).map_err(io)?;
        let (signer, signature) = Reader { total: size, at: onnx_end, rest: &tail }.seal()?;
        Ok(BundleHead {
            path: path.to_path_buf(),
            len: total,
            manifest,
            onnx_start: onnx_start as u64,
            onnx_len: onnx_len as u64,
            signer,
            signature,
        })
    }

    /// The model manifest, as signed (JSON text).
    pub fn manifest(&self) -> &str {
        &self.manifest
    }

    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The key id of the embedded signer key, whether or not it is valid.
    pub fn signer_key_id(&self) -> String {
        super::key_id(&self.signer)
    }
}

/// A bundle file whose structure and digests are known; see [`BundleFile::open`].
#[derive(Debug)]
pub struct BundleFile {
    head: BundleHead,
    sha256: [u8; 32],
    onnx_sha256: [u8; 32],
}

impl BundleFile {
    /// Reads the file's structure ([`BundleHead::read`]) and hashes it, holding only the
    /// manifest in memory. Nothing is trusted yet.
    pub fn open(path: &Path) -> Result<BundleFile> {
        let head = BundleHead::read(path)?;
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let onnx = head.onnx_start..head.onnx_start + head.onnx_len;
        let (sha256, onnx_sha256) = hash_file(&mut file, onnx).map_err(|e| Error::io(path, e))?;
        Ok(BundleFile { head, sha256, onnx_sha256 })
    }

    /// The structure: manifest, signer and length.
    pub fn head(&self) -> &BundleHead {
        &self.head
    }

    /// [`super::Bundle::verify`]: the signer is one of `trusted` and signed exactly these contents.
    pub fn verify<'k>(&self, trusted: &'k [PublicKey]) -> Result<&'k PublicKey> {
        find_trusted(self.verify_integrity()?, trusted)
    }

    /// [`super::Bundle::verify_integrity`]: the embedded signer signed exactly these contents.
    pub fn verify_integrity(&self) -> Result<PublicKey> {
        let head = &self.head;
        let message = signed_message(&Sha256::digest(head.manifest.as_bytes()).into(), &self.onnx_sha256);
        check_seal(&head.signer, &head.signature, &message)
    }

    /// SHA-256 of the whole file.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// Decodes the model section with `decode` reading it straight from the file, and returns
    /// the result only if the bytes read are the ones hashed by [`BundleFile::open`] (so the
    /// ones a verified signature covers): a file replaced in between is refused.
    pub fn decode_onnx<T>(&self, decode: impl FnOnce(&mut FileSection) -> Result<T>) -> Result<T> {
        let head = &self.head;
        let mut section = FileSection::open(&head.path, head.onnx_start, head.onnx_len)?;
        let decoded = decode(&mut section)?;
        if section.finish()? != self.onnx_sha256 {
            return Err(Error::Bundle(format!(
                "{} changed while it was read: the model read is not the one verified",
                head.path.display()
            )));
        }
        Ok(decoded)
    }
}

/// Where the model section would end, if `head` holds the start of a bundle of `total` bytes.
fn head_length(head: &[u8], total: usize) -> Option<usize> {
    let mut reader = Reader::after_magic(head, total).ok()?;
    reader.field::<u32>("the format number", false).ok()?;
    let (manifest_len, rest) = postcard::take_from_bytes::<u64>(reader.rest).ok()?;
    let manifest_start = total - reader.remaining_after(rest);
    usize::try_from(manifest_len).ok()?.checked_add(manifest_start + MAX_LENGTH_PREFIX)
}

fn read_span(file: &mut File, start: u64, len: usize) -> std::io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity(len);
    file.take(len as u64).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// SHA-256 of the whole file and of its bytes in `section`, in one pass.
fn hash_file(file: &mut File, section: std::ops::Range<u64>) -> std::io::Result<([u8; 32], [u8; 32])> {
    file.seek(SeekFrom::Start(0))?;
    let (mut whole, mut part) = (Sha256::new(), Sha256::new());
    let mut chunk = vec![0; CHUNK_BYTES];
    let mut at = 0u64;
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        let bytes = &chunk[..n];
        whole.update(bytes);
        let from = section.start.clamp(at, at + n as u64) - at;
        let to = section.end.clamp(at, at + n as u64) - at;
        part.update(&bytes[from as usize..to as usize]);
        at += n as u64;
    }
    Ok((whole.finalize().into(), part.finalize().into()))
}

/// A byte range of a file as a [`Buf`] (what prost decodes from), read a chunk at a time and
/// hashed as it is read.
pub struct FileSection {
    path: PathBuf,
    file: File,
    /// Bytes of the range not yet read into `chunk`.
    unread: u64,
    chunk: Vec<u8>,
    pos: usize,
    hasher: Sha256,
    error: Option<std::io::Error>,
}

impl FileSection {
    pub fn open(path: &Path, start: u64, len: u64) -> Result<FileSection> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        file.seek(SeekFrom::Start(start)).map_err(|e| Error::io(path, e))?;
        let mut section =
            FileSection { path: path.to_path_buf(), file, unread: len, chunk: Vec::new(), pos: 0, hasher: Sha256::new(), error: None };
        section.refill();
        Ok(section)
    }

    /// The whole of a file.
    pub fn whole(path: &Path) -> Result<FileSection> {
        let len = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
        FileSection::open(path, 0, len)
    }

    /// SHA-256 of the range, once it has all been read; a read error met on the way.
    pub fn finish(self) -> Result<[u8; 32]> {
        if let Some(e) = self.error {
            return Err(Error::io(&self.path, e));
        }
        if self.remaining() > 0 {
            return Err(Error::Model(format!("{}: {} bytes were left unread", self.path.display(), self.remaining())));
        }
        Ok(self.hasher.finalize().into())
    }

    fn refill(&mut self) {
        let n = self.unread.min(CHUNK_BYTES as u64) as usize;
        self.chunk.resize(n, 0);
        self.pos = 0;
        self.unread -= n as u64;
        if self.error.is_none()
            && let Err(e) = self.file.read_exact(&mut self.chunk)
        {
            // A Buf cannot fail: the reader sees zeros, and `finish` reports the error.
            self.error = Some(e);
        }
        if self.error.is_some() {
            self.chunk.fill(0);
        }
        self.hasher.update(&self.chunk);
    }
}

impl Buf for FileSection {
    fn remaining(&self) -> usize {
        (self.chunk.len() - self.pos).saturating_add(usize::try_from(self.unread).unwrap_or(usize::MAX))
    }

    fn chunk(&self) -> &[u8] {
        &self.chunk[self.pos..]
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining(), "advanced {cnt} bytes past the end of the section");
        while cnt > 0 {
            let step = cnt.min(self.chunk.len() - self.pos);
            self.pos += step;
            cnt -= step;
            if self.pos == self.chunk.len() && self.unread > 0 {
                self.refill();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Bundle, SecretKey};
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed(&[n; 32])
    }

    fn written(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn read_all(section: &mut FileSection) -> Vec<u8> {
        let mut out = vec![0; section.remaining()];
        section.copy_to_slice(&mut out);
        out
    }

    #[test]
    fn a_file_reads_and_verifies_as_the_bytes_do() {
        let dir = tempfile::tempdir().unwrap();
        // A model over several read chunks, and a manifest longer than the first read.
        let onnx: Vec<u8> = (0..CHUNK_BYTES * 2 + 12345).map(|i| (i * 7 % 253) as u8).collect();
        for manifest in ["{}".to_string(), "m".repeat(HEAD_BYTES * 3)] {
            let bundle = Bundle::sign(manifest.clone(), onnx.clone(), &key(1));
            let bytes = bundle.to_bytes();
            let path = written(dir.path(), "b.merb", &bytes);
            let file = BundleFile::open(&path).unwrap();
            assert_eq!(file.head().manifest(), manifest);
            assert_eq!(file.head().len(), bytes.len() as u64);
            assert_eq!(file.sha256(), <[u8; 32]>::from(Sha256::digest(&bytes)));
            assert_eq!(file.verify(&[key(2).public(), key(1).public()]).unwrap(), &key(1).public());
            assert_eq!(file.head().signer_key_id(), key(1).public().key_id());
            assert!(file.verify(&[key(2).public()]).unwrap_err().to_string().contains("not among the trusted keys"));
            assert_eq!(file.decode_onnx(|s| Ok(read_all(s))).unwrap(), onnx);
        }
    }

    #[test]
    fn damaged_files_fail_as_the_bytes_do() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = Bundle::sign("{}".into(), (0..300u32).map(|i| i as u8).collect(), &key(1)).to_bytes();
        let trusted = [key(1).public()];
        for n in 0..bytes.len() {
            let path = written(dir.path(), "cut.merb", &bytes[..n]);
            let (from_file, from_bytes) = (BundleFile::open(&path).unwrap_err(), Bundle::from_bytes(&bytes[..n]).unwrap_err());
            assert_eq!(from_file.to_string(), from_bytes.to_string(), "{n} bytes");
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0; 500]);
        let path = written(dir.path(), "long.merb", &longer);
        assert_eq!(BundleFile::open(&path).unwrap_err().to_string(), Bundle::from_bytes(&longer).unwrap_err().to_string());
        for i in (0..bytes.len()).step_by(7) {
            let mut changed = bytes.clone();
            changed[i] ^= 0x10;
            let path = written(dir.path(), "changed.merb", &changed);
            let from_file = BundleFile::open(&path).and_then(|f| f.verify(&trusted).map(|_| ()));
            let from_bytes = Bundle::from_bytes(&changed).and_then(|b| b.verify(&trusted).map(|_| ()));
            assert_eq!(from_file.unwrap_err().to_string(), from_bytes.unwrap_err().to_string(), "byte {i}");
        }
    }

    #[test]
    fn a_file_replaced_after_verifying_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path(), "b.merb", &Bundle::sign("{}".into(), vec![1; 1000], &key(1)).to_bytes());
        let file = BundleFile::open(&path).unwrap();
        file.verify(&[key(1).public()]).unwrap();
        // Same length and layout, another model.
        written(dir.path(), "b.merb", &Bundle::sign("{}".into(), vec![2; 1000], &key(1)).to_bytes());
        let e = file.decode_onnx(|s| Ok(read_all(s))).unwrap_err().to_string();
        assert!(e.contains("changed while it was read"), "{e}");
    }

    #[test]
    fn a_section_skips_across_chunks_and_reports_short_files() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..CHUNK_BYTES * 3).map(|i| (i % 251) as u8).collect();
        let path = written(dir.path(), "data", &bytes);
        let mut section = FileSection::open(&path, 10, (CHUNK_BYTES * 2) as u64).unwrap();
        section.advance(CHUNK_BYTES + 5);
        assert_eq!(section.chunk()[0], bytes[10 + CHUNK_BYTES + 5]);
        assert_eq!(read_all(&mut section), bytes[CHUNK_BYTES + 15..CHUNK_BYTES * 2 + 10]);
        assert_eq!(section.finish().unwrap(), <[u8; 32]>::from(Sha256::digest(&bytes[10..CHUNK_BYTES * 2 + 10])));

        let mut past_end = FileSection::open(&path, (CHUNK_BYTES * 3 - 4) as u64, 100).unwrap();
        read_all(&mut past_end);
        let e = past_end.finish().unwrap_err().to_string();
        assert!(e.contains("data"), "{e}");
    }
}
