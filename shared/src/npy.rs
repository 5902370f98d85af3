//! numpy `.npy` files of little-endian float32 arrays in C order, of any rank: the one array
//! format both sides write, so `np.load` reads every tensor the project stores.
//!
//! Only that one dtype is read; anything else is refused with a message that says what the
//! file holds instead, rather than converted silently.

const MAGIC: &[u8] = b"\x93NUMPY";
/// numpy pads headers so the data starts at a multiple of this many bytes.
const ALIGN: usize = 64;

/// The file bytes for `data` of `shape` (`&[]` for a single value), byte for byte what
/// `np.save` writes: format 1.0, or 2.0 when the header outgrows 1.0's 16-bit length.
///
/// # Panics
/// When `shape` does not multiply to `data.len()`: a caller bug, not bad input.
pub fn encode(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    assert_eq!(count, Some(data.len()), "npy::encode: shape {shape:?} does not hold {} values", data.len());
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    // A Python tuple: `()`, `(5,)`, `(2, 3)`; np.load rejects `(5)`, which is an int.
    let tuple = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    // Header text, padding and newline, after a prefix of `len_bytes` length bytes.
    let padded = |len_bytes: usize| {
        let prefix = MAGIC.len() + 2 + len_bytes;
        (prefix + dict.len() + 1).next_multiple_of(ALIGN) - prefix
    };
    let (version, len_bytes, header_len) = if padded(2) <= u16::MAX as usize { (1u8, 2, padded(2)) } else { (2u8, 4, padded(4)) };

    let mut out = Vec::with_capacity(MAGIC.len() + 2 + len_bytes + header_len + 4 * data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if len_bytes == 2 {
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(out.len() + header_len - dict.len() - 1, b' ');
    out.push(b'\n');
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Shape and values of a little-endian float32 C-order `.npy` of any rank, in format 1.0,
/// 2.0 or 3.0 (numpy moves to 2.0 for headers over 64 KiB); the error says what the file is
/// instead. Rank 0 gives an empty shape and one value.
pub fn decode(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>), String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(format!("not a .npy file (no numpy magic; {} bytes)", bytes.len()));
    }
    let (header_len, start): (usize, usize) = match (bytes[6], bytes[7]) {
        (1, 0) => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        (2 | 3, 0) => {
            let len = bytes.get(8..12).ok_or_else(|| format!("truncated inside the npy header ({} bytes)", bytes.len()))?;
            (u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize, 12)
        }
        (major, minor) => {
            return Err(format!("npy format {major}.{minor} is not supported; this reader takes formats 1.0, 2.0 and 3.0"));
        }
    };
    let end = start.checked_add(header_len).filter(|&end| end <= bytes.len()).ok_or_else(|| {
        format!("truncated inside the npy header: it announces {header_len} header bytes, the file has {}", bytes.len() - start)
    })?;
    // Formats 1.0 and 2.0 are latin-1, 3.0 is UTF-8; numpy's own headers are plain ASCII.
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| "the npy header is not text".to_string())?;
    let (descr, fortran, shape) = parse_header(header)?;
    if descr != "<f4" {
        let what = match descr.as_str() {
            "<f8" | "f8" => "float64".to_string(),
            ">f8" => "big-endian float64".to_string(),
            ">f4" => "big-endian float32".to_string(),
            "<f2" | ">f2" | "f2" => "float16".to_string(),
            other => format!("dtype {other:?}"),
        };
        return Err(format!("holds {what} data; only little-endian float32 ('<f4') is supported"));
    }
    if fortran {
        return Err("is stored in Fortran (column-major) order; only C order is supported".into());
    }
    let data_bytes = shape
        .iter()
        .try_fold(4usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("has an impossible shape {shape:?} (more bytes than memory can address)"))?;
    let body = &bytes[end..];
    if body.len() != data_bytes {
        let what = if body.len() < data_bytes { "truncated" } else { "longer than its header says" };
        return Err(format!("{what}: shape {shape:?} needs {data_bytes} data bytes, the file has {}", body.len()));
    }
    let values = body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok((shape, values))
}

