//! The device's models on disk: the active one, earlier ones kept for rollback, and uploads in
//! progress.
//!
//! ```text
//! DIR/state.json         {"active": "<sha256>", "previous": ["<sha256>", ...],  (newest first)
//!                         "probation": {...}, "last_probation": {...}}
//! DIR/<sha256>.merb      complete bundles: the active one and those kept for rollback
//! DIR/staging/<sha256>.part   uploads, complete or not
//! ```
//!
//! Every change to what is active is one atomic step: the bundle is fsynced and renamed into
//! place first, then `state.json` is replaced through `mer_shared::atomic_file` (temporary file,
//! fsync, rename, fsync of the directory). A crash at any point leaves either the old state or
//! the new one, each naming complete bundles. Temporaries left by a crash are removed on open;
//! bundles no state names are removed after the next change of state.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use tracing::warn;

use mer_shared::atomic_file::{self, AtomicFile, is_temporary, sync_dir};
use mer_shared::bundle::{BundleFile, BundleHead, PublicKey};
use mer_shared::classifier::{Classifier, Trust};
use mer_shared::manifest::{Manifest, PREPROCESSING_VERSION};
use mer_shared::push::{Digest, ModelInfo, digest_hex, parse_digest};
use mer_shared::{Error, Result};
use serde::{Deserialize, Serialize};

const STATE: &str = "state.json";

/// A write cut short: the helper's temporaries, and the names earlier releases used.
fn is_interrupted_write(name: &OsStr) -> bool {
    is_temporary(name) || name == "state.json.tmp" || name.as_encoded_bytes().ends_with(b".merb.tmp")
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub active: Option<String>,
    /// Earlier active models, newest first.
    pub previous: Vec<String>,
    /// The active model is on probation since this time: found at a start, the device stopped
    /// before the model passed, and the model before it runs instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probation: Option<Trial>,
    /// How the last probation ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probation: Option<ProbationRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub model: String,
    pub version: String,
    pub since_unix_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbationRecord {
    pub model: String,
    pub version: String,
    pub passed: bool,
    /// Why it failed; empty when it passed.
    pub reason: String,
    pub at_unix_ms: i64,
}

pub fn unix_ms_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Points in an activation where a test can stop it, as a crash there would.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    BundleInPlace,
    StateWritten,
    StateRenamed,
}

/// A verified model ready to run.
pub struct Verified {
    pub classifier: Classifier,
    pub info: ModelInfo,
}

pub struct ModelStore {
    dir: PathBuf,
    trusted: Vec<PublicKey>,
    /// Earlier models kept for rollback.
    keep: usize,
    threads: usize,
    /// Accept models whose training inputs this device cannot reproduce (`[model]
    /// allow_foreign_inputs`).
    allow_foreign_inputs: bool,
    state: State,
    #[cfg(test)]
    pub crash_at: Option<Step>,
}

impl ModelStore {
    /// Opens (creating) the store in `dir`, removing what an interrupted activation left.
    pub fn open(dir: &Path, trusted: Vec<PublicKey>, keep: usize, threads: usize) -> Result<ModelStore> {
        fs::create_dir_all(dir.join("staging")).map_err(|e| Error::io(dir, e))?;
        for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let leftover = entry.map_err(|e| Error::io(dir, e))?.path();
            if leftover.file_name().is_some_and(is_interrupted_write) && leftover.is_file() {
                fs::remove_file(&leftover).map_err(|e| Error::io(&leftover, e))?;
            }
        }
        let path = dir.join(STATE);
        let state = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Data {
                path: path.clone(),
                reason: format!("{e}; the store's state file is damaged: remove it to start again from the configured model"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(Error::io(&path, e)),
        };
        Ok(ModelStore {
            dir: dir.to_path_buf(),
            trusted,
            keep,
            threads,
            allow_foreign_inputs: false,
            state,
            #[cfg(test)]
            crash_at: None,
        })
    }

    /// Also accept models whose training inputs this device cannot reproduce.
    pub fn allowing_foreign_inputs(self, allow: bool) -> ModelStore {
        ModelStore { allow_foreign_inputs: allow, ..self }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn bundle_path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.merb"))
    }

