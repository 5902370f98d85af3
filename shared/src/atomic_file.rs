//! Writing a file so that its path holds either the old content or the complete new one, never a
//! torn mixture and never a stray temporary: every result file of `mer` and `merd` goes through
//! here.
//!
//! The bytes go to a temporary file beside the target, `.NAME.partial-PID-N` (same directory, so
//! the rename stays on one file system; PID and a per-process counter keep concurrent writers
//! apart). It is synced, renamed over the target, and the directory is synced so that the rename
//! itself survives a power cut. On any failure the temporary is removed and the error names the
//! target. A crash can still leave a temporary behind; [`is_temporary`] recognises those names so
//! that whoever owns the directory can clear them.

use std::ffi::{OsStr, OsString};
use std::fmt::Display;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Between the target's name and `PID-N` in a temporary's name.
const MARK: &str = ".partial-";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces (or creates) `path` with `bytes`, atomically.
pub fn write(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes).map_err(|e| Error::io(path, e))?;
    file.commit()
}

/// Copies `from` to `to`, atomically at `to`. Returns the number of bytes copied.
pub fn copy(from: impl AsRef<Path>, to: impl AsRef<Path>) -> Result<u64> {
    let (from, to) = (from.as_ref(), to.as_ref());
    let mut source = File::open(from).map_err(|e| Error::io(from, e))?;
    let mut file = AtomicFile::create(to)?;
    let n = io::copy(&mut source, &mut file)
        .map_err(|e| Error::io(to, io::Error::new(e.kind(), format!("copying {}: {e}", from.display()))))?;
    file.commit()?;
    Ok(n)
}

/// For writers that insist on a path of their own (a library that opens the file itself):
/// `produce` writes the complete content at the temporary path it is given, which is then synced
/// and renamed over `path` like any other.
pub fn write_via<E: Display>(path: impl AsRef<Path>, produce: impl FnOnce(&Path) -> std::result::Result<(), E>) -> Result<()> {
    let path = path.as_ref();
    let mut file = AtomicFile::create(path)?;
    // The producer opens the file itself; this handle would only hold a stale view of it.
    drop(file.file.take());
    produce(&file.temp).map_err(|e| Error::io(path, io::Error::other(e.to_string())))?;
    let reopened = File::open(&file.temp).map_err(|e| Error::io(path, e))?;
    file.finish(reopened)
}

/// Checks, before anything is written, that `path` can become a file: it names a file, is not a
/// directory (or anything else that is not a plain file), and its folder exists. Commands call it
/// for every output before their first write, so a bad argument leaves nothing behind.
pub fn check_target(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let refuse = |kind: ErrorKind, reason: String| Err(Error::io(path, io::Error::new(kind, reason)));
    if path.file_name().is_none() || path.as_os_str().as_encoded_bytes().last() == Some(&b'/') {
        return refuse(ErrorKind::InvalidInput, "names a folder, not a file; give the path of the file to write".into());
    }
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => return refuse(ErrorKind::IsADirectory, "is a folder; give the path of the file to write".into()),
        Ok(m) if !m.is_file() => return refuse(ErrorKind::InvalidInput, "exists and is not a plain file; refusing to replace it".into()),
        _ => {}
    }
    let parent = folder_of(path);
    match fs::metadata(parent) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => refuse(ErrorKind::NotADirectory, format!("{} is not a folder", parent.display())),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            refuse(ErrorKind::NotFound, format!("the folder {} does not exist; create it first", parent.display()))
        }
        Err(e) => refuse(e.kind(), format!("cannot use the folder {}: {e}", parent.display())),
    }
}

/// Whether a file name is a temporary of this module (`.NAME.partial-PID-N`), i.e. an interrupted
/// write when no writer is running.
pub fn is_temporary(name: &OsStr) -> bool {
    let Some(rest) = name.as_encoded_bytes().strip_prefix(b".") else { return false };
    let Some(at) = rest.windows(MARK.len()).rposition(|w| w == MARK.as_bytes()) else { return false };
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    let suffix = &rest[at + MARK.len()..];
    at > 0 && suffix.splitn(2, |&b| b == b'-').map(digits).eq([true, true])
}

/// Syncs a directory, so that a rename or a new file in it survives a power cut.
pub fn sync_dir(dir: impl AsRef<Path>) -> Result<()> {
    let dir = dir.as_ref();
    match File::open(dir).and_then(|d| d.sync_all()) {
        Ok(()) => Ok(()),
        // Some file systems (network, FUSE) cannot sync a directory; the rename has happened.
        Err(e) if matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::Unsupported) => Ok(()),
        Err(e) => Err(Error::io(dir, e)),
    }
}