/// Reads the header's Python dict literal: `{'descr': '<f4', 'fortran_order': False,
/// 'shape': (2, 3, 4), }` in any key order and spacing.
fn parse_header(header: &str) -> Result<(String, bool, Vec<usize>), String> {
    let bad = |why: &str| format!("malformed npy header ({why}): {:?}", header.trim_end());
    let body = header.trim().strip_prefix('{').and_then(|h| h.strip_suffix('}')).ok_or_else(|| bad("not a dict"))?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        let quote = rest.chars().next().filter(|c| *c == '\'' || *c == '"').ok_or_else(|| bad("key is not quoted"))?;
        let end = rest[1..].find(quote).ok_or_else(|| bad("unterminated key"))? + 1;
        let name = &rest[1..end];
        rest = rest[end + 1..].trim_start().strip_prefix(':').ok_or_else(|| bad("missing ':'"))?.trim_start();
        let value_end = if rest.starts_with('(') {
            rest.find(')').ok_or_else(|| bad("unterminated tuple"))? + 1
        } else if rest.starts_with('[') {
            // A structured dtype: skip the whole (possibly nested) list so it is named below.
            closing_bracket(rest).ok_or_else(|| bad("unterminated list"))? + 1
        } else if let Some(q) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') {
            rest[1..].find(q).ok_or_else(|| bad("unterminated string"))? + 2
        } else {
            rest.find(',').unwrap_or(rest.len())
        };
        let value = rest[..value_end].trim();
        match name {
            "descr" => descr = Some(value.trim_matches(|c| c == '\'' || c == '"').to_string()),
            "fortran_order" => {
                fortran = Some(match value {
                    "False" => false,
                    "True" => true,
                    _ => return Err(bad("fortran_order is not True or False")),
                })
            }
            "shape" => {
                let inner = value.strip_prefix('(').and_then(|v| v.strip_suffix(')')).ok_or_else(|| bad("shape is not a tuple"))?;
                let inner = inner.trim();
                // `()` is rank 0; one trailing comma is Python's, `(,)` is nothing.
                let inner = inner.strip_suffix(',').unwrap_or(inner);
                let dims = if inner.trim().is_empty() && !value.contains(',') {
                    Vec::new()
                } else {
                    inner
                        .split(',')
                        .map(|d| d.trim().trim_end_matches('L').parse::<usize>())
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|_| bad("shape holds something other than whole numbers"))?
                };
                shape = Some(dims);
            }
            _ => {}
        }
        rest = rest[value_end..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    match (descr, fortran, shape) {
        (Some(d), Some(f), Some(s)) => Ok((d, f, s)),
        _ => Err(bad("needs descr, fortran_order and shape")),
    }
}

