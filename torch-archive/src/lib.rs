//! Reads PyTorch `torch.save` checkpoints (the zip format PyTorch has written since 1.6) into
//! tch tensors, without Python.
//!
//! tch's own loaders fail on the `OrderedDict` that `torch.save(model.state_dict(), path)`
//! writes (libtorch's reader asserts `Expected GenericDict`), and the official checkpoints of
//! the published models are saved exactly that way. This crate therefore opens the zip itself,
//! runs the small part of the pickle machine that `torch.save` uses, and builds every tensor
//! from its raw little-endian storage.
//!
//! Only data is rebuilt: no Python code is named or run. A call to any function this crate
//! does not know (an optimizer class, `argparse.Namespace`, ...) becomes an opaque placeholder,
//! so checkpoints that carry such things next to their weights still load.
//!
//! Layout of an archive written by torch 2.x (`<a>` is the file's stem):
//! `<a>/data.pkl` (the pickle), `<a>/data/<key>` (one raw storage per key), `<a>/byteorder`
//! (`little`), `<a>/version`, and bookkeeping entries that are not needed here. A storage is
//! referenced from the pickle by the persistent id `('storage', torch.FloatStorage, '<key>',
//! 'cpu', numel)`; a tensor is `torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
//! requires_grad, hooks[, metadata])`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;
use std::rc::Rc;

use anyhow::{Result, anyhow, bail};
use tch::{Device, Kind, Tensor};

/// Keys under which training scripts commonly nest the weights inside a larger checkpoint
/// dict, tried in this order.
pub const WRAPPER_KEYS: [&str; 3] = ["state_dict", "model_state_dict", "model"];

/// Name, element type and shape of one tensor in a checkpoint, read without loading its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    pub name: String,
    /// PyTorch's name for the element type: `float32`, `int64`, `bfloat16`, ...
    pub dtype: &'static str,
    pub kind: Kind,
    pub shape: Vec<i64>,
    /// The storage key (`<archive>/data/<key>`); entries that share one are views of each other.
    pub storage: String,
}

impl fmt::Display for EntryInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {:?}", self.name, self.dtype, self.shape)
    }
}

/// The table of tensors found in a checkpoint, without their data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    /// `Some(key)` when the file is a larger dict that holds the weights under `key`.
    pub wrapped_under: Option<String>,
    pub entries: Vec<EntryInfo>,
}

/// The tensors of a checkpoint, in file order.
#[derive(Debug)]
pub struct Checkpoint {
    /// `Some(key)` when the file is a larger dict that holds the weights under `key`.
    pub wrapped_under: Option<String>,
    /// Every tensor is contiguous; entries that were views of one storage in Python still share
    /// memory where the view itself was contiguous.
    pub entries: Vec<(String, Tensor)>,
}

/// Reads the state dict in a `torch.save` archive: name and tensor pairs in file order.
///
/// Accepts an `OrderedDict` or plain dict of tensors, or a checkpoint dict that holds one under
/// one of [`WRAPPER_KEYS`]; in that case a note naming the key goes to stderr (use
/// [`read_checkpoint`] to get it as a value instead).
pub fn read_state_dict(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let checkpoint = read_checkpoint(path)?;
    if let Some(key) = &checkpoint.wrapped_under {
        eprintln!("{}: using the state dict stored under {key:?}", path.display());
    }
    Ok(checkpoint.entries)
}

/// Like [`read_state_dict`], and also says under which key the weights were found.
pub fn read_checkpoint(path: &Path) -> Result<Checkpoint> {
    Archive::open(path)?.read_all()
}

/// Lists the tensors of a checkpoint (name, dtype, shape) from its pickle alone.
pub fn describe(path: &Path) -> Result<Description> {
    let mut archive = Archive::open(path)?;
    let (wrapped_under, refs) = archive.state_dict()?;
    let entries = refs
        .into_iter()
        .map(|(name, t)| EntryInfo {
            name,
            dtype: t.storage.dtype.name,
            kind: t.storage.dtype.kind,
            shape: t.shape.clone(),
            storage: t.storage.key.clone(),
        })
        .collect();
    Ok(Description { wrapped_under, entries })
}

// ---------------------------------------------------------------------------------------------
// Element types

/// One element type, as named by a legacy storage class in the persistent id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dtype {
    class: &'static str,
    name: &'static str,
    kind: Kind,
    size: usize,
}

/// torch 2.x still writes the legacy typed class (`torch.FloatStorage`, ...) for every tensor;
/// `UntypedStorage` only appears when a bare storage was saved, and then counts bytes.
const DTYPES: [Dtype; 11] = [
    Dtype { class: "FloatStorage", name: "float32", kind: Kind::Float, size: 4 },
    Dtype { class: "DoubleStorage", name: "float64", kind: Kind::Double, size: 8 },
    Dtype { class: "HalfStorage", name: "float16", kind: Kind::Half, size: 2 },
    Dtype { class: "BFloat16Storage", name: "bfloat16", kind: Kind::BFloat16, size: 2 },
    Dtype { class: "LongStorage", name: "int64", kind: Kind::Int64, size: 8 },
    Dtype { class: "IntStorage", name: "int32", kind: Kind::Int, size: 4 },
    Dtype { class: "ShortStorage", name: "int16", kind: Kind::Int16, size: 2 },
    Dtype { class: "CharStorage", name: "int8", kind: Kind::Int8, size: 1 },
    Dtype { class: "ByteStorage", name: "uint8", kind: Kind::Uint8, size: 1 },
    Dtype { class: "BoolStorage", name: "bool", kind: Kind::Bool, size: 1 },
    Dtype { class: "UntypedStorage", name: "uint8", kind: Kind::Uint8, size: 1 },
];

fn dtype_of_class(global: &str) -> Option<Dtype> {
    let class = global.strip_prefix("torch.storage.").or_else(|| global.strip_prefix("torch."))?;
    DTYPES.iter().copied().find(|d| d.class == class)
}

// ---------------------------------------------------------------------------------------------
// Pickle values