fn folder_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// How [`AtomicFile`] creates its file; `AtomicFile::create` is `Options::new().create`.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    replace: bool,
    mode: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}

impl Options {
    /// Replace an existing file, permissions kept; new files get the default permissions.
    pub fn new() -> Options {
        Options { replace: true, mode: None }
    }

    /// With `false`, an existing target is never replaced: [`Options::create`] and
    /// [`AtomicFile::commit`] fail with "already exists" instead (for secrets that cannot be
    /// recovered once overwritten).
    pub fn replace(self, replace: bool) -> Options {
        Options { replace, ..self }
    }

    /// Unix permission bits of the new file, set when the temporary is created (so a secret is
    /// never readable by others, not even half-written). Ignored elsewhere.
    pub fn mode(self, mode: u32) -> Options {
        Options { mode: Some(mode), ..self }
    }

    pub fn create(self, path: impl AsRef<Path>) -> Result<AtomicFile> {
        let target = path.as_ref().to_path_buf();
        check_target(&target)?;
        if !self.replace && fs::symlink_metadata(&target).is_ok() {
            return Err(already_exists(&target));
        }
        let mut attempts = 0;
        let (temp, file) = loop {
            let temp = temp_path(&target);
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            if let Some(mode) = self.mode {
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
            }
            match options.open(&temp) {
                Ok(file) => break (temp, file),
                // A crashed process with the same PID left this name; take the next one.
                Err(e) if e.kind() == ErrorKind::AlreadyExists && attempts < 100 => attempts += 1,
                Err(e) => return Err(Error::io(&target, e)),
            }
        };
        let atomic = AtomicFile { target, temp, file: Some(BufWriter::new(file)), replace: self.replace, committed: false };
        if self.mode.is_none()
            && let Ok(meta) = fs::metadata(&atomic.target)
        {
            // A replaced file keeps its permissions (someone may have restricted them).
            fs::set_permissions(&atomic.temp, meta.permissions()).map_err(|e| Error::io(&atomic.target, e))?;
        }
        Ok(atomic)
    }
}

fn temp_path(target: &Path) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = OsString::from(".");
    name.push(target.file_name().expect("check_target ensures a file name"));
    name.push(format!("{MARK}{}-{n}", std::process::id()));
    target.with_file_name(name)
}

fn already_exists(target: &Path) -> Error {
    Error::io(target, io::Error::new(ErrorKind::AlreadyExists, "already exists; refusing to overwrite it"))
}

/// A file being written under a temporary name; [`AtomicFile::commit`] puts it in place. Dropped
/// without a commit (an error on the way, a panic), it removes its temporary and the target keeps
/// its old content.
#[derive(Debug)]
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    file: Option<BufWriter<File>>,
    replace: bool,
    committed: bool,
}

impl AtomicFile {
    /// Starts replacing (or creating) `path`. Fails at once when `path` cannot become a file
    /// (see [`check_target`]).
    pub fn create(path: impl AsRef<Path>) -> Result<AtomicFile> {
        Options::new().create(path)
    }

    pub fn options() -> Options {
        Options::new()
    }

    /// The file this will become.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Syncs the content and renames it over the target, then syncs the directory.
    pub fn commit(mut self) -> Result<()> {
        let writer = self.file.take().expect("the file is open until commit");
        let file = writer.into_inner().map_err(|e| Error::io(&self.target, e.into_error()))?;
        self.finish(file)
    }

    fn finish(&mut self, file: File) -> Result<()> {
        file.sync_all().map_err(|e| Error::io(&self.target, e))?;
        drop(file);
        if self.replace {
            fs::rename(&self.temp, &self.target).map_err(|e| Error::io(&self.target, e))?;
        } else {
            self.place_new()?;
        }
        self.committed = true;
        sync_dir(folder_of(&self.target))
    }

