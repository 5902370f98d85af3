//! The preparation cache: the model input of every sample of a dataset, in one directory,
//! keyed by everything that determines those tensors.
//!
//! Layout:
//! ```text
//! cache.json            the key and its digest (written first; decides whether a run resumes)
//! cache.lock            held while a run writes, so two runs never fill one directory
//! samples/<id>.npy      C×H×W float32 tensor, numpy format 1.0 (np.load reads it)
//! samples/<id>.json     its PreparedSample metadata; written last, so it marks a sample complete
//! index.json            key, samples in (subject, id) order and the run's summary (at the end)
//! ```
//! Every file is written through `mer_shared::atomic_file` (temporary name in its final
//! directory, synced and renamed), so an interrupted run leaves either a complete sample or none
//! at all. Nothing stored is trusted on reuse: opening a cache checks every stored sample (its
//! tensor decodes, has the key's shape, is finite and hashes to the `input_sha256` its metadata
//! records) and removes those that fail, so they are prepared again; loading for training checks
//! the same.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use mer_shared::atomic_file::{self, is_temporary};
use mer_shared::input::f32_digest;
use mer_shared::input::{InputSpec, InputTensor, KeyFrames};
use mer_shared::labels::Taxonomy;
use mer_shared::npy;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::face::{CropMode, DetectorSettings, FaceBox};

/// Bumped whenever the cache layout or the meaning of a stored tensor changes, so old
/// caches are refused rather than silently mixed with new ones.
/// Format 2: each sample records its key frame numbers and its input's SHA-256.
pub const FORMAT_VERSION: u32 = 2;

const KEY_FILE: &str = "cache.json";
const INDEX_FILE: &str = "index.json";
const LOCK_FILE: &str = "cache.lock";
const SAMPLES_DIR: &str = "samples";
/// Marked the temporary files of caches written before `mer_shared::atomic_file`; such leftovers
/// are still cleared.
const LEGACY_TMP_MARK: &str = ".tmp-";

/// Everything that determines the prepared tensors. Two runs with equal keys produce
/// interchangeable samples; any difference needs a fresh directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheKey {
    pub format: u32,
    /// Dataset name, e.g. `casme2`.
    pub dataset: String,
    /// Class set: fixes the class index of every label.
    pub taxonomy: Taxonomy,
    pub spec: InputSpec,
    pub crop: CropMode,
    /// Only with [`CropMode::Detect`]: other crop modes do not depend on the detector.
    pub detector: Option<DetectorSettings>,
}

impl CacheKey {
    pub fn new(dataset: &str, taxonomy: Taxonomy, spec: InputSpec, crop: CropMode, detector: &DetectorSettings) -> CacheKey {
        let detector = matches!(crop, CropMode::Detect).then_some(*detector);
        CacheKey { format: FORMAT_VERSION, dataset: dataset.to_string(), taxonomy, spec, crop, detector }
    }

    /// The key as JSON data, passed through JSON text once so that it compares equal to a
    /// key read back from `cache.json` (f32 fields print shorter than their f64 widening).
    fn value(&self) -> Value {
        let text = serde_json::to_string(self).expect("a cache key always serialises");
        serde_json::from_str(&text).expect("serde_json reads what it wrote")
    }

    /// Hex SHA-256 of the canonical JSON (sorted keys, no spaces): names this preparation.
    pub fn digest(&self) -> String {
        digest_of(&self.value())
    }
}

fn digest_of(key: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(key, &mut canonical);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// Compact JSON with object keys sorted, independent of serde_json's map ordering features.
fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Field paths where two keys differ, as `path: cache has A, requested B`.
fn key_differences(cached: &Value, requested: &Value, path: &str, out: &mut Vec<String>) {
    let show = |v: Option<&Value>| v.map_or_else(|| "nothing".to_string(), |v| v.to_string());
    match (cached, requested) {
        (Value::Object(a), Value::Object(b)) => {
            let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for name in names {
                let sub = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
                match (a.get(name), b.get(name)) {
                    (Some(x), Some(y)) => key_differences(x, y, &sub, out),
                    (x, y) => out.push(format!("{sub}: cache has {}, requested {}", show(x), show(y))),
                }
            }
        }
        (a, b) if a != b => {
            let name = if path.is_empty() { "key" } else { path };
            out.push(format!("{name}: cache has {a}, requested {b}"));
        }
        _ => {}
    }
}

/// Metadata of one prepared sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreparedSample {
    /// Unique within the dataset, e.g. `sub01/EP02_01f`.
    pub id: String,
    pub subject: String,
    pub class: usize,
    /// The dataset's raw label, kept for people reading the index.
    pub label: String,
    /// Where the frames came from (a directory or file of the dataset).
    pub source: String,
    /// The crop applied to every frame; None for whole frames.
    pub face: Option<FaceBox>,
    /// Frame numbers of the key frames, as the file names give them.
    pub frames: KeyFrames,
    /// SHA-256 of the input tensor's little-endian f32 bytes (C order), as `merd classify-clip`
    /// prints it for the same frames and box.
    pub input_sha256: String,
    /// Anything unusual about this sample (fallbacks taken, frames substituted, ...).
    pub notes: Vec<String>,
}