/// A storage named by a persistent id; its bytes live in `<archive>/data/<key>`.
#[derive(Debug)]
struct StorageRef {
    key: String,
    dtype: Dtype,
    numel: i64,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a strided view of a storage.
#[derive(Debug)]
struct TensorRef {
    storage: Rc<StorageRef>,
    offset: i64,
    shape: Vec<i64>,
    stride: Vec<i64>,
}

/// A dict that keeps insertion order (which is what both `dict` and `OrderedDict` promise).
#[derive(Default)]
struct Dict {
    items: Vec<(Value, Value)>,
    /// Position of each string or int key, so that a repeated key replaces in place.
    index: HashMap<String, usize>,
}

impl Dict {
    fn insert(&mut self, key: Value, value: Value) {
        let id = match &key {
            Value::Str(s) => Some(format!("s{s}")),
            Value::Int(i) => Some(format!("i{i}")),
            _ => None,
        };
        match id.as_ref().and_then(|id| self.index.get(id)) {
            Some(&at) => self.items[at].1 = value,
            None => {
                if let Some(id) = id {
                    self.index.insert(id, self.items.len());
                }
                self.items.push((key, value));
            }
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        let at = *self.index.get(&format!("s{key}"))?;
        Some(&self.items[at].1)
    }
}

/// What the pickle machine manipulates. Mutable containers are shared (`Rc<RefCell>`) because
/// a pickle fills a dict or list after memoising it, and later references must see the items.
#[derive(Clone)]
enum Value {
    None,
    /// Booleans, floats and bytes only ever occur beside the weights (requires_grad flags,
    /// learning rates, ...), so only their type is kept.
    Bool,
    Int(i64),
    Float,
    Str(Rc<str>),
    Bytes,
    Tuple(Rc<Vec<Value>>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Dict>>),
    /// A class or function named by GLOBAL or STACK_GLOBAL, as `module.name`.
    Global(Rc<str>),
    /// The result of calling or instantiating something this module does not rebuild.
    Object(Rc<str>),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    fn type_name(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool => "bool".into(),
            Value::Int(_) => "int".into(),
            Value::Float => "float".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes => "bytes".into(),
            Value::Tuple(_) => "tuple".into(),
            Value::List(_) => "list".into(),
            Value::Dict(_) => "dict".into(),
            Value::Global(g) => format!("reference to {g}"),
            Value::Object(o) => format!("{o} object"),
            Value::Storage(_) => "storage".into(),
            Value::Tensor(_) => "tensor".into(),
        }
    }

    /// Moves the children of a container this value solely owns into `out`.
    fn take_children(&mut self, out: &mut Vec<Value>) {
        match self {
            Value::Tuple(rc) => {
                if let Some(items) = Rc::get_mut(rc) {
                    out.append(items);
                }
            }
            Value::List(rc) => {
                if let Some(items) = Rc::get_mut(rc) {
                    out.append(items.get_mut());
                }
            }
            Value::Dict(rc) => {
                if let Some(dict) = Rc::get_mut(rc) {
                    for (k, v) in dict.get_mut().items.drain(..) {
                        out.push(k);
                        out.push(v);
                    }
                }
            }
            _ => {}
        }
    }
}

impl Drop for Value {
    /// Takes nested containers apart with a work list: a pickle can nest tuples a million deep
    /// in a megabyte, and the default recursive drop would overflow the stack.
    fn drop(&mut self) {
        let mut pending = Vec::new();
        self.take_children(&mut pending);
        while let Some(mut value) = pending.pop() {
            value.take_children(&mut pending);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The pickle machine

/// A failure inside the pickle, located by byte offset and opcode.
#[derive(Debug)]
struct PickleError {
    offset: usize,
    opcode: Option<u8>,
    message: String,
}

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.opcode {
            Some(op) => write!(f, "byte {} ({}): {}", self.offset, opcode_name(op), self.message),
            None => write!(f, "byte {}: {}", self.offset, self.message),
        }
    }
}

fn opcode_name(op: u8) -> String {
    let name = match op {
        0x80 => "PROTO",
        0x95 => "FRAME",
        b'c' => "GLOBAL",
        0x93 => "STACK_GLOBAL",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        0x94 => "MEMOIZE",
        b'h' => "BINGET",
        b'j' => "LONG_BINGET",
        b'(' => "MARK",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b')' => "EMPTY_TUPLE",
        b't' => "TUPLE",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        b'}' => "EMPTY_DICT",
        b'd' => "DICT",
        b's' => "SETITEM",
        b'u' => "SETITEMS",
        b']' => "EMPTY_LIST",
        b'l' => "LIST",
        b'a' => "APPEND",
        b'e' => "APPENDS",
        b'K' => "BININT1",
        b'M' => "BININT2",
        b'J' => "BININT",
        0x8a => "LONG1",
        b'G' => "BINFLOAT",
        b'X' => "BINUNICODE",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8e => "BINBYTES8",
        0x89 => "NEWFALSE",
        0x88 => "NEWTRUE",
        b'N' => "NONE",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        0x81 => "NEWOBJ",
        b'b' => "BUILD",
        b'.' => "STOP",
        other => return format!("opcode 0x{other:02x}, not used by torch.save"),
    };
    name.to_string()
}

/// Runs the pickle opcodes `torch.save` emits (protocol 2 by default, protocol 4/5 when asked
/// for). Errors are plain strings here; [`unpickle`] attaches the offset and opcode.
struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stack heights at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

type Step<T> = std::result::Result<T, String>;

fn unpickle(data: &[u8]) -> std::result::Result<Value, PickleError> {
    let mut m = Machine { data, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new() };
    loop {
        let offset = m.pos;
        let Some(&op) = data.get(offset) else {
            return Err(PickleError { offset, opcode: None, message: "pickle ends without STOP".into() });
        };
        m.pos += 1;
        match m.step(op) {
            Ok(None) => {}
            Ok(Some(value)) => return Ok(value),
            Err(message) => return Err(PickleError { offset, opcode: Some(op), message }),
        }
    }
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Step<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.data.len());
        let Some(end) = end else {
            return Err(format!("truncated: needs {n} bytes, {} left", self.data.len() - self.pos));
        };
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn take_array<const N: usize>(&mut self) -> Step<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn take_len(&mut self, width: usize) -> Step<usize> {
        let len = match width {
            1 => u64::from(self.take_array::<1>()?[0]),
            4 => u64::from(u32::from_le_bytes(self.take_array()?)),
            _ => u64::from_le_bytes(self.take_array()?),
        };
        usize::try_from(len).map_err(|_| format!("length {len} does not fit in memory"))
    }