    pub fn staging_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("staging").join(format!("{sha256}.part"))
    }

    /// The bundle with this digest, kept or fully staged, checked as before activation.
    pub fn verify(&self, sha256: &Digest) -> Result<Verified> {
        let hex = digest_hex(sha256);
        let kept = self.bundle_path(&hex);
        let path = if kept.exists() { kept } else { self.staging_path(&hex) };
        if !path.exists() {
            return Err(Error::Push(format!("the device holds no bundle {hex}; push it first")));
        }
        let file = BundleFile::open(&path)?;
        check_digest(&file.sha256(), sha256)?;
        let classifier = Classifier::from_bundle_file(&file, Trust::Keys(&self.trusted))?.with_threads(self.threads);
        accept(classifier, hex, file.head(), self.allow_foreign_inputs)
    }

    /// The active model, falling back to earlier ones if it no longer verifies. `None` when the
    /// store has none that does. A model still on probation (the device stopped before it
    /// passed) is failed first, so the one before it runs.
    pub fn load_active(&mut self) -> Result<Option<Verified>> {
        if self.state.probation.as_ref().is_some_and(|t| Some(&t.model) == self.state.active.as_ref()) {
            let model = self.state.active.clone().unwrap_or_default();
            warn!("the model {model} was still on probation when merd stopped; going back to the one before it");
            self.end_probation(Err("merd stopped before the probation was over (killed, crashed or powered off)".into()))?;
        }
        let candidates: Vec<String> = self.state.active.iter().chain(&self.state.previous).cloned().collect();
        for (i, hex) in candidates.iter().enumerate() {
            let verified = parse_digest(hex).and_then(|d| self.verify(&d));
            match verified {
                Ok(v) => {
                    if i > 0 {
                        warn!("using the earlier model {} instead", v.info.version);
                        let previous = candidates[i + 1..].to_vec();
                        self.write_state(State { active: Some(hex.clone()), previous, probation: None, ..self.state.clone() })?;
                    }
                    return Ok(Some(v));
                }
                Err(e) => warn!("the stored model {hex} cannot be used: {e}"),
            }
        }
        Ok(None)
    }

    /// Makes a verified bundle the active model; the active one becomes the newest previous.
    pub fn activate(&mut self, sha256: &Digest) -> Result<&State> {
        self.activate_as(sha256, None)
    }

    /// [`ModelStore::activate`], with the new model on probation in the same step. A model
    /// still on probation is not kept to return to: the one that passed before it is.
    pub fn activate_on_probation(&mut self, sha256: &Digest, version: &str) -> Result<&State> {
        self.activate_as(sha256, Some(version))
    }

    /// With a version, on probation.
    fn activate_as(&mut self, sha256: &Digest, probation_of: Option<&str>) -> Result<&State> {
        let hex = digest_hex(sha256);
        if self.state.active.as_deref() == Some(hex.as_str()) {
            return Ok(&self.state);
        }
        let kept = self.bundle_path(&hex);
        if !kept.exists() {
            let staged = self.staging_path(&hex);
            File::open(&staged).and_then(|f| f.sync_all()).map_err(|e| Error::io(&staged, e))?;
            fs::rename(&staged, &kept).map_err(|e| Error::io(&kept, e))?;
            sync_dir(&self.dir)?;
        }
        self.crash_point_after(Step::BundleInPlace)?;
        let unproven = self.state.probation.as_ref().map(|t| t.model.clone());
        let mut previous: Vec<String> =
            self.state.active.iter().chain(&self.state.previous).filter(|p| **p != hex && Some(*p) != unproven.as_ref()).cloned().collect();
        previous.truncate(self.keep);
        let probation =
            probation_of.map(|version| Trial { model: hex.clone(), version: version.to_string(), since_unix_ms: unix_ms_now() });
        self.write_state(State { active: Some(hex), previous, probation, ..self.state.clone() })?;
        self.prune()?;
        Ok(&self.state)
    }

    /// Makes the newest previous model active again; the current one is dropped from the history
    /// (and its probation, if it was on one, ends as failed by command).
    pub fn rollback(&mut self) -> Result<(Digest, &State)> {
        self.go_back("rolled back by command".into())
    }

    /// Ends the active model's probation: kept when it passed, else replaced by the model before
    /// it. Returns the model that runs now.
    pub fn end_probation(&mut self, outcome: std::result::Result<(), String>) -> Result<Digest> {
        let Some(trial) = self.state.probation.clone() else {
            return Err(Error::Push("no model is on probation".into()));
        };
        match outcome {
            Ok(()) => {
                let record = ProbationRecord {
                    model: trial.model.clone(),
                    version: trial.version,
                    passed: true,
                    reason: String::new(),
                    at_unix_ms: unix_ms_now(),
                };
                self.write_state(State { probation: None, last_probation: Some(record), ..self.state.clone() })?;
                parse_digest(&trial.model)
            }
            Err(reason) => Ok(self.go_back(reason)?.0),
        }
    }

    fn go_back(&mut self, reason: String) -> Result<(Digest, &State)> {
        let Some(target) = self.state.previous.first().cloned() else {
            return Err(Error::Push("there is no earlier model to go back to".into()));
        };
        let digest = parse_digest(&target)?;
        let previous = self.state.previous[1..].to_vec();
        let ended = self.state.probation.as_ref().map(|t| ProbationRecord {
            model: t.model.clone(),
            version: t.version.clone(),
            passed: false,
            reason,
            at_unix_ms: unix_ms_now(),
        });
        let last_probation = ended.or_else(|| self.state.last_probation.clone());
        self.write_state(State { active: Some(target), previous, probation: None, last_probation })?;
        self.prune()?;
        Ok((digest, &self.state))
    }

    /// Takes in a bundle from outside the store (the configured model of a first start): checked
    /// where it is, then copied in and made active.
    pub fn adopt(&mut self, path: &Path) -> Result<Verified> {
        let file = BundleFile::open(path)?;
        let sha256 = file.sha256();
        let classifier = Classifier::from_bundle_file(&file, Trust::Keys(&self.trusted))?.with_threads(self.threads);
        let verified = accept(classifier, digest_hex(&sha256), file.head(), self.allow_foreign_inputs)?;
        atomic_file::copy(path, self.bundle_path(&digest_hex(&sha256)))?;
        self.activate(&sha256)?;
        Ok(verified)
    }

    /// What the store holds, for status reports; the model itself is not read.
    pub fn describe(&self, sha256: &str) -> Option<ModelInfo> {
        let head = BundleHead::read(&self.bundle_path(sha256)).ok()?;
        let manifest = Manifest::from_json(head.manifest()).ok()?;
        Some(model_info(sha256.to_string(), &manifest, &head))
    }

    fn write_state(&mut self, state: State) -> Result<()> {
        let path = self.dir.join(STATE);
        let mut file = AtomicFile::create(&path)?;
        file.write_all(&serde_json::to_vec_pretty(&state).expect("the state always encodes")).map_err(|e| Error::io(&path, e))?;
        if let Err(crash) = self.crash_point_after(Step::StateWritten) {
            // As a real crash would, leave the temporary behind for the next open to clear.
            std::mem::forget(file);
            return Err(crash);
        }
        file.commit()?;
        self.state = state;
        self.crash_point_after(Step::StateRenamed)
    }

    /// Removes bundles the state no longer names (kept until now: a crash may have left the one
    /// a retried activation needs) and temporary files.
    fn prune(&self) -> Result<()> {
        let named: BTreeSet<String> = self.state.active.iter().chain(&self.state.previous).map(|h| format!("{h}.merb")).collect();
        let entries = fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if (name.ends_with(".merb") && !named.contains(&name)) || is_interrupted_write(entry.file_name().as_os_str()) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    #[cfg(test)]
    fn crash_point_after(&self, step: Step) -> Result<()> {
        if self.crash_at == Some(step) {
            return Err(Error::Push(format!("simulated crash after {step:?}")));
        }
        Ok(())
    }
    #[cfg(not(test))]
    fn crash_point_after(&self, _step: Step) -> Result<()> {
        Ok(())
    }
}