    /// Moves the temporary to a target that must not exist: a hard link fails rather than
    /// replace, where a rename would replace silently.
    fn place_new(&self) -> Result<()> {
        match fs::hard_link(&self.temp, &self.target) {
            Ok(()) => {
                let _ = fs::remove_file(&self.temp);
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(already_exists(&self.target)),
            // File systems without hard links: check, then rename (a narrow race, not a torn file).
            Err(_) if fs::symlink_metadata(&self.target).is_ok() => Err(already_exists(&self.target)),
            Err(_) => fs::rename(&self.temp, &self.target).map_err(|e| Error::io(&self.target, e)),
        }
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().expect("the file is open until commit").write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.as_mut().expect("the file is open until commit").write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("the file is open until commit").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            drop(self.file.take());
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn writes_and_replaces_leaving_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.json");
        write(&path, b"first").unwrap();
        write(&path, b"second, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second, longer");
        assert_eq!(names(dir.path()), ["results.json"]);
        // A bare file name goes to the current directory's folder ".", which exists.
        check_target("plain-name.json").unwrap();
    }

    #[test]
    fn a_folder_target_fails_naming_it_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        fs::create_dir(&target).unwrap();
        let err = write(&target, b"data").unwrap_err().to_string();
        assert!(err.contains(&target.display().to_string()) && err.contains("is a folder"), "{err}");
        assert_eq!(names(dir.path()), ["out"]);
        assert!(names(&target).is_empty());
        let err = write(format!("{}/", dir.path().join("new").display()), b"data").unwrap_err().to_string();
        assert!(err.contains("names a folder"), "{err}");
        assert_eq!(names(dir.path()), ["out"]);
    }

    #[test]
    fn a_missing_or_wrong_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = write(dir.path().join("no/such/x.png"), b"png").unwrap_err().to_string();
        assert!(err.contains("no/such/x.png") && err.contains("folder") && err.contains("does not exist"), "{err}");
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        let err = AtomicFile::create(file.join("x.flo")).unwrap_err().to_string();
        assert!(err.contains("is not a folder"), "{err}");
        assert_eq!(names(dir.path()), ["file"]);
    }

    #[test]
    fn an_uncommitted_file_is_removed_and_the_old_content_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.merb");
        write(&path, b"old").unwrap();
        {
            let mut file = AtomicFile::create(&path).unwrap();
            file.write_all(b"half of the new").unwrap();
            file.flush().unwrap();
            let during = names(dir.path());
            assert_eq!(during.len(), 2, "{during:?}");
            let temp = during.iter().find(|n| *n != "model.merb").unwrap();
            assert!(temp.starts_with(".model.merb.partial-") && is_temporary(OsStr::new(temp)), "{temp}");
        }
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["model.merb"]);
    }

    #[test]
    fn temporary_names_are_recognised_and_nothing_else() {
        for name in [".a.npy.partial-12-0", ".x.partial-y.partial-1-22", ".cache.json.partial-4294967295-18446744073709551615"] {
            assert!(is_temporary(OsStr::new(name)), "{name}");
        }
        let others = [
            "a.npy.partial-12-0",
            ".partial-1-2",
            ".a.partial-1",
            ".a.partial-1-",
            ".a.partial-x-2",
            ".a.partial-1-2-3",
            ".hidden",
            "x.json",
        ];
        for name in others {
            assert!(!is_temporary(OsStr::new(name)), "{name}");
        }
    }

    #[test]
    fn a_file_that_must_be_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let new = || AtomicFile::options().replace(false).mode(0o600);
        let mut file = new().create(&path).unwrap();
        // Someone else creates the file between our start and our commit.
        let mut rival = new().create(&path).unwrap();
        rival.write_all(b"rival").unwrap();
        rival.commit().unwrap();
        file.write_all(b"ours").unwrap();
        let err = file.commit().unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"rival");
        assert_eq!(names(dir.path()), ["key"]);
        let err = new().create(&path).unwrap_err().to_string();
        assert!(err.contains("already exists") && err.contains(&path.display().to_string()), "{err}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_replaced_file_keeps_its_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        write(&path, b"{}").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write(&path, b"{\"a\": 1}").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
    }

    #[test]
    fn copy_and_write_via() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("a.bin"), dir.path().join("b.bin"));
        write(&from, &[7u8; 100_000]).unwrap();
        assert_eq!(copy(&from, &to).unwrap(), 100_000);
        assert_eq!(fs::read(&to).unwrap(), fs::read(&from).unwrap());

        let via = dir.path().join("weights.safetensors");
        write_via(&via, |temp| fs::write(temp, b"tensors")).unwrap();
        assert_eq!(fs::read(&via).unwrap(), b"tensors");
        let err = write_via(&via, |temp| {
            fs::write(temp, b"half").unwrap();
            Err("the library gave up")
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("weights.safetensors") && err.contains("the library gave up"), "{err}");
        assert_eq!(fs::read(&via).unwrap(), b"tensors");
        assert_eq!(names(dir.path()), ["a.bin", "b.bin", "weights.safetensors"]);
    }

    #[test]
    fn concurrent_writers_leave_one_complete_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.json");
        let contents: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 10_000 + i as usize]).collect();
        std::thread::scope(|s| {
            for c in &contents {
                s.spawn(|| write(&path, c).unwrap());
            }
        });
        assert!(contents.contains(&fs::read(&path).unwrap()));
        assert_eq!(names(dir.path()), ["index.json"]);
    }
}