    fn take_str(&mut self, len_width: usize) -> Step<Value> {
        let len = self.take_len(len_width)?;
        let bytes = self.take(len)?;
        let s = std::str::from_utf8(bytes).map_err(|e| format!("string is not UTF-8: {e}"))?;
        Ok(Value::Str(Rc::from(s)))
    }

    fn take_line(&mut self) -> Step<String> {
        let rest = &self.data[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Err("unterminated line".into());
        };
        let line = std::str::from_utf8(&rest[..end]).map_err(|e| format!("name is not UTF-8: {e}"))?.to_string();
        self.pos += end + 1;
        Ok(line)
    }

    fn pop(&mut self) -> Step<Value> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err("stack is empty above the last MARK".into());
        }
        self.stack.pop().ok_or_else(|| "stack is empty".to_string())
    }

    fn top(&self) -> Step<&Value> {
        self.stack.last().ok_or_else(|| "stack is empty".to_string())
    }

    /// Removes and returns everything above the most recent MARK.
    fn pop_mark(&mut self) -> Step<Vec<Value>> {
        let mark = self.marks.pop().ok_or("no MARK is open")?;
        if mark > self.stack.len() {
            return Err("stack shrank below the open MARK".into());
        }
        Ok(self.stack.split_off(mark))
    }

    fn push_tuple(&mut self, n: usize) -> Step<()> {
        if self.stack.len() < n {
            return Err(format!("needs {n} items, stack holds {}", self.stack.len()));
        }
        let items = self.stack.split_off(self.stack.len() - n);
        self.stack.push(Value::Tuple(Rc::new(items)));
        Ok(())
    }

    fn memo_put(&mut self, index: u32) -> Step<()> {
        let value = self.top()?.clone();
        self.memo.insert(index, value);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> Step<()> {
        let value = self.memo.get(&index).ok_or_else(|| format!("memo slot {index} was never set"))?.clone();
        self.stack.push(value);
        Ok(())
    }

    /// Adds key/value pairs to the dict below them; items meant for an opaque object are dropped.
    fn set_items(&mut self, items: Vec<Value>) -> Step<()> {
        if !items.len().is_multiple_of(2) {
            return Err(format!("odd number of items ({}) for key/value pairs", items.len()));
        }
        match self.top()? {
            Value::Dict(dict) => {
                let mut dict = dict.borrow_mut();
                let mut items = items.into_iter();
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    dict.insert(k, v);
                }
                Ok(())
            }
            Value::Object(_) => Ok(()),
            other => Err(format!("cannot set items on a {}", other.type_name())),
        }
    }

    fn append(&mut self, items: Vec<Value>) -> Step<()> {
        match self.top()? {
            Value::List(list) => {
                list.borrow_mut().extend(items);
                Ok(())
            }
            Value::Object(_) => Ok(()),
            other => Err(format!("cannot append to a {}", other.type_name())),
        }
    }

    /// Executes one opcode; returns the final value at STOP.
    fn step(&mut self, op: u8) -> Step<Option<Value>> {
        match op {
            0x80 => {
                let proto = self.take_array::<1>()?[0];
                if proto > 5 {
                    return Err(format!("pickle protocol {proto} is newer than 5"));
                }
            }
            0x95 => {
                self.take(8)?;
            }
            b'c' => {
                let module = self.take_line()?;
                let name = self.take_line()?;
                self.stack.push(Value::Global(Rc::from(format!("{module}.{name}"))));
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Value::Str(module), Value::Str(name)) = (&module, &name) else {
                    return Err(format!("needs two strings, got {} and {}", module.type_name(), name.type_name()));
                };
                self.stack.push(Value::Global(Rc::from(format!("{module}.{name}"))));
            }
            b'q' => {
                let i = self.take_array::<1>()?[0];
                self.memo_put(u32::from(i))?;
            }
            b'r' => {
                let i = u32::from_le_bytes(self.take_array()?);
                self.memo_put(i)?;
            }
            0x94 => {
                let i = u32::try_from(self.memo.len()).map_err(|_| "memo is full".to_string())?;
                self.memo_put(i)?;
            }
            b'h' => {
                let i = self.take_array::<1>()?[0];
                self.memo_get(u32::from(i))?;
            }
            b'j' => {
                let i = u32::from_le_bytes(self.take_array()?);
                self.memo_get(i)?;
            }
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b')' => self.stack.push(Value::Tuple(Rc::new(Vec::new()))),
            b't' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::Tuple(Rc::new(items)));
            }
            0x85 => self.push_tuple(1)?,
            0x86 => self.push_tuple(2)?,
            0x87 => self.push_tuple(3)?,
            b'}' => self.stack.push(Value::Dict(Rc::default())),
            b'd' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::Dict(Rc::default()));
                self.set_items(items)?;
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.set_items(vec![key, value])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.set_items(items)?;
            }
            b']' => self.stack.push(Value::List(Rc::default())),
            b'l' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::List(Rc::new(RefCell::new(items))));
            }
            b'a' => {
                let item = self.pop()?;
                self.append(vec![item])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.append(items)?;
            }
            b'K' => {
                let v = self.take_array::<1>()?[0];
                self.stack.push(Value::Int(i64::from(v)));
            }
            b'M' => {
                let v = u16::from_le_bytes(self.take_array()?);
                self.stack.push(Value::Int(i64::from(v)));
            }
            b'J' => {
                let v = i32::from_le_bytes(self.take_array()?);
                self.stack.push(Value::Int(i64::from(v)));
            }
            0x8a => {
                let n = self.take_len(1)?;
                if n > 8 {
                    return Err(format!("{n}-byte integer does not fit in 64 bits"));
                }
                let bytes = self.take(n)?;
                // Two's complement, little-endian: sign-extend from the top byte.
                let fill = if bytes.last().is_some_and(|&b| b & 0x80 != 0) { 0xff } else { 0 };
                let mut wide = [fill; 8];
                wide[..n].copy_from_slice(bytes);
                self.stack.push(Value::Int(i64::from_le_bytes(wide)));
            }
            b'G' => {
                self.take(8)?;
                self.stack.push(Value::Float);
            }
            b'X' => {
                let s = self.take_str(4)?;
                self.stack.push(s);
            }
            0x8c => {
                let s = self.take_str(1)?;
                self.stack.push(s);
            }
            0x8d => {
                let s = self.take_str(8)?;
                self.stack.push(s);
            }
            b'B' | b'C' | 0x8e => {
                let width = match op {
                    b'C' => 1,
                    b'B' => 4,
                    _ => 8,
                };
                let len = self.take_len(width)?;
                self.take(len)?;
                self.stack.push(Value::Bytes);
            }
            0x89 | 0x88 => self.stack.push(Value::Bool),
            b'N' => self.stack.push(Value::None),
            b'Q' => {
                let pid = self.pop()?;
                let storage = persistent_storage(&pid)?;
                self.stack.push(Value::Storage(Rc::new(storage)));
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let Value::Tuple(args) = &args else {
                    return Err(format!("arguments must be a tuple, got a {}", args.type_name()));
                };
                let result = call(&callable, args)?;
                self.stack.push(result);
            }
            0x81 => {
                let _args = self.pop()?;
                let class = self.pop()?;
                let name = match &class {
                    Value::Global(g) => g.clone(),
                    other => Rc::from(other.type_name()),
                };
                self.stack.push(Value::Object(name));
            }
            b'b' => {
                // Object state (for OrderedDict: its `_metadata`) carries no weights.
                let _state = self.pop()?;
                self.top()?;
            }
            b'.' => {
                let value = self.pop()?;
                return Ok(Some(value));
            }
            _ => return Err("unsupported opcode".into()),
        }
        Ok(None)
    }
}