/// A stored sample that failed its check when the cache was opened; its files were removed so
/// that it is prepared again.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DamagedSample {
    /// The sample's id, or its metadata file's name when the metadata cannot be read.
    pub id: String,
    pub reason: String,
}

/// A cache directory open for writing. Shareable between threads: `put` takes `&self`.
pub struct PreparationCache {
    dir: PathBuf,
    key: CacheKey,
    digest: String,
    /// Held (and locked) for as long as the cache is open.
    _lock: File,
    damaged: Vec<DamagedSample>,
    unreadable_index: Option<String>,
}

impl PreparationCache {
    /// Opens `dir` for `key`: creates it, resumes it when it holds the same key, and refuses
    /// it when it holds a different one or another run is writing to it.
    pub fn open(dir: &Path, key: &CacheKey) -> Result<Self> {
        key.spec.validate().with_context(|| format!("preparation cache key for {}", dir.display()))?;
        let samples = dir.join(SAMPLES_DIR);
        fs::create_dir_all(&samples).with_context(|| format!("cannot create the cache directory {}", samples.display()))?;

        let lock_path = dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot create {}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            // Some network file systems cannot lock; one writer at a time is then up to the user.
            Err(fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {}
            Err(fs::TryLockError::WouldBlock) => {
                bail!("{} is in use by another preparation run; wait for it to finish or choose another output directory", dir.display())
            }
            Err(fs::TryLockError::Error(e)) => return Err(e).with_context(|| format!("cannot lock {}", lock_path.display())),
        }

        let requested = key.value();
        let digest = digest_of(&requested);
        let key_path = dir.join(KEY_FILE);
        let key_doc = serde_json::json!({ "digest": digest, "key": requested });
        let write_key = || -> Result<()> { Ok(atomic_file::write(&key_path, serde_json::to_string_pretty(&key_doc)?.as_bytes())?) };
        if key_path.exists() {
            let text = fs::read_to_string(&key_path).with_context(|| format!("cannot read {}", key_path.display()))?;
            let stored: Value = serde_json::from_str(&text).with_context(|| {
                format!("{} is not valid JSON; delete the directory {} to prepare it afresh", key_path.display(), dir.display())
            })?;
            let cached = stored.get("key").ok_or_else(|| {
                anyhow!("{} has no \"key\"; delete the directory {} to prepare it afresh", key_path.display(), dir.display())
            })?;
            let mut differences = Vec::new();
            key_differences(cached, &requested, "", &mut differences);
            if !differences.is_empty() {
                bail!(
                    "{} holds a preparation with other settings:\n  {}\n\
                     Use another output directory for these settings, or delete {} to replace it.",
                    dir.display(),
                    differences.join("\n  "),
                    dir.display()
                );
            }
            // Same key, digest from an older canonical form: the index must carry this one.
            if stored.get("digest").and_then(Value::as_str) != Some(digest.as_str()) {
                write_key()?;
            }
        } else {
            write_key()?;
        }
        remove_interrupted_writes(dir)?;
        remove_interrupted_writes(&samples)?;
        let mut cache =
            PreparationCache { dir: dir.to_path_buf(), key: key.clone(), digest, _lock: lock, damaged: vec![], unreadable_index: None };
        cache.unreadable_index = cache.index_problem(&requested);
        cache.damaged = cache.discard_damaged()?;
        Ok(cache)
    }

    /// Stored samples that failed their check on opening and were removed (to be prepared again).
    pub fn damaged(&self) -> &[DamagedSample] {
        &self.damaged
    }

    /// Why the `index.json` found on opening cannot be read, if it cannot: [`Self::finish`]
    /// replaces it (it is derived data), and the caller should say so.
    pub fn unreadable_index(&self) -> Option<&str> {
        self.unreadable_index.as_deref()
    }