/// Byte index of the `]` closing the list `text` starts with.
fn closing_bracket(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// `np.save` of `np.arange(6, dtype=np.float32).reshape(1, 2, 3) / 4 - 0.5` (numpy 2.4).
    const NUMPY_V1: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }                                                       \x0a\x00\x00\x00\xbf\x00\x00\x80\xbe\x00\x00\x00\x00\x00\x00\x80>\x00\x00\x00?\x00\x00@?";
    /// The same array through `numpy.lib.format.write_array(..., version=(2, 0))`.
    const NUMPY_V2: &[u8] = b"\x93NUMPY\x02\x00t\x00\x00\x00{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }                                                     \x0a\x00\x00\x00\xbf\x00\x00\x80\xbe\x00\x00\x00\x00\x00\x00\x80>\x00\x00\x00?\x00\x00@?";
    /// `np.save` of `np.float32(2.5)`: rank 0.
    const NUMPY_SCALAR: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (), }                                                              \x0a\x00\x00 @";
    const SIX: [f32; 6] = [-0.5, -0.25, 0.0, 0.25, 0.5, 0.75];

    fn with_header(version: u8, h: &str, body: &[u8]) -> Vec<u8> {
        let mut b = b"\x93NUMPY".to_vec();
        b.extend_from_slice(&[version, 0]);
        if version == 1 {
            b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        } else {
            b.extend_from_slice(&(h.len() as u32).to_le_bytes());
        }
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn writes_what_numpy_writes_and_reads_numpy_files() {
        assert_eq!(encode(&[1, 2, 3], &SIX), NUMPY_V1);
        assert_eq!(encode(&[], &[2.5]), NUMPY_SCALAR);
        assert_eq!(decode(NUMPY_V1).unwrap(), (vec![1, 2, 3], SIX.to_vec()));
        assert_eq!(decode(NUMPY_V2).unwrap(), (vec![1, 2, 3], SIX.to_vec()));
        // 3.0 differs from 2.0 only in allowing UTF-8 in the header.
        let mut v3 = NUMPY_V2.to_vec();
        v3[6] = 3;
        assert_eq!(decode(&v3).unwrap(), (vec![1, 2, 3], SIX.to_vec()));
        assert_eq!(decode(NUMPY_SCALAR).unwrap(), (vec![], vec![2.5]));
    }

    #[test]
    fn round_trips_every_rank() {
        let values: Vec<f32> = (0..120).map(|i| i as f32 / 8.0 - 3.0).collect();
        for shape in [vec![120], vec![10, 12], vec![2, 3, 20], vec![2, 3, 4, 5], vec![1, 2, 3, 4, 5, 1]] {
            let bytes = encode(&shape, &values);
            let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            assert_eq!((10 + header_len) % 64, 0, "{shape:?}");
            assert_eq!(bytes[10 + header_len - 1], b'\n');
            assert_eq!(decode(&bytes).unwrap(), (shape.clone(), values.clone()), "{shape:?}");
        }
        // Empty arrays have a shape and no values.
        assert_eq!(decode(&encode(&[2, 0, 3], &[])).unwrap(), (vec![2, 0, 3], vec![]));
        // A header too long for format 1.0's 16-bit length moves to 2.0, as numpy does.
        let shape = vec![1usize; 30_000];
        let bytes = encode(&shape, &[7.0]);
        assert_eq!(bytes[6], 2);
        assert_eq!((12 + u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize) % 64, 0);
        assert_eq!(decode(&bytes).unwrap(), (shape, vec![7.0]));
    }

    #[test]
    fn header_variants_and_refusals() {
        // Another writer's key order, quotes and spacing.
        let body: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let ok = with_header(1, "{\"shape\":(1,1,2),\"fortran_order\":False,\"descr\":\"<f4\"}\n", &body);
        assert_eq!(decode(&ok).unwrap(), (vec![1, 1, 2], vec![1.5, -2.0]));
        let ok = with_header(2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2L,), }\n", &body);
        assert_eq!(decode(&ok).unwrap(), (vec![2], vec![1.5, -2.0]));

        let refused = |version: u8, h: &str, body: &[u8]| decode(&with_header(version, h, body)).unwrap_err();
        let f64s = refused(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }\n", &[0; 8]);
        assert!(f64s.contains("float64") && f64s.contains("'<f4'"), "{f64s}");
        assert!(refused(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }\n", &body).contains("big-endian float32"));
        assert!(refused(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (4,), }\n", &body).contains("float16"));
        let structured = refused(1, "{'descr': [('a', '<f4'), ('b', [('c', '<i4')])], 'fortran_order': False, 'shape': (1,), }\n", &body);
        assert!(structured.contains("dtype \"[('a'"), "{structured}");
        let fortran = refused(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 2), }\n", &body);
        assert!(fortran.contains("Fortran"), "{fortran}");
        let long = refused(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1), }\n", &body);
        assert!(long.contains("longer than its header says") && long.contains("needs 4 data bytes, the file has 8"), "{long}");
        let short = refused(3, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n", &body);
        assert!(short.contains("truncated") && short.contains("needs 12 data bytes, the file has 8"), "{short}");
        let huge = refused(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }\n", &body);
        assert!(huge.contains("impossible shape"), "{huge}");
        for (h, why) in [
            ("['descr', '<f4']", "not a dict"),
            ("{descr: '<f4'}", "key is not quoted"),
            ("{'descr': '<f4', 'fortran_order': False}", "needs descr, fortran_order and shape"),
            ("{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}", "fortran_order"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (a,)}", "whole numbers"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (,)}", "whole numbers"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': 3}", "not a tuple"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,", "not a dict"),
        ] {
            let err = refused(1, h, &body);
            assert!(err.contains("malformed npy header") && err.contains(why), "{h}: {err}");
        }

        let bytes = encode(&[2, 3, 4], &[0.0; 24]);
        let mut v4 = bytes.clone();
        v4[6] = 4;
        assert!(decode(&v4).unwrap_err().contains("format 4.0"));
        assert!(decode(&bytes[..40]).unwrap_err().contains("truncated inside the npy header"));
        assert!(decode(&bytes[..bytes.len() - 1]).unwrap_err().contains("truncated: shape [2, 3, 4]"));
        assert!(decode(b"garbage").unwrap_err().contains("not a .npy"));
        assert!(decode(b"\x93NUMPY\x02\x00\x10\x00\x00").unwrap_err().contains("truncated inside the npy header"));
        // A hostile 4 GiB header length is a short read, not an allocation.
        assert!(decode(b"\x93NUMPY\x02\x00\xff\xff\xff\xff{}").unwrap_err().contains("announces 4294967295 header bytes"));
        let mut latin1 = with_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n", &body);
        latin1[20] = 0xe9;
        assert!(decode(&latin1).unwrap_err().contains("not text"));
    }

    #[test]
    fn any_truncation_is_an_error() {
        let bytes = encode(&[2, 3], &[1.0; 6]);
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "{n} bytes");
        }
    }

    /// Checks against the project's numpy when the venv exists (always when
    /// MER_REQUIRE_REFERENCE=1); the byte literals above cover it otherwise.
    #[test]
    fn numpy_reads_what_this_writes() {
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
        if !python.exists() {
            assert!(
                std::env::var("MER_REQUIRE_REFERENCE").as_deref() != Ok("1"),
                "MER_REQUIRE_REFERENCE=1 but {} does not exist (run scripts/bootstrap.sh)",
                python.display()
            );
            println!("skipping the numpy check: no {} (run scripts/bootstrap.sh)", python.display());
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<f32> = (0..120).map(|i| ((i * 37) % 101) as f32 / 7.0 - 5.0).collect();
        // This writer needs format 2.0 only for thousands of dimensions, past numpy's limit of 64.
        let cases: [(&str, Vec<usize>, &[f32]); 3] =
            [("r4.npy", vec![2, 3, 4, 5], &values), ("r1.npy", vec![120], &values), ("r0.npy", vec![], &values[7..8])];
        for (name, shape, data) in &cases {
            std::fs::write(dir.path().join(name), encode(shape, data)).unwrap();
        }
        let script = "import sys, os, numpy as np\n\
                      d = sys.argv[1]\n\
                      for name, shape in [('r4.npy', (2, 3, 4, 5)), ('r1.npy', (120,)), ('r0.npy', ())]:\n\
                      \x20   a = np.load(os.path.join(d, name))\n\
                      \x20   assert a.dtype == np.float32 and a.shape == shape and a.flags['C_CONTIGUOUS'], (name, a.dtype, a.shape[:8])\n\
                      \x20   print(repr(float(a.ravel()[-1])), repr(float(a.sum(dtype=np.float64))))\n\
                      np.save(os.path.join(d, 'n4.npy'), np.arange(120, dtype=np.float32).reshape(2, 3, 4, 5) / 8)\n\
                      np.save(os.path.join(d, 'f64.npy'), np.zeros((1, 1, 1)))\n\
                      np.save(os.path.join(d, 'fortran.npy'), np.asfortranarray(np.ones((2, 3), np.float32)))\n";
        let out = std::process::Command::new(&python).args(["-c", script]).arg(dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), cases.len(), "{stdout}");
        for ((name, _, data), line) in cases.iter().zip(lines) {
            let numbers: Vec<f64> = line.split_whitespace().map(|v| v.parse().unwrap()).collect();
            assert_eq!(numbers[0], *data.last().unwrap() as f64, "{name}");
            let sum: f64 = data.iter().map(|&v| v as f64).sum();
            assert!((numbers[1] - sum).abs() < 1e-9, "{name}: {line}");
        }
        let (shape, values) = decode(&std::fs::read(dir.path().join("n4.npy")).unwrap()).unwrap();
        assert_eq!((shape, values[119]), (vec![2, 3, 4, 5], 119.0 / 8.0));
        assert!(decode(&std::fs::read(dir.path().join("f64.npy")).unwrap()).unwrap_err().contains("float64"));
        assert!(decode(&std::fs::read(dir.path().join("fortran.npy")).unwrap()).unwrap_err().contains("Fortran"));
    }
}