/// Decodes `('storage', torch.<Type>Storage, '<key>', '<location>', numel)`.
fn persistent_storage(pid: &Value) -> Step<StorageRef> {
    let Value::Tuple(items) = pid else {
        return Err(format!("persistent id must be a tuple, got a {}", pid.type_name()));
    };
    match items.as_slice() {
        [Value::Str(tag), class, Value::Str(key), Value::Str(_location), Value::Int(numel)] if &**tag == "storage" => {
            let Value::Global(class) = class else {
                return Err(format!("storage type must be a class, got a {}", class.type_name()));
            };
            let dtype = dtype_of_class(class).ok_or_else(|| format!("unsupported storage type {class}"))?;
            if *numel < 0 {
                return Err(format!("storage {key} has negative size {numel}"));
            }
            Ok(StorageRef { key: key.to_string(), dtype, numel: *numel })
        }
        _ => Err("persistent id is not ('storage', type, key, location, numel)".into()),
    }
}

/// The functions whose results matter are rebuilt; any other call yields an opaque object.
fn call(callable: &Value, args: &[Value]) -> Step<Value> {
    let Value::Global(name) = callable else {
        return Ok(Value::Object(Rc::from(format!("result of calling a {}", callable.type_name()))));
    };
    match &**name {
        "collections.OrderedDict" if args.is_empty() => Ok(Value::Dict(Rc::default())),
        "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => rebuild_tensor(args),
        // Parameters saved outside a state dict: (data, requires_grad, hooks[, state]).
        "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => match args.first() {
            Some(t @ Value::Tensor(_)) => Ok(t.clone()),
            _ => Err("parameter data is not a tensor".into()),
        },
        // Tensor subclasses: (function, subclass, args, state); the data is the plain tensor.
        "torch._tensor._rebuild_from_type_v2" => match args {
            [func, _, Value::Tuple(inner), ..] => call(func, inner),
            _ => Err("expected (function, type, args, state)".into()),
        },
        _ => Ok(Value::Object(name.clone())),
    }
}

/// `(storage, storage_offset, size, stride, ...)` → a strided view description.
fn rebuild_tensor(args: &[Value]) -> Step<Value> {
    let [Value::Storage(storage), offset, size, stride, ..] = args else {
        return Err("expected (storage, offset, size, stride, ...)".into());
    };
    let Value::Int(offset) = *offset else {
        return Err(format!("storage offset must be an int, got a {}", offset.type_name()));
    };
    let ints = |v: &Value, what: &str| -> Step<Vec<i64>> {
        let Value::Tuple(items) = v else {
            return Err(format!("{what} must be a tuple, got a {}", v.type_name()));
        };
        items
            .iter()
            .map(|i| match i {
                Value::Int(n) if *n >= 0 => Ok(*n),
                Value::Int(n) => Err(format!("{what} has negative value {n}")),
                other => Err(format!("{what} holds a {}", other.type_name())),
            })
            .collect()
    };
    let shape = ints(size, "size")?;
    let stride = ints(stride, "stride")?;
    if shape.len() != stride.len() {
        return Err(format!("size {shape:?} and stride {stride:?} differ in length"));
    }
    if offset < 0 {
        return Err(format!("negative storage offset {offset}"));
    }
    Ok(Value::Tensor(Rc::new(TensorRef { storage: storage.clone(), offset, shape, stride })))
}

// ---------------------------------------------------------------------------------------------
// Picking the state dict out of the unpickled value

type Refs = Vec<(String, Rc<TensorRef>)>;

/// The root must be a dict of tensors, or a dict that holds one under a [`WRAPPER_KEYS`] key.
fn select_state_dict(root: &Value) -> std::result::Result<(Option<String>, Refs), String> {
    let Value::Dict(dict) = root else {
        return Err(match root {
            Value::Object(class) => format!(
                "the pickle holds a whole {class} object (torch.save(model)?), not a state dict; \
                 in Python save model.state_dict() instead"
            ),
            other => format!("the pickle holds a {}, not a dict of tensors", other.type_name()),
        });
    };
    let dict = dict.borrow();
    let direct = tensors_of(&dict);
    if let Ok(refs) = direct {
        return Ok((None, refs));
    }
    for key in WRAPPER_KEYS {
        if let Some(Value::Dict(inner)) = dict.get(key) {
            let refs = tensors_of(&inner.borrow()).map_err(|e| format!("under {key:?}: {e}"))?;
            return Ok((Some(key.to_string()), refs));
        }
    }
    let keys: Vec<String> = dict
        .items
        .iter()
        .take(12)
        .map(|(k, v)| match k {
            Value::Str(s) => format!("{s:?}: {}", v.type_name()),
            other => format!("<{}>: {}", other.type_name(), v.type_name()),
        })
        .collect();
    Err(format!(
        "not a state dict ({}), and no nested dict under {WRAPPER_KEYS:?}; top-level entries: {{{}{}}}",
        direct.err().unwrap_or_default(),
        keys.join(", "),
        if dict.items.len() > keys.len() { ", ..." } else { "" }
    ))
}