    fn index_problem(&self, requested: &Value) -> Option<String> {
        let path = self.dir.join(INDEX_FILE);
        let text = match fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => return Some(e.to_string()),
            Ok(text) => text,
        };
        let index: Value = match serde_json::from_str(&text) {
            Err(e) => return Some(format!("not valid JSON ({e})")),
            Ok(index) => index,
        };
        let Some(stored) = index.get("key") else { return Some("it has no \"key\"".into()) };
        let mut differences = Vec::new();
        key_differences(stored, requested, "", &mut differences);
        if !differences.is_empty() {
            return Some(format!("it describes another preparation ({})", differences.join("; ")));
        }
        serde_json::from_value::<Vec<PreparedSample>>(index.get("samples").cloned().unwrap_or(Value::Null))
            .err()
            .map(|e| format!("its \"samples\" cannot be read ({e})"))
    }

    /// Checks every stored sample and removes those that fail (metadata first, so that a removal
    /// cut short leaves the sample absent rather than half there).
    fn discard_damaged(&self) -> Result<Vec<DamagedSample>> {
        let dir = self.dir.join(SAMPLES_DIR);
        let mut metas = Vec::new();
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if !name.starts_with('.') && name.ends_with(".json") {
                metas.push(path);
            }
        }
        let mut damaged: Vec<(DamagedSample, PathBuf)> =
            metas.par_iter().filter_map(|meta| self.check_stored(meta).err().map(|d| (d, meta.clone()))).collect();
        damaged.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        for (_, meta) in &damaged {
            for path in [meta.clone(), meta.with_extension("npy")] {
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| format!("cannot remove the damaged sample file {}", path.display()));
                    }
                    _ => {}
                }
            }
        }
        Ok(damaged.into_iter().map(|(d, _)| d).collect())
    }

    /// One stored sample, from its metadata file: the checks [`PreparedSet::load`] makes too.
    fn check_stored(&self, meta: &Path) -> Result<(), DamagedSample> {
        let name = meta.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let fail = |id: &str, reason: String| DamagedSample { id: id.to_string(), reason };
        // Without readable metadata, the id its file name encodes.
        let named = name.strip_suffix(".json").and_then(id_of_stem).unwrap_or_else(|| name.clone());
        let text = fs::read_to_string(meta).map_err(|e| fail(&named, format!("{}: {e}", meta.display())))?;
        let sample: PreparedSample =
            serde_json::from_str(&text).map_err(|e| fail(&named, format!("{} is not sample metadata: {e}", meta.display())))?;
        let id = sample.id.as_str();
        if file_stem(id).ok().as_deref() != Some(name.trim_end_matches(".json")) {
            return Err(fail(&name, format!("{} holds sample {id:?}, which belongs in another file", meta.display())));
        }
        let classes = self.key.taxonomy.num_classes();
        if sample.class >= classes {
            return Err(fail(id, format!("{}: class {} does not exist in {}", meta.display(), sample.class, self.key.taxonomy)));
        }
        let npy = meta.with_extension("npy");
        let bytes = fs::read(&npy).map_err(|e| fail(id, format!("{}: {e}", npy.display())))?;
        let spec = &self.key.spec;
        check_tensor(&npy, &bytes, [spec.channels, spec.height, spec.width], &sample.input_sha256)
            .map_err(|e| fail(id, format!("{e:#}")))?;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn key(&self) -> &CacheKey {
        &self.key
    }
    pub fn digest(&self) -> &str {
        &self.digest
    }

    fn paths(&self, id: &str) -> Result<(PathBuf, PathBuf)> {
        let stem = file_stem(id)?;
        let dir = self.dir.join(SAMPLES_DIR);
        Ok((dir.join(format!("{stem}.npy")), dir.join(format!("{stem}.json"))))
    }

    /// Whether sample `id` is completely stored: by this run, or by an earlier one and checked
    /// when the cache was opened.
    pub fn contains(&self, id: &str) -> bool {
        self.paths(id).is_ok_and(|(npy, meta)| meta.is_file() && npy.is_file())
    }

    /// Stores one sample: tensor first, then its metadata, each atomically. A crash between
    /// the two leaves a tensor without metadata, which counts as absent and is overwritten.
    pub fn put(&self, sample: &PreparedSample, tensor: &InputTensor) -> Result<()> {
        let spec = &self.key.spec;
        let expected = [spec.channels, spec.height, spec.width];
        if tensor.shape() != expected || tensor.data.len() != expected.iter().product::<usize>() {
            bail!(
                "sample {}: tensor has shape {:?} ({} values), the cache's input spec needs {expected:?}",
                sample.id,
                tensor.shape(),
                tensor.data.len()
            );
        }
        let classes = self.key.taxonomy.num_classes();
        if sample.class >= classes {
            bail!("sample {}: class {} does not exist in {} ({classes} classes)", sample.id, sample.class, self.key.taxonomy);
        }
        if let Some(i) = tensor.data.iter().position(|v| !v.is_finite()) {
            bail!("sample {}: tensor value {} at index {i} is not finite; refusing to cache it", sample.id, tensor.data[i]);
        }
        // The recorded hash is what every later reuse is checked against.
        let digest = tensor.sha256();
        if sample.input_sha256 != digest {
            bail!("sample {}: its metadata records input_sha256 {}, the tensor's is {digest}", sample.id, sample.input_sha256);
        }
        let (npy, meta) = self.paths(&sample.id)?;
        atomic_file::write(&npy, &npy::encode(&tensor.shape(), &tensor.data))?;
        atomic_file::write(&meta, serde_json::to_string_pretty(sample)?.as_bytes())?;
        Ok(())
    }

    /// Every completely stored sample, in (subject, id) order.
    pub fn samples(&self) -> Result<Vec<PreparedSample>> {
        let dir = self.dir.join(SAMPLES_DIR);
        let mut samples = Vec::new();
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with('.') || !name.ends_with(".json") || !path.with_extension("npy").is_file() {
                continue;
            }
            let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let sample: PreparedSample = serde_json::from_str(&text).with_context(|| {
                format!("{} is not sample metadata; delete it (and its .npy) to prepare that sample again", path.display())
            })?;
            if file_stem(&sample.id)? != name.trim_end_matches(".json") {
                bail!(
                    "{} holds sample {:?}, which belongs in another file; delete it to prepare that sample again",
                    path.display(),
                    sample.id
                );
            }
            samples.push(sample);
        }
        samples.sort_by(|a, b| (&a.subject, &a.id).cmp(&(&b.subject, &b.id)));
        Ok(samples)
    }

    /// Writes `index.json` over every stored sample plus the caller's `summary`, replacing
    /// any earlier index. Returns the indexed samples.
    pub fn finish(&self, summary: &Value) -> Result<Vec<PreparedSample>> {
        let samples = self.samples()?;
        let doc = serde_json::json!({
            "digest": self.digest,
            "key": self.key.value(),
            "samples": samples,
            "summary": summary,
        });
        atomic_file::write(self.dir.join(INDEX_FILE), serde_json::to_string_pretty(&doc)?.as_bytes())?;
        Ok(samples)
    }
}