/// Whether the bundle's bytes are the ones announced (by the sender, or by the file's name in
/// the store).
fn check_digest(got: &Digest, announced: &Digest) -> Result<()> {
    if got != announced {
        return Err(Error::Push(format!(
            "the bundle's bytes have SHA-256 {}, not the {} announced (damaged in transit or on disk)",
            digest_hex(got),
            digest_hex(announced)
        )));
    }
    Ok(())
}

/// A model whose signature, manifest and probe have been checked, if the device's
/// preprocessing can make its input.
fn accept(classifier: Classifier, sha256: String, head: &BundleHead, allow_foreign_inputs: bool) -> Result<Verified> {
    check_compatible(classifier.manifest(), allow_foreign_inputs).map_err(|e| Error::Push(e.to_string()))?;
    let info = model_info(sha256, classifier.manifest(), head);
    Ok(Verified { classifier, info })
}

/// Whether this device can run `manifest`'s model on inputs it computes itself: the same
/// preprocessing version, and training inputs that version reproduces (`mer-shared`). A model
/// trained on inputs made elsewhere runs only when `allow_foreign_inputs` says so.
pub fn check_compatible(manifest: &Manifest, allow_foreign_inputs: bool) -> Result<()> {
    if manifest.preprocessing_version != PREPROCESSING_VERSION {
        return Err(Error::Model(format!(
            "model {} was made with preprocessing version {}; this device implements version {PREPROCESSING_VERSION}: \
             export it again with this release (or update merd if the model is newer)",
            manifest.version, manifest.preprocessing_version
        )));
    }
    match manifest.inputs.foreign_reason() {
        Some(why) if !allow_foreign_inputs => Err(Error::Model(format!(
            "model {} is refused: {why}; to run it anyway, with every event marked, set allow_foreign_inputs = true under [model] \
             (merd classify-clip: --allow-foreign-inputs)",
            manifest.version
        ))),
        _ => Ok(()),
    }
}

fn model_info(sha256: String, manifest: &Manifest, head: &BundleHead) -> ModelInfo {
    ModelInfo {
        sha256,
        version: manifest.version.clone(),
        architecture: manifest.model_name(),
        classes: manifest.classes.clone(),
        signer: head.signer_key_id(),
        bytes: head.len(),
    }
}
