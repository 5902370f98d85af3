//! Build script of the host (the tests crate runs it too, for the same linking).
//!
//! 1. Links against libtorch from the repo-local venv without any environment exports:
//!    an rpath to torch's lib directory, and libtorch_cuda kept as NEEDED (when the wheel has
//!    it) so the same binary trains on CUDA wherever a GPU is present.
//! 2. Copies the face-detection model that the rustface package ships into OUT_DIR, so the
//!    binary embeds it with `include_bytes!` and the repository never carries the 1.2 MB file.
//!    The package directory comes from `cargo metadata`, which also works with vendored
//!    sources and a custom CARGO_HOME, unlike guessing registry paths. The package directory
//!    is passed on as MER_RUSTFACE_DIR for tests that use the package's group photo.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// File name of the SeetaFace frontal model inside the rustface package's `model/` directory.
const FACE_MODEL: &str = "seeta_fd_frontal_v1.0.bin";

fn main() {
    link_libtorch();
    copy_face_model();
    // `file!()` is this script relative to the package using it (the tests crate shares it).
    println!("cargo:rerun-if-changed={}", file!());
}

fn link_libtorch() {
    let lib = env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys must be a direct dependency so that DEP_TCH_LIBTORCH_LIB is set");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}

fn copy_face_model() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"));
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = env::var("TARGET").expect("cargo sets TARGET for build scripts");
    // Offline and limited to the target platform: only packages this build already
    // downloaded are needed (without the filter cargo wants e.g. Windows-only crates too).
    let output = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--filter-platform", &target, "--manifest-path"])
        .arg(&manifest)
        .output()
        .unwrap_or_else(|e| panic!("could not run `{} metadata` to locate the rustface package: {e}", cargo.to_string_lossy()));
    if !output.status.success() {
        panic!(
            "`cargo metadata --offline` failed ({}), so the face model in the rustface package cannot be located; \
             run `cargo fetch` once with network access.\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8(output.stdout).expect("cargo metadata prints UTF-8");
    let meta = json::parse(&text).unwrap_or_else(|e| panic!("cannot read the output of cargo metadata: {e}"));

    if let Some(root) = meta.get("workspace_root").and_then(json::Value::as_str) {
        // A different rustface version (or source) changes the lock file.
        println!("cargo:rerun-if-changed={}", Path::new(root).join("Cargo.lock").display());
    }
    let packages = meta.get("packages").and_then(json::Value::as_array).expect("cargo metadata lists packages");
    let candidates: Vec<PathBuf> = packages
        .iter()
        .filter(|p| p.get("name").and_then(json::Value::as_str) == Some("rustface"))
        .filter_map(|p| p.get("manifest_path").and_then(json::Value::as_str))
        .filter_map(|m| Path::new(m).parent().map(|dir| dir.join("model").join(FACE_MODEL)))
        .collect();
    let Some(model) = candidates.iter().find(|m| m.is_file()) else {
        panic!(
            "the rustface package should ship model/{FACE_MODEL}, but it was not found (looked at {candidates:?}); \
             is rustface still a dependency of the workspace?"
        );
    };
    println!("cargo:rerun-if-changed={}", model.display());
    // The package also ships a group photo that the face-detection tests use.
    let package_dir = model.parent().and_then(Path::parent).expect("model/<file> has a package directory");
    println!("cargo:rustc-env=MER_RUSTFACE_DIR={}", package_dir.display());
    let dest = out_dir.join(FACE_MODEL);
    std::fs::copy(model, &dest).unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", model.display(), dest.display()));
}

/// Just enough JSON to read `cargo metadata` output without a build-dependency.
mod json {
    pub enum Value {
        /// A number, boolean or null: checked for syntax, but the build script never reads one.
        Scalar,
        String(String),
        Array(Vec<Value>),
        Object(Vec<(String, Value)>),
    }

    impl Value {
        pub fn get(&self, key: &str) -> Option<&Value> {
            match self {
                Value::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
                _ => None,
            }
        }
        pub fn as_str(&self) -> Option<&str> {
            match self {
                Value::String(s) => Some(s),
                _ => None,
            }
        }
        pub fn as_array(&self) -> Option<&[Value]> {
            match self {
                Value::Array(items) => Some(items),
                _ => None,
            }
        }
    }

    pub fn parse(text: &str) -> Result<Value, String> {
        let mut p = Parser { text, pos: 0 };
        let value = p.value()?;
        p.skip_ws();
        if p.pos != text.len() {
            return Err(p.error("trailing characters"));
        }
        Ok(value)
    }

    struct Parser<'a> {
        text: &'a str,
        pos: usize,
    }

    impl Parser<'_> {
        fn error(&self, what: &str) -> String {
            format!("{what} at byte {}", self.pos)
        }
        fn peek(&self) -> Option<u8> {
            self.text.as_bytes().get(self.pos).copied()
        }
        fn skip_ws(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.pos += 1;
            }
        }
        fn expect(&mut self, byte: u8) -> Result<(), String> {
            self.skip_ws();
            if self.peek() == Some(byte) {
                self.pos += 1;
                Ok(())
            } else {
                Err(self.error(&format!("expected '{}'", byte as char)))
            }
        }
        fn literal(&mut self, word: &str) -> Result<Value, String> {
            if self.text[self.pos..].starts_with(word) {
                self.pos += word.len();
                Ok(Value::Scalar)
            } else {
                Err(self.error("unknown literal"))
            }
        }

        fn value(&mut self) -> Result<Value, String> {
            self.skip_ws();
            match self.peek() {
                Some(b'{') => self.object(),
                Some(b'[') => self.array(),
                Some(b'"') => self.string().map(Value::String),
                Some(b't') => self.literal("true"),
                Some(b'f') => self.literal("false"),
                Some(b'n') => self.literal("null"),
                Some(b'-' | b'0'..=b'9') => {
                    while matches!(self.peek(), Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')) {
                        self.pos += 1;
                    }
                    Ok(Value::Scalar)
                }
                _ => Err(self.error("expected a value")),
            }
        }

        fn object(&mut self) -> Result<Value, String> {
            self.expect(b'{')?;
            let mut fields = Vec::new();
            self.skip_ws();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(Value::Object(fields));
            }
            loop {
                self.skip_ws();
                let key = self.string()?;
                self.expect(b':')?;
                fields.push((key, self.value()?));
                self.skip_ws();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b'}') => {
                        self.pos += 1;
                        return Ok(Value::Object(fields));
                    }
                    _ => return Err(self.error("expected ',' or '}'")),
                }
            }
        }

        fn array(&mut self) -> Result<Value, String> {
            self.expect(b'[')?;
            let mut items = Vec::new();
            self.skip_ws();
            if self.peek() == Some(b']') {
                self.pos += 1;
                return Ok(Value::Array(items));
            }
            loop {
                items.push(self.value()?);
                self.skip_ws();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b']') => {
                        self.pos += 1;
                        return Ok(Value::Array(items));
                    }
                    _ => return Err(self.error("expected ',' or ']'")),
                }
            }
        }

        fn string(&mut self) -> Result<String, String> {
            self.expect(b'"')?;
            let mut out = String::new();
            loop {
                // Copy the run up to the next quote or escape; both are ASCII, so the slice
                // boundaries are character boundaries.
                let rest = &self.text[self.pos..];
                let run = rest.find(['"', '\\']).ok_or_else(|| self.error("unterminated string"))?;
                out.push_str(&rest[..run]);
                self.pos += run;
                if self.peek() == Some(b'"') {
                    self.pos += 1;
                    return Ok(out);
                }
                self.pos += 1; // the backslash
                let escaped = self.peek().ok_or_else(|| self.error("unterminated escape"))?;
                self.pos += 1;
                match escaped {
                    b'"' => out.push('"'),
                    b'\\' => out.push('\\'),
                    b'/' => out.push('/'),
                    b'b' => out.push('\u{8}'),
                    b'f' => out.push('\u{c}'),
                    b'n' => out.push('\n'),
                    b'r' => out.push('\r'),
                    b't' => out.push('\t'),
                    b'u' => {
                        let first = self.hex4()?;
                        let code = if (0xD800..0xDC00).contains(&first) && self.text[self.pos..].starts_with("\\u") {
                            self.pos += 2;
                            let second = self.hex4()?;
                            0x10000 + ((first - 0xD800) << 10) + (second.wrapping_sub(0xDC00) & 0x3FF)
                        } else {
                            first
                        };
                        out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                    }
                    _ => return Err(self.error("unknown escape")),
                }
            }
        }

        fn hex4(&mut self) -> Result<u32, String> {
            let digits = self.text.get(self.pos..self.pos + 4).ok_or_else(|| self.error("short \\u escape"))?;
            let code = u32::from_str_radix(digits, 16).map_err(|_| self.error("bad \\u escape"))?;
            self.pos += 4;
            Ok(code)
        }
    }
}