/// A finished preparation loaded for training.
#[derive(Debug, Clone)]
pub struct PreparedSet {
    pub key: CacheKey,
    pub samples: Vec<PreparedSample>,
    /// C, H, W of every tensor.
    pub shape: [usize; 3],
    /// N·C·H·W values, sample after sample in `samples` order.
    pub data: Vec<f32>,
    /// What the preparation run reported in `index.json`.
    pub summary: Value,
}

impl PreparedSet {
    /// Reads `cache.json`, `index.json` and every tensor of `dir`, checking shapes against
    /// the key's input spec, that all values are finite and that each tensor hashes to the
    /// `input_sha256` its sample records.
    pub fn load(dir: &Path) -> Result<PreparedSet> {
        let (key, key_doc) = read_key_doc(dir)?;

        let index_path = dir.join(INDEX_FILE);
        if !index_path.exists() {
            bail!(
                "{} is missing: the preparation in {} did not finish; run it again with the same settings to complete it",
                index_path.display(),
                dir.display()
            );
        }
        let index: Value = read_json(&index_path, "")?;
        if index.get("digest") != key_doc.get("digest") {
            bail!(
                "{} belongs to another preparation than {} (digests differ); run the preparation again to rewrite the index",
                index_path.display(),
                dir.join(KEY_FILE).display()
            );
        }
        let samples: Vec<PreparedSample> = serde_json::from_value(index.get("samples").cloned().unwrap_or(Value::Null))
            .with_context(|| format!("{}: \"samples\" cannot be read", index_path.display()))?;
        let summary = index.get("summary").cloned().unwrap_or(Value::Null);
        let classes = key.taxonomy.num_classes();
        if let Some(s) = samples.iter().find(|s| s.class >= classes) {
            bail!("{}: sample {} has class {}, but {} has only {classes} classes", index_path.display(), s.id, s.class, key.taxonomy);
        }

        let shape = [key.spec.channels, key.spec.height, key.spec.width];
        let per_sample: usize = shape.iter().product();
        let mut data = Vec::with_capacity(samples.len() * per_sample);
        let samples_dir = dir.join(SAMPLES_DIR);
        for sample in &samples {
            let path = samples_dir.join(format!("{}.npy", file_stem(&sample.id)?));
            let bytes = fs::read(&path).with_context(|| format!("cannot read {} (sample {})", path.display(), sample.id))?;
            let values = check_tensor(&path, &bytes, shape, &sample.input_sha256)
                .map_err(|e| anyhow!("{e:#}; run the preparation again with the same settings to repair sample {}", sample.id))?;
            data.extend_from_slice(&values);
        }
        Ok(PreparedSet { key, samples, shape, data, summary })
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
    /// The C·H·W values of sample `i`.
    pub fn tensor(&self, i: usize) -> &[f32] {
        let n: usize = self.shape.iter().product();
        &self.data[i * n..(i + 1) * n]
    }
    /// Distinct subjects, sorted (the folds of leave-one-subject-out).
    pub fn subjects(&self) -> Vec<String> {
        self.samples.iter().map(|s| s.subject.clone()).collect::<BTreeSet<_>>().into_iter().collect()
    }
}

/// The key of a preparation in `dir` (its `cache.json`), without reading the samples.
pub fn read_key(dir: &Path) -> Result<CacheKey> {
    Ok(read_key_doc(dir)?.0)
}

fn read_key_doc(dir: &Path) -> Result<(CacheKey, Value)> {
    let key_path = dir.join(KEY_FILE);
    let key_doc: Value = read_json(&key_path, " (is this a directory written by `mer prepare`?)")?;
    let key_value = key_doc.get("key").ok_or_else(|| anyhow!("{} has no \"key\"", key_path.display()))?;
    let format = key_value.get("format").and_then(Value::as_u64);
    if format != Some(FORMAT_VERSION as u64) {
        bail!(
            "{} is in cache format {}, this program reads format {FORMAT_VERSION}; prepare the dataset again",
            key_path.display(),
            format.map_or("unknown".to_string(), |f| f.to_string())
        );
    }
    let key: CacheKey =
        serde_json::from_value(key_value.clone()).with_context(|| format!("{}: the key cannot be read", key_path.display()))?;
    Ok((key, key_doc))
}

fn read_json(path: &Path, hint: &str) -> Result<Value> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {}{hint}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// A file name for a sample id: ASCII letters, digits, `-` and `_` stay, every other byte
/// becomes `%XX`, so distinct ids never share a file and ids may contain `/`.
fn file_stem(id: &str) -> Result<String> {
    if id.is_empty() {
        bail!("a sample id must not be empty");
    }
    let mut stem = String::with_capacity(id.len());
    for &b in id.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            stem.push(b as char);
        } else {
            stem.push_str(&format!("%{b:02X}"));
        }
    }
    // Room for ".json" and the temporary suffix within the usual 255-byte name limit.
    if stem.len() > 200 {
        bail!("sample id {id:?} is too long for a file name ({} bytes once encoded, at most 200)", stem.len());
    }
    Ok(stem)
}