/// The entries of a dict whose keys are all strings and whose values are all tensors.
fn tensors_of(dict: &Dict) -> std::result::Result<Refs, String> {
    dict.items
        .iter()
        .map(|(k, v)| match (k, v) {
            (Value::Str(name), Value::Tensor(t)) => Ok((name.to_string(), t.clone())),
            (Value::Str(name), other) => Err(format!("entry {name:?} is a {}", other.type_name())),
            (other, _) => Err(format!("a key is a {}, not a string", other.type_name())),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The zip container

/// An opened `torch.save` archive.
struct Archive<R: Read + Seek> {
    /// The file, for messages.
    label: String,
    zip: zip::ZipArchive<R>,
    /// `<stem>/`, the folder every member lives in.
    prefix: String,
}

const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

impl Archive<BufReader<File>> {
    fn open(path: &Path) -> Result<Self> {
        let label = path.display().to_string();
        let mut file = File::open(path).map_err(|e| anyhow!("{label}: cannot open: {e}"))?;
        let mut head = Vec::with_capacity(16);
        (&mut file).take(16).read_to_end(&mut head).map_err(|e| anyhow!("{label}: cannot read: {e}"))?;
        file.rewind().map_err(|e| anyhow!("{label}: cannot read: {e}"))?;
        check_format(&label, &head)?;
        Archive::new(label, BufReader::new(file))
    }
}

/// Recognises the files people commonly mistake for `torch.save` zip archives.
fn check_format(label: &str, head: &[u8]) -> Result<()> {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Ok(());
    }
    if head.first() == Some(&0x80) {
        if head.len() >= 14 && head[2] == 0x8a && head[3] == 10 && head[4..14] == LEGACY_MAGIC {
            bail!(
                "{label}: legacy torch.save format (PyTorch < 1.6, or _use_new_zipfile_serialization=False), \
                 which this reader does not parse; re-save it in Python with the default format: \
                 torch.save(dict(torch.load(p, weights_only=True)), q), or write safetensors with \
                 safetensors.torch.save_file"
            );
        }
        bail!("{label}: a bare pickle without the zip container torch.save writes; re-save it with torch.save");
    }
    if head.len() >= 9 && head[8] == b'{' {
        bail!("{label}: this is a safetensors file, not a torch.save archive; read it with tch::Tensor::read_safetensors");
    }
    bail!("{label}: not a torch.save archive (no zip signature)")
}

impl<R: Read + Seek> Archive<R> {
    fn new(label: String, reader: R) -> Result<Self> {
        let zip = zip::ZipArchive::new(reader).map_err(|e| anyhow!("{label}: not a readable zip archive: {e}"))?;
        let pickles: Vec<&str> =
            zip.file_names().filter(|n| *n == "data.pkl" || n.strip_suffix("/data.pkl").is_some_and(|p| !p.contains('/'))).collect();
        let prefix = match pickles.as_slice() {
            [one] => one.strip_suffix("data.pkl").unwrap_or_default().to_string(),
            [] => bail!("{label}: zip archive without a data.pkl member, so not written by torch.save"),
            many => bail!("{label}: several data.pkl members ({}); cannot tell which to read", many.join(", ")),
        };
        let constants = format!("{prefix}constants.pkl");
        let code = format!("{prefix}code/");
        let torchscript = zip.file_names().find(|n| *n == constants).or_else(|| zip.file_names().find(|n| n.starts_with(&code)));
        if let Some(member) = torchscript {
            bail!(
                "{label}: a TorchScript archive (torch.jit.save; it has {member}), not a torch.save checkpoint; \
                 run it with tch::CModule::load, or in Python convert it: \
                 torch.save(dict(torch.jit.load(p).state_dict()), q) or safetensors.torch.save_file"
            );
        }
        let mut archive = Archive { label, zip, prefix };
        archive.check_byte_order()?;
        Ok(archive)
    }

    /// Reads a whole member, refusing compressed ones: torch.save stores members uncompressed
    /// and this build of the zip reader cannot inflate.
    fn member(&mut self, name: &str, expected_len: Option<u64>) -> Result<Vec<u8>> {
        let label = &self.label;
        let mut file = match self.zip.by_name(name) {
            Ok(f) => f,
            Err(zip::result::ZipError::FileNotFound) => bail!("{label}: archive member {name} is missing"),
            Err(zip::result::ZipError::UnsupportedArchive(why)) => bail!(
                "{label}: archive member {name} is not stored plainly ({why}); torch.save stores members \
                 uncompressed and unencrypted, so the archive was probably re-zipped: re-save it with torch.save"
            ),
            Err(e) => bail!("{label}: archive member {name}: {e}"),
        };
        if file.compression() != zip::CompressionMethod::Stored {
            bail!(
                "{label}: archive member {name} is compressed ({:?}); torch.save stores members uncompressed, \
                 so the archive was probably re-zipped: re-save it with torch.save",
                file.compression()
            );
        }
        if let Some(len) = expected_len
            && file.size() != len
        {
            bail!("{label}: archive member {name} holds {} bytes, the pickle says {len}", file.size());
        }
        // The declared size only sizes the buffer up to a bound, so a lying header cannot
        // make us reserve gigabytes.
        let mut bytes = Vec::with_capacity(file.size().min(1 << 26) as usize);
        file.read_to_end(&mut bytes).map_err(|e| anyhow!("{label}: archive member {name}: {e}"))?;
        Ok(bytes)
    }

    fn check_byte_order(&mut self) -> Result<()> {
        let name = format!("{}byteorder", self.prefix);
        if self.zip.file_names().all(|n| n != name) {
            // Archives from before the member existed were written on little-endian machines.
            return Ok(());
        }
        let bytes = self.member(&name, None)?;
        match String::from_utf8_lossy(&bytes).trim() {
            "little" => Ok(()),
            "big" => bail!("{}: stores big-endian data ({name} says \"big\"); load and re-save it on a little-endian machine", self.label),
            other => bail!("{}: {name} says {other:?}, expected \"little\"", self.label),
        }
    }

    /// Unpickles `data.pkl` and picks out the state dict.
    fn state_dict(&mut self) -> Result<(Option<String>, Refs)> {
        let name = format!("{}data.pkl", self.prefix);
        let bytes = self.member(&name, None)?;
        let root = unpickle(&bytes).map_err(|e| anyhow!("{}: {name}: {e}", self.label))?;
        select_state_dict(&root).map_err(|e| anyhow!("{}: {e}", self.label))
    }

    /// Every tensor of the state dict, each storage read once.
    fn read_all(&mut self) -> Result<Checkpoint> {
        let (wrapped_under, refs) = self.state_dict()?;
        let mut storages = HashMap::new();
        let mut entries = Vec::with_capacity(refs.len());
        for (name, tensor) in refs {
            let value = self.materialise(&name, &tensor, &mut storages)?;
            entries.push((name, value));
        }
        Ok(Checkpoint { wrapped_under, entries })
    }

    /// Loads (once) the storage behind `t` and cuts the view out of it.
    fn materialise(&mut self, name: &str, t: &TensorRef, storages: &mut HashMap<String, Tensor>) -> Result<Tensor> {
        let label = self.label.clone();
        let fail = |msg: String| anyhow!("{label}: entry {name:?}: {msg}");
        let dtype = t.storage.dtype;
        if !storages.contains_key(&t.storage.key) {
            let member = format!("{}data/{}", self.prefix, t.storage.key);
            let len = (t.storage.numel as u64)
                .checked_mul(dtype.size as u64)
                .ok_or_else(|| fail(format!("storage {} is impossibly large", t.storage.key)))?;
            let mut bytes = self.member(&member, Some(len)).map_err(|e| fail(format!("{e:#}")))?;
            if dtype.kind == Kind::Bool {
                // libtorch assumes bool bytes are 0 or 1.
                bytes.iter_mut().for_each(|b| *b = u8::from(*b != 0));
            }
            let storage = Tensor::f_from_data_size(&bytes, &[t.storage.numel], dtype.kind).map_err(|e| fail(e.to_string()))?;
            storages.insert(t.storage.key.clone(), storage);
        }
        let storage = &storages[&t.storage.key];
        if storage.kind() != dtype.kind {
            return Err(fail(format!(
                "storage {} is read as {:?} by another entry and as {} here",
                t.storage.key,
                storage.kind(),
                dtype.name
            )));
        }
        let numel = t.shape.iter().try_fold(1i64, |acc, &d| acc.checked_mul(d));
        let Some(numel) = numel else {
            return Err(fail(format!("shape {:?} overflows", t.shape)));
        };
        if numel == 0 {
            return Tensor::f_zeros(t.shape.as_slice(), (dtype.kind, Device::Cpu)).map_err(|e| fail(e.to_string()));
        }
        // Largest element index the view touches, which must lie inside the storage.
        let last =
            t.shape.iter().zip(&t.stride).try_fold(t.offset, |acc, (&d, &s)| (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x)));
        match last {
            Some(last) if last < t.storage.numel => {}
            _ => {
                return Err(fail(format!(
                    "view (offset {}, size {:?}, stride {:?}) reaches outside storage {} of {} elements",
                    t.offset, t.shape, t.stride, t.storage.key, t.storage.numel
                )));
            }
        }
        storage
            .f_as_strided(t.shape.as_slice(), t.stride.as_slice(), t.offset)
            .and_then(|v| v.f_contiguous())
            .map_err(|e| fail(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    /// Hand assembly of the pickles torch.save writes.
    #[derive(Default)]
    struct Pickle(Vec<u8>);

    impl Pickle {
        fn op(&mut self, bytes: &[u8]) -> &mut Self {
            self.0.extend_from_slice(bytes);
            self
        }
        fn proto(&mut self) -> &mut Self {
            self.op(&[0x80, 2])
        }
        fn global(&mut self, module: &str, name: &str) -> &mut Self {
            self.op(format!("c{module}\n{name}\n").as_bytes())
        }
        fn str(&mut self, s: &str) -> &mut Self {
            self.op(b"X").op(&(s.len() as u32).to_le_bytes()).op(s.as_bytes())
        }
        fn int(&mut self, v: i64) -> &mut Self {
            match v {
                0..=255 => self.op(&[b'K', v as u8]),
                256..=65535 => self.op(b"M").op(&(v as u16).to_le_bytes()),
                _ => self.op(&[0x8a, 8]).op(&v.to_le_bytes()),
            }
        }
        fn ints(&mut self, vs: &[i64]) -> &mut Self {
            self.op(b"(");
            for &v in vs {
                self.int(v);
            }
            self.op(b"t")
        }
        /// `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`.
        fn tensor(&mut self, class: &str, key: &str, numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> &mut Self {
            self.global("torch._utils", "_rebuild_tensor_v2").op(b"((").str("storage").global("torch", class);
            self.str(key).str("cpu").int(numel).op(b"tQ");
            self.int(offset).ints(size).ints(stride).op(&[0x89]);
            self.global("collections", "OrderedDict").op(b")R").op(b"tR")
        }
    }

    fn zip_bytes(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, data) in members {
            w.start_file(*name, opts).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// A model-like archive: an OrderedDict with a weight, a transposed view of the same
    /// storage, a BatchNorm-style 0-dim int64 counter, and `_metadata` set through BUILD.
    fn sample_archive() -> Vec<u8> {
        let mut p = Pickle::default();
        p.proto().global("collections", "OrderedDict").op(b"q\x00").op(b")R").op(b"(");
        p.str("w").tensor("FloatStorage", "0", 6, 0, &[2, 3], &[3, 1]);
        p.str("wt").tensor("FloatStorage", "0", 6, 0, &[3, 2], &[1, 3]);
        p.str("tail").tensor("FloatStorage", "0", 6, 4, &[2], &[1]);
        p.str("bn.num_batches_tracked").tensor("LongStorage", "1", 1, 0, &[], &[]);
        p.op(b"u");
        p.op(b"}").str("_metadata").op(b"h\x00)R").op(b"(").str("").op(b"}").str("version").int(1).op(b"su");
        p.op(b"sb.");
        let counter = 7i64.to_le_bytes();
        zip_bytes(&[
            ("sample/data.pkl", &p.0),
            ("sample/byteorder", b"little"),
            ("sample/data/0", &f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
            ("sample/data/1", &counter),
            ("sample/version", b"3\n"),
        ])
    }

    fn read_bytes(bytes: Vec<u8>) -> Result<Checkpoint> {
        check_format("mem.pth", &bytes)?;
        Archive::new("mem.pth".into(), Cursor::new(bytes))?.read_all()
    }

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
    }

    fn message(r: Result<Checkpoint>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn reads_ordered_dict_with_views_and_scalars() {
        let ck = read_bytes(sample_archive()).unwrap();
        assert_eq!(ck.wrapped_under, None);
        let names: Vec<&str> = ck.entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["w", "wt", "tail", "bn.num_batches_tracked"]);
        let (w, wt, tail, n) = (&ck.entries[0].1, &ck.entries[1].1, &ck.entries[2].1, &ck.entries[3].1);
        assert_eq!(w.size(), [2, 3]);
        assert_eq!(values(w), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(wt.size(), [3, 2]);
        assert_eq!(values(wt), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        assert!(wt.is_contiguous());
        assert_eq!(values(tail), [5.0, 6.0]);
        assert_eq!(n.size(), Vec::<i64>::new());
        assert_eq!(n.kind(), Kind::Int64);
        assert_eq!(n.int64_value(&[]), 7);
    }

    #[test]
    fn every_storage_class_maps_to_its_kind() {
        let mut p = Pickle::default();
        p.proto().op(b"}(");
        let mut members: Vec<(String, Vec<u8>)> = Vec::new();
        for (i, d) in DTYPES.iter().enumerate().filter(|(_, d)| d.class != "UntypedStorage") {
            // Two elements whose bytes are 0x01 0x00 ... and 0x00 ... 0x02 ... in each width.
            let mut bytes = vec![0u8; 2 * d.size];
            bytes[0] = 1;
            bytes[d.size] = 2;
            members.push((format!("t/data/{i}"), bytes));
            p.str(d.name).tensor(d.class, &i.to_string(), 2, 0, &[2], &[1]);
        }
        p.op(b"u.");
        members.push(("t/data.pkl".into(), p.0.clone()));
        let refs: Vec<(&str, &[u8])> = members.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        let ck = read_bytes(zip_bytes(&refs)).unwrap();
        assert_eq!(ck.entries.len(), 10);
        for (name, t) in &ck.entries {
            let d = DTYPES.iter().find(|d| d.name == name && d.class != "UntypedStorage").unwrap();
            assert_eq!(t.kind(), d.kind, "{name}");
            let expect: &[f64] = match d.kind {
                // 0x0001 as a half is a subnormal; compare bit patterns instead.
                Kind::Half | Kind::BFloat16 => {
                    let bits = t.view_dtype(Kind::Int16);
                    assert_eq!(values(&bits), [1.0, 2.0], "{name}");
                    continue;
                }
                Kind::Float => &[f32::from_bits(1) as f64, f32::from_bits(2) as f64],
                Kind::Double => &[f64::from_bits(1), f64::from_bits(2)],
                Kind::Bool => &[1.0, 1.0],
                _ => &[1.0, 2.0],
            };
            assert_eq!(values(t), expect, "{name}");
        }
    }

    #[test]
    fn picks_a_wrapped_state_dict_and_ignores_the_rest() {
        let mut p = Pickle::default();
        p.proto().op(b"}(").str("epoch").int(12).str("lr").op(b"G").op(&0.01f64.to_be_bytes());
        p.str("args").global("argparse", "Namespace").op(b")").op(&[0x81]).op(b"}").str("x").int(1).op(b"sb");
        p.str("history").op(b"](").int(1).int(2).op(b"e");
        p.str("state_dict").global("collections", "OrderedDict").op(b")R(");
        p.str("fc.bias").tensor("FloatStorage", "0", 2, 0, &[2], &[1]);
        p.op(b"uu.");
        let bytes = zip_bytes(&[("c/data.pkl", &p.0), ("c/data/0", &f32_bytes(&[0.5, -1.5]))]);
        let ck = read_bytes(bytes).unwrap();
        assert_eq!(ck.wrapped_under.as_deref(), Some("state_dict"));
        assert_eq!(ck.entries.len(), 1);
        assert_eq!(values(&ck.entries[0].1), [0.5, -1.5]);
    }

    #[test]
    fn a_dict_with_other_values_and_no_wrapper_is_refused_with_its_keys() {
        let mut p = Pickle::default();
        p.proto().op(b"}(").str("epoch").int(3).str("weights").op(b"}").op(b"u.");
        let msg = message(read_bytes(zip_bytes(&[("c/data.pkl", &p.0)])));
        assert!(msg.contains("mem.pth") && msg.contains("\"epoch\": int"), "{msg}");
    }

    #[test]
    fn big_endian_archives_are_refused() {
        let mut bytes = sample_archive();
        // Same length, so the zip stays consistent; only the member's content changes.
        let at = bytes.windows(6).position(|w| w == b"little").unwrap();
        bytes[at..at + 6].copy_from_slice(b"big\n\n\n");
        let msg = message(read_bytes(bytes));
        // The CRC no longer matches, which is reported; with a correct CRC, the byte order is.
        assert!(msg.contains("byteorder"), "{msg}");
        let mut p = Pickle::default();
        p.proto().op(b"}.");
        let msg = message(read_bytes(zip_bytes(&[("b/data.pkl", &p.0), ("b/byteorder", b"big")])));
        assert!(msg.contains("big-endian") && msg.contains("mem.pth"), "{msg}");
    }

    #[test]
    fn compressed_members_are_refused_by_name() {
        let mut bytes = sample_archive();
        // Mark every member as deflated (method 8) in the local and the central headers.
        let mut i = 0;
        while i + 4 <= bytes.len() {
            match &bytes[i..i + 4] {
                b"PK\x03\x04" => bytes[i + 8] = 8,
                b"PK\x01\x02" => bytes[i + 10] = 8,
                _ => {}
            }
            i += 1;
        }
        let msg = message(read_bytes(bytes));
        assert!(msg.contains("sample/") && msg.contains("compressed"), "{msg}");
    }

    #[test]
    fn other_formats_are_named() {
        let legacy = [&[0x80, 2, 0x8a, 10][..], &LEGACY_MAGIC, b".\x80\x02"].concat();
        assert!(message(read_bytes(legacy)).contains("legacy torch.save format"));
        let mut safetensors = 2u64.to_le_bytes().to_vec();
        safetensors.extend_from_slice(b"{}");
        assert!(message(read_bytes(safetensors)).contains("safetensors"));
        let mut p = Pickle::default();
        p.proto().op(b"}.");
        let script = zip_bytes(&[("m/data.pkl", &p.0), ("m/constants.pkl", &p.0), ("m/code/__torch__.py", b"")]);
        assert!(message(read_bytes(script)).contains("TorchScript"));
        assert!(message(read_bytes(b"hello world, this is text".to_vec())).contains("not a torch.save archive"));
        let whole_model = {
            let mut p = Pickle::default();
            p.proto().global("__main__", "Net").op(b")").op(&[0x81]).op(b"}b.");
            zip_bytes(&[("n/data.pkl", &p.0)])
        };
        assert!(message(read_bytes(whole_model)).contains("__main__.Net object"));
    }

    #[test]
    fn bad_storages_name_the_entry() {
        let mut p = Pickle::default();
        p.proto().op(b"}(").str("short").tensor("FloatStorage", "0", 4, 0, &[4], &[1]).op(b"u.");
        let msg = message(read_bytes(zip_bytes(&[("s/data.pkl", &p.0), ("s/data/0", &f32_bytes(&[1.0]))])));
        assert!(msg.contains("\"short\"") && msg.contains("s/data/0") && msg.contains("holds 4 bytes"), "{msg}");

        let mut p = Pickle::default();
        p.proto().op(b"}(").str("wide").tensor("FloatStorage", "0", 2, 1, &[2], &[1]).op(b"u.");
        let msg = message(read_bytes(zip_bytes(&[("s/data.pkl", &p.0), ("s/data/0", &f32_bytes(&[1.0, 2.0]))])));
        assert!(msg.contains("\"wide\"") && msg.contains("outside storage"), "{msg}");

        let mut p = Pickle::default();
        p.proto().op(b"}(").str("gone").tensor("FloatStorage", "9", 1, 0, &[1], &[1]).op(b"u.");
        let msg = message(read_bytes(zip_bytes(&[("s/data.pkl", &p.0)])));
        assert!(msg.contains("\"gone\"") && msg.contains("s/data/9 is missing"), "{msg}");
    }

    #[test]
    fn pickle_errors_carry_offset_and_opcode() {
        let mut p = Pickle::default();
        p.proto().op(b"}(").str("a").op(b"h\x05u.");
        let msg = message(read_bytes(zip_bytes(&[("e/data.pkl", &p.0)])));
        assert!(msg.contains("e/data.pkl: byte 10 (BINGET): memo slot 5 was never set"), "{msg}");
        let err = unpickle(b"\x80\x02\xff").err().unwrap();
        assert_eq!(err.to_string(), "byte 2 (opcode 0xff, not used by torch.save): unsupported opcode");
        let err = unpickle(b"\x80\x02}").err().unwrap();
        assert_eq!(err.to_string(), "byte 3: pickle ends without STOP");
        let err = unpickle(b"\x80\x02X\xff\xff\xff\x00ab").err().unwrap();
        assert!(err.to_string().starts_with("byte 2 (BINUNICODE): truncated"), "{err}");
        let mut p = Pickle::default();
        p.proto().op(b"(").global("torch", "ComplexFloatStorage").op(b"t");
        assert!(unpickle(&p.0).is_err());
        let mut p = Pickle::default();
        p.proto().op(b"(").str("storage").global("torch", "ComplexFloatStorage").str("0").str("cpu").int(1).op(b"tQ.");
        let err = unpickle(&p.0).err().unwrap().to_string();
        assert!(err.contains("(BINPERSID): unsupported storage type torch.ComplexFloatStorage"), "{err}");
    }

    #[test]
    fn small_integers_and_long1_decode() {
        let v = unpickle(b"\x80\x02(K\xffM\xff\xffJ\xfe\xff\xff\xff\x8a\x01\xff\x8a\x00\x8a\x02\x00\x80t.").unwrap();
        let Value::Tuple(items) = &v else { panic!("not a tuple") };
        let ints: Vec<i64> = items.iter().map(|i| if let Value::Int(n) = i { *n } else { panic!() }).collect();
        assert_eq!(ints, [255, 65535, -2, -1, 0, -32768]);
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let mut data = vec![0x80, 2, b')'];
        data.extend(std::iter::repeat_n(0x85u8, 1_000_000));
        data.push(b'.');
        let v = unpickle(&data).unwrap();
        assert!(select_state_dict(&v).unwrap_err().contains("tuple"));
        drop(v);
        let mut data = vec![0x80, 2, b']', b'q', 0];
        for _ in 0..200_000 {
            data.extend_from_slice(b"]h\x00a");
        }
        data.push(b'.');
        drop(unpickle(&data));
    }

    /// Cheap deterministic noise for the corruption tests.
    fn lcg(state: &mut u64) -> u64 {
        *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *state >> 33
    }

    #[test]
    fn truncated_or_corrupted_input_fails_without_panicking() {
        let good = sample_archive();
        assert!(read_bytes(good.clone()).is_ok());
        for len in 0..good.len() {
            assert!(read_bytes(good[..len].to_vec()).is_err(), "prefix of {len} bytes was accepted");
        }
        let mut seed = 7;
        for _ in 0..3000 {
            let mut bytes = good.clone();
            for _ in 0..1 + lcg(&mut seed) % 4 {
                let at = (lcg(&mut seed) as usize) % bytes.len();
                bytes[at] = lcg(&mut seed) as u8;
            }
            let _ = read_bytes(bytes);
        }
        // The pickle alone, where the CRC does not shield the interpreter.
        let mut p = Pickle::default();
        p.proto().global("collections", "OrderedDict").op(b")R(").str("w").tensor("FloatStorage", "0", 6, 0, &[2, 3], &[3, 1]);
        p.op(b"u.");
        for len in 0..p.0.len() {
            assert!(unpickle(&p.0[..len]).is_err());
        }
        for _ in 0..20000 {
            let mut bytes = p.0.clone();
            for _ in 0..1 + lcg(&mut seed) % 3 {
                let at = (lcg(&mut seed) as usize) % bytes.len();
                bytes[at] = lcg(&mut seed) as u8;
            }
            if let Ok(v) = unpickle(&bytes) {
                let _ = select_state_dict(&v);
            }
        }
    }
}