/// The sample id a [`file_stem`] came from, if it is one.
fn id_of_stem(stem: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(stem.len());
    let mut rest = stem.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok().filter(|id| file_stem(id).ok().as_deref() == Some(stem))
}

/// Decodes a stored tensor and checks it: C×H×W of `shape`, finite, and hashing to `sha256`
/// (the sample's recorded `input_sha256`). Errors name `path`.
fn check_tensor(path: &Path, bytes: &[u8], shape: [usize; 3], sha256: &str) -> Result<Vec<f32>> {
    let (file_shape, values) = npy::decode(bytes).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let file_shape: [usize; 3] = file_shape
        .as_slice()
        .try_into()
        .map_err(|_| anyhow!("{}: has shape {file_shape:?}; a C×H×W tensor has three dimensions", path.display()))?;
    if file_shape != shape {
        bail!("{}: tensor shape {file_shape:?} differs from the input spec's {shape:?}", path.display());
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        bail!("{}: value {} at index {i} is not finite", path.display(), values[i]);
    }
    let digest = f32_digest(&values);
    if digest != sha256 {
        bail!(
            "{}: the tensor's SHA-256 is {digest}, but its sample records input_sha256 {sha256} (changed since it was prepared)",
            path.display()
        );
    }
    Ok(values)
}

fn is_interrupted_write(name: &OsStr) -> bool {
    is_temporary(name) || name.to_string_lossy().contains(LEGACY_TMP_MARK)
}

/// Deletes temporary files left by an interrupted run (only called under the lock).
fn remove_interrupted_writes(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.file_name().is_some_and(is_interrupted_write) && path.is_file() {
            fs::remove_file(&path).with_context(|| format!("cannot remove the interrupted write {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CacheKey {
        // A 1×1 grid gives 2 + 2 + 4 = 8 channels; small planes keep the tests fast.
        let spec = InputSpec { channels: 8, height: 4, width: 5, grid: 1, face_size: 16, ..InputSpec::skd_tstsan() };
        CacheKey::new("casme2", Taxonomy::Casme2Five, spec, CropMode::Detect, &DetectorSettings::default())
    }

    fn tensor(seed: usize) -> InputTensor {
        let data = (0..8 * 4 * 5).map(|i| ((i * 7 + seed * 13) % 97) as f32 / 97.0 - 0.25).collect();
        InputTensor { channels: 8, height: 4, width: 5, data }
    }

    /// Metadata for a sample whose tensor is `tensor(seed)`.
    fn sample(subject: &str, id: &str, seed: usize) -> PreparedSample {
        PreparedSample {
            id: id.to_string(),
            subject: subject.to_string(),
            class: id.len() % 5,
            label: "happiness".into(),
            source: format!("CASME2_RAW_selected/sub{subject}/{id}"),
            face: Some(FaceBox { x: 1, y: 2, width: 30, height: 40, score: 7.5 }),
            frames: KeyFrames { onset: 1, apex: 5, offset: 9 },
            input_sha256: tensor(seed).sha256(),
            notes: vec![],
        }
    }

    #[test]
    fn key_spec_is_valid_for_the_tests() {
        key().spec.validate().unwrap();
    }

    #[test]
    fn round_trip_in_subject_order() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PreparationCache::open(dir.path(), &key()).unwrap();
        let items = [("02", "sub02/EP01_1"), ("01", "sub01/EP09_2"), ("01", "sub01/EP03_1")];
        for (k, (s, id)) in items.iter().enumerate() {
            cache.put(&sample(s, id, k), &tensor(k)).unwrap();
        }
        let indexed = cache.finish(&serde_json::json!({ "skipped": 0 })).unwrap();
        assert_eq!(indexed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["sub01/EP03_1", "sub01/EP09_2", "sub02/EP01_1"]);
        drop(cache);

        let set = PreparedSet::load(dir.path()).unwrap();
        assert_eq!(set.key, key());
        assert_eq!(set.len(), 3);
        assert_eq!(set.shape, [8, 4, 5]);
        assert_eq!(set.data.len(), 3 * 160);
        assert_eq!(set.subjects(), ["01", "02"]);
        assert_eq!(set.samples[0], sample("01", "sub01/EP03_1", 2));
        assert_eq!(set.tensor(0), tensor(2).data.as_slice());
        assert_eq!(set.tensor(1), tensor(1).data.as_slice());
        assert_eq!(set.tensor(2), tensor(0).data.as_slice());
        assert_eq!(set.summary["skipped"], 0);
        // Nothing temporary is left behind.
        for d in [dir.path().to_path_buf(), dir.path().join(SAMPLES_DIR)] {
            let names = fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name());
            let leftovers: Vec<_> = names.filter(|n| n.to_string_lossy().starts_with('.')).collect();
            assert!(leftovers.is_empty(), "{leftovers:?}");
        }
    }

    #[test]
    fn digest_is_stable_and_sensitive() {
        let a = key();
        assert_eq!(a.digest(), key().digest());
        assert_eq!(a.digest().len(), 64);
        let mut b = key();
        b.spec.tvl1.lambda *= 2.0;
        assert_ne!(a.digest(), b.digest());
        // The detector only matters when it is used.
        let none = CacheKey::new("casme2", Taxonomy::Casme2Five, key().spec, CropMode::None, &DetectorSettings::default());
        let other = DetectorSettings { score_threshold: 4.5, ..DetectorSettings::default() };
        assert_eq!(none.digest(), CacheKey::new("casme2", Taxonomy::Casme2Five, key().spec, CropMode::None, &other).digest());
    }

    #[test]
    fn resume_keeps_earlier_samples_and_drops_interrupted_writes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = PreparationCache::open(dir.path(), &key()).unwrap();
            cache.put(&sample("01", "a", 1), &tensor(1)).unwrap();
            cache.put(&sample("01", "b", 2), &tensor(2)).unwrap();
            assert!(cache.contains("a") && !cache.contains("c"));
        }
        // An interrupted run: temporaries (the helper's, an earlier release's), and a tensor whose
        // metadata never landed.
        let samples = dir.path().join(SAMPLES_DIR);
        let temporaries =
            [samples.join(".c.npy.partial-123-0"), samples.join(".c.json.tmp-1-0"), dir.path().join(".index.json.partial-9-4")];
        for t in &temporaries {
            fs::write(t, b"partial").unwrap();
        }
        fs::write(samples.join("d.npy"), npy::encode(&[8, 4, 5], &tensor(4).data)).unwrap();

        let cache = PreparationCache::open(dir.path(), &key()).unwrap();
        assert!(cache.contains("a") && cache.contains("b"));
        assert!(!cache.contains("c") && !cache.contains("d"));
        assert!(cache.damaged().is_empty() && cache.unreadable_index().is_none(), "{:?}", cache.damaged());
        for t in &temporaries {
            assert!(!t.exists(), "{}", t.display());
        }
        cache.put(&sample("01", "c", 3), &tensor(3)).unwrap();
        let indexed = cache.finish(&Value::Null).unwrap();
        assert_eq!(indexed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        drop(cache);
        assert_eq!(PreparedSet::load(dir.path()).unwrap().tensor(1), tensor(2).data.as_slice());
    }

    #[test]
    fn a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = PreparationCache::open(dir.path(), &key()).unwrap();
        let err = PreparationCache::open(dir.path(), &key()).err().unwrap().to_string();
        assert!(err.contains("another preparation run"), "{err}");
    }

    #[test]
    fn a_different_key_is_refused_naming_the_fields() {
        let dir = tempfile::tempdir().unwrap();
        drop(PreparationCache::open(dir.path(), &key()).unwrap());
        let mut other = key();
        other.spec.face_size = 32;
        other.dataset = "samm".into();
        let err = PreparationCache::open(dir.path(), &other).err().unwrap().to_string();
        assert!(err.contains("spec.face_size: cache has 16, requested 32"), "{err}");
        assert!(err.contains("dataset: cache has \"casme2\", requested \"samm\""), "{err}");
        assert!(err.contains("another output directory") && err.contains(&dir.path().display().to_string()), "{err}");
        assert!(!err.contains("taxonomy"), "{err}");

        let crop = CacheKey::new("casme2", Taxonomy::Casme2Five, key().spec, CropMode::None, &DetectorSettings::default());
        let err = PreparationCache::open(dir.path(), &crop).err().unwrap().to_string();
        assert!(err.contains("crop: cache has \"detect\", requested \"none\""), "{err}");
        assert!(err.contains("detector: cache has {") && err.contains("requested null"), "{err}");
    }

    #[test]
    fn put_checks_shape_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PreparationCache::open(dir.path(), &key()).unwrap();
        let wrong = InputTensor { channels: 8, height: 5, width: 4, data: vec![0.0; 160] };
        let err = cache.put(&sample("01", "x", 0), &wrong).unwrap_err().to_string();
        assert!(err.contains("sample x") && err.contains("[8, 5, 4]") && err.contains("[8, 4, 5]"), "{err}");
        let mut bad = tensor(0);
        bad.data[17] = f32::NAN;
        let err = cache.put(&sample("01", "y", 0), &bad).unwrap_err().to_string();
        assert!(err.contains("index 17"), "{err}");
        let mut unknown = sample("01", "z", 0);
        unknown.class = 5;
        let err = cache.put(&unknown, &tensor(0)).unwrap_err().to_string();
        assert!(err.contains("sample z") && err.contains("class 5") && err.contains("casme2-5"), "{err}");
        assert!(!cache.contains("x") && !cache.contains("y") && !cache.contains("z"));
        assert!(cache.put(&sample("01", "", 0), &tensor(0)).is_err());
    }

    #[test]
    fn an_edited_index_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PreparationCache::open(dir.path(), &key()).unwrap();
        cache.put(&sample("01", "a", 0), &tensor(0)).unwrap();
        cache.finish(&Value::Null).unwrap();
        drop(cache);
        let index = dir.path().join(INDEX_FILE);
        let text = fs::read_to_string(&index).unwrap();
        fs::write(&index, text.replace("\"class\": 1", "\"class\": 7")).unwrap();
        let err = format!("{:#}", PreparedSet::load(dir.path()).unwrap_err());
        assert!(err.contains("index.json") && err.contains("class 7"), "{err}");
        fs::write(&index, text.replace(&key().digest(), "0123")).unwrap();
        let err = format!("{:#}", PreparedSet::load(dir.path()).unwrap_err());
        assert!(err.contains("digests differ"), "{err}");
    }

    #[test]
    fn damaged_tensors_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PreparationCache::open(dir.path(), &key()).unwrap();
        cache.put(&sample("01", "sub01/EP01", 0), &tensor(0)).unwrap();
        cache.put(&sample("02", "sub02/EP01", 1), &tensor(1)).unwrap();
        cache.finish(&Value::Null).unwrap();
        drop(cache);
        let file = dir.path().join(SAMPLES_DIR).join("sub02%2FEP01.npy");
        let good = fs::read(&file).unwrap();

        fs::write(&file, &good[..good.len() - 10]).unwrap();
        let err = format!("{:#}", PreparedSet::load(dir.path()).unwrap_err());
        assert!(err.contains("sub02%2FEP01.npy") && err.contains("truncated"), "{err}");

        fs::write(&file, &good[..40]).unwrap();
        let err = format!("{:#}", PreparedSet::load(dir.path()).unwrap_err());
        assert!(err.contains("sub02%2FEP01.npy") && err.contains("header"), "{err}");

        fs::write(&file, b"garbage").unwrap();
        let err = format!("{:#}", PreparedSet::load(dir.path()).unwrap_err());
        assert!(err.contains("sub02%2FEP01.npy") && err.contains("not a .npy"), "{err}");

        let mut nan = tensor(1);
        nan.data[3] = f32::INFINITY;
        fs::write(&file, npy::encode(&[8, 4, 5], &nan.data)).unwrap();
        let err = format!("{:#}", PreparedSet::load(dir.path()).unwrap_err());
        assert!(err.contains("sub02%2FEP01.npy") && err.contains("index 3"), "{err}");

        fs::write(&file, npy::encode(&[8, 5, 4], &tensor(1).data)).unwrap();
        let err = format!("{:#}", PreparedSet::load(dir.path()).unwrap_err());
        assert!(err.contains("sub02%2FEP01.npy") && err.contains("[8, 5, 4]"), "{err}");

        fs::write(&file, npy::encode(&[8, 20], &tensor(1).data)).unwrap();
        let err = format!("{:#}", PreparedSet::load(dir.path()).unwrap_err());
        assert!(err.contains("sub02%2FEP01.npy") && err.contains("has shape [8, 20]") && err.contains("three dimensions"), "{err}");

        // Well-formed, right shape, finite, but not the tensor that was prepared.
        fs::write(&file, npy::encode(&[8, 4, 5], &tensor(7).data)).unwrap();
        let err = format!("{:#}", PreparedSet::load(dir.path()).unwrap_err());
        assert!(err.contains("sub02%2FEP01.npy") && err.contains("SHA-256") && err.contains(&tensor(1).sha256()), "{err}");

        fs::remove_file(&file).unwrap();
        let err = format!("{:#}", PreparedSet::load(dir.path()).unwrap_err());
        assert!(err.contains("sub02%2FEP01.npy") && err.contains("sub02/EP01"), "{err}");
    }

    #[test]
    fn resume_checks_every_stored_sample_and_removes_the_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PreparationCache::open(dir.path(), &key()).unwrap();
        for (k, id) in ["sub01/ok", "sub01/cut", "sub01/other", "sub01/garbled", "sub01/gone", "sub01/nan"].iter().enumerate() {
            cache.put(&sample("01", id, k), &tensor(k)).unwrap();
        }
        cache.finish(&Value::Null).unwrap();
        drop(cache);
        let samples = dir.path().join(SAMPLES_DIR);
        let file = |stem: &str, ext: &str| samples.join(format!("sub01%2F{stem}.{ext}"));
        let bytes = fs::read(file("cut", "npy")).unwrap();
        fs::write(file("cut", "npy"), &bytes[..bytes.len() / 2]).unwrap();
        fs::write(file("other", "npy"), npy::encode(&[8, 4, 5], &tensor(9).data)).unwrap();
        fs::write(file("garbled", "json"), "{ not json").unwrap();
        fs::remove_file(file("gone", "npy")).unwrap();
        let mut nan = tensor(5);
        nan.data[0] = f32::NAN;
        fs::write(file("nan", "npy"), npy::encode(&[8, 4, 5], &nan.data)).unwrap();

        let cache = PreparationCache::open(dir.path(), &key()).unwrap();
        let damaged: Vec<(&str, &str)> = cache.damaged().iter().map(|d| (d.id.as_str(), d.reason.as_str())).collect();
        let ids: Vec<&str> = damaged.iter().map(|d| d.0).collect();
        assert_eq!(ids, ["sub01/cut", "sub01/garbled", "sub01/gone", "sub01/nan", "sub01/other"], "{damaged:?}");
        assert!(damaged[0].1.contains("sub01%2Fcut.npy") && damaged[0].1.contains("truncated"), "{damaged:?}");
        assert!(damaged[1].1.contains("not sample metadata"), "{damaged:?}");
        assert!(damaged[2].1.contains("sub01%2Fgone.npy"), "{damaged:?}");
        assert!(damaged[3].1.contains("not finite"), "{damaged:?}");
        assert!(damaged[4].1.contains("SHA-256"), "{damaged:?}");
        // The damaged ones are gone, to be prepared again; the intact one is kept.
        assert!(cache.contains("sub01/ok"));
        for stem in ["cut", "other", "garbled", "gone", "nan"] {
            assert!(!cache.contains(&format!("sub01/{stem}")), "{stem}");
            assert!(!file(stem, "json").exists() && !file(stem, "npy").exists(), "{stem}");
        }
        assert!(cache.unreadable_index().is_none());
        cache.put(&sample("01", "sub01/cut", 1), &tensor(1)).unwrap();
        assert_eq!(cache.finish(&Value::Null).unwrap().len(), 2);
        drop(cache);
        assert_eq!(PreparedSet::load(dir.path()).unwrap().tensor(0), tensor(1).data.as_slice());
        // Nothing is damaged any more.
        assert!(PreparationCache::open(dir.path(), &key()).unwrap().damaged().is_empty());
    }

    #[test]
    fn an_unreadable_index_is_reported_before_it_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PreparationCache::open(dir.path(), &key()).unwrap();
        cache.put(&sample("01", "a", 0), &tensor(0)).unwrap();
        cache.finish(&Value::Null).unwrap();
        drop(cache);
        assert!(PreparationCache::open(dir.path(), &key()).unwrap().unreadable_index().is_none());
        let index = dir.path().join(INDEX_FILE);
        let good = fs::read_to_string(&index).unwrap();
        for (text, expected) in [
            ("garbage".to_string(), "not valid JSON"),
            ("{\"samples\": []}".to_string(), "no \"key\""),
            (good.replace("\"casme2\"", "\"samm\""), "another preparation (dataset: cache has \"samm\""),
            (good.replace("\"class\": ", "\"klass\": "), "\"samples\" cannot be read"),
        ] {
            fs::write(&index, &text).unwrap();
            let cache = PreparationCache::open(dir.path(), &key()).unwrap();
            let problem = cache.unreadable_index().unwrap_or_else(|| panic!("{text}"));
            assert!(problem.contains(expected), "{problem}");
            cache.finish(&Value::Null).unwrap();
            drop(cache);
            assert_eq!(PreparedSet::load(dir.path()).unwrap().len(), 1);
        }
    }

    #[test]
    fn put_refuses_metadata_that_does_not_describe_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PreparationCache::open(dir.path(), &key()).unwrap();
        let err = cache.put(&sample("01", "a", 1), &tensor(2)).unwrap_err().to_string();
        assert!(err.contains("sample a") && err.contains(&tensor(2).sha256()), "{err}");
        assert!(!cache.contains("a"));
    }

    #[test]
    fn unfinished_and_foreign_directories_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let err = format!("{:#}", PreparedSet::load(dir.path()).unwrap_err());
        assert!(err.contains("cache.json") && err.contains("mer prepare"), "{err}");
        let cache = PreparationCache::open(dir.path(), &key()).unwrap();
        cache.put(&sample("01", "a", 0), &tensor(0)).unwrap();
        let err = format!("{:#}", PreparedSet::load(dir.path()).unwrap_err());
        assert!(err.contains("index.json") && err.contains("did not finish"), "{err}");
    }

    #[test]
    fn ids_become_distinct_safe_file_names() {
        assert_eq!(file_stem("sub01/EP02_01f").unwrap(), "sub01%2FEP02_01f");
        assert_ne!(file_stem("a/b").unwrap(), file_stem("a_b").unwrap());
        assert_eq!(file_stem("..").unwrap(), "%2E%2E");
        assert!(file_stem("").is_err());
        assert!(file_stem(&"x".repeat(201)).is_err());
        for id in ["sub01/EP02_01f", "..", "a b%c", "é"] {
            assert_eq!(id_of_stem(&file_stem(id).unwrap()).as_deref(), Some(id));
        }
        // Not what file_stem makes: lower-case hex, an encoded safe byte, a cut escape.
        for stem in ["a%2f", "%41", "a%2"] {
            assert_eq!(id_of_stem(stem), None, "{stem}");
        }
    }

    #[test]
    fn concurrent_puts_from_rayon() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PreparationCache::open(dir.path(), &key()).unwrap();
        (0..64usize).into_par_iter().for_each(|k| {
            cache.put(&sample(&format!("{:02}", k % 7), &format!("s{k:02}"), k), &tensor(k)).unwrap();
        });
        // The same sample written by several threads at once still ends up complete.
        (0..8usize).into_par_iter().for_each(|_| cache.put(&sample("00", "same", 99), &tensor(99)).unwrap());
        assert_eq!(cache.finish(&Value::Null).unwrap().len(), 65);
        drop(cache);
        let set = PreparedSet::load(dir.path()).unwrap();
        for (i, s) in set.samples.iter().enumerate() {
            let k = if s.id == "same" { 99 } else { s.id[1..].parse().unwrap() };
            assert_eq!(set.tensor(i), tensor(k).data.as_slice(), "{}", s.id);
        }
    }
}
