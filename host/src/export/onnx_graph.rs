//! A small builder for ONNX graphs over tract's protobuf types. Layers add their own nodes (see
//! the `to_onnx` methods beside each `forward` in `model/`), so the exported graph follows the same
//! layer description as the tch model.

use std::collections::HashMap;

use prost::Message;
use tch::{Kind, Tensor};
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto, type_proto,
};

/// ONNX opset the graph is written for (tract reads 9–18; onnxruntime all of them).
pub const OPSET: i64 = 17;
/// IR version 8 goes with opset 17.
pub const IR_VERSION: i64 = 8;
/// Name of the symbolic batch dimension.
pub const BATCH: &str = "N";

/// One attribute value of a node.
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Str(&'static str),
}

/// A dimension of a graph input or output: fixed, or the symbolic batch.
#[derive(Debug, Clone, Copy)]
pub enum Dim {
    Batch,
    Fixed(i64),
}

#[derive(Default)]
pub struct OnnxGraph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    /// Initializers by content, so a layer exported twice (the T stream's two segments) stores
    /// its weights once.
    by_content: HashMap<(i32, Vec<i64>, Vec<u8>), String>,
    names: usize,
}

impl OnnxGraph {
    pub fn new() -> OnnxGraph {
        OnnxGraph::default()
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.names += 1;
        format!("{hint}_{}", self.names)
    }

    /// A float32 initializer holding `tensor` (any device and float kind; stored as f32).
    pub fn weight(&mut self, hint: &str, tensor: &Tensor) -> String {
        let t = tensor.to_device(tch::Device::Cpu).to_kind(Kind::Float).contiguous();
        let values = Vec::<f32>::try_from(t.flatten(0, -1)).expect("a float tensor converts to Vec<f32>");
        self.constant_f32(hint, &t.size(), &values)
    }

    pub fn constant_f32(&mut self, hint: &str, dims: &[i64], values: &[f32]) -> String {
        let raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(hint, DataType::Float, dims.to_vec(), raw_data)
    }

    /// A 1-D int64 initializer (shapes, pads).
    pub fn constant_i64(&mut self, hint: &str, values: &[i64]) -> String {
        let raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(hint, DataType::Int64, vec![values.len() as i64], raw_data)
    }

    fn initializer(&mut self, hint: &str, data_type: DataType, dims: Vec<i64>, raw_data: Vec<u8>) -> String {
        let key = (data_type as i32, dims, raw_data);
        if let Some(name) = self.by_content.get(&key) {
            return name.clone();
        }
        let name = self.fresh(hint);
        let (data_type, dims, raw_data) = key.clone();
        self.initializers.push(TensorProto { name: name.clone(), dims, data_type, raw_data, ..Default::default() });
        self.by_content.insert(key, name.clone());
        name
    }

    /// Appends a single-output node and returns its output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let output = self.fresh(&op.to_lowercase());
        self.push(op, inputs, attrs, output)
    }

    /// Gives `x` the graph-output name `name`.
    pub fn name_output(&mut self, x: &str, name: &str) -> String {
        self.push("Identity", &[x], vec![], name.to_string())
    }

    fn push(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>, output: String) -> String {
        let attribute = attrs.into_iter().map(|(name, value)| attribute(name, value)).collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            name: output.clone(),
            op_type: op.to_string(),
            attribute,
            ..Default::default()
        });
        output
    }

    /// 2-D convolution with square kernel, stride and zero padding.
    pub fn conv2d(&mut self, x: &str, weight: &Tensor, bias: Option<&Tensor>, stride: i64, padding: i64) -> String {
        let k = weight.size()[2..].to_vec();
        let w = self.weight("w", weight);
        let b = bias.map(|b| self.weight("b", b));
        let mut inputs = vec![x, w.as_str()];
        if let Some(b) = &b {
            inputs.push(b);
        }
        self.node(
            "Conv",
            &inputs,
            vec![("kernel_shape", Attr::Ints(k)), ("strides", Attr::Ints(vec![stride; 2])), ("pads", Attr::Ints(vec![padding; 4]))],
        )
    }

    /// PyTorch's `padding_mode="reflect"` on the two spatial axes of an NCHW tensor, as slices
    /// and concatenations: tract's generic reflect `Pad` copies element by element and was the
    /// slowest op of the whole graph.
    pub fn reflect_pad(&mut self, x: &str, pad: i64) -> String {
        let along_w = self.reflect_axis(x, 3, pad);
        self.reflect_axis(&along_w, 2, pad)
    }

    /// Mirrors `pad` rows/columns (excluding the edge) onto both sides of `axis`.
    fn reflect_axis(&mut self, x: &str, axis: i64, pad: i64) -> String {
        // Before: elements pad, pad−1, …, 1. After: −2, −3, …, −(pad+1).
        let mut parts: Vec<String> = (1..=pad).rev().map(|i| self.slice(x, axis, i, i + 1)).collect();
        parts.push(x.to_string());
        parts.extend((2..=pad + 1).map(|i| self.slice(x, axis, -i, -i + 1)));
        let inputs: Vec<&str> = parts.iter().map(String::as_str).collect();
        self.node("Concat", &inputs, vec![("axis", Attr::Int(axis))])
    }

    /// Zero padding along `axis` of a rank-`rank` tensor.
    pub fn zero_pad_axis(&mut self, x: &str, rank: usize, axis: usize, before: i64, after: i64) -> String {
        let mut pads = vec![0; 2 * rank];
        pads[axis] = before;
        pads[rank + axis] = after;
        let pads = self.constant_i64("pads", &pads);
        self.node("Pad", &[x, &pads], vec![("mode", Attr::Str("constant"))])
    }

    /// Elements `start..end` of `axis`.
    pub fn slice(&mut self, x: &str, axis: i64, start: i64, end: i64) -> String {
        let starts = self.constant_i64("starts", &[start]);
        let ends = self.constant_i64("ends", &[end]);
        let axes = self.constant_i64("axes", &[axis]);
        self.node("Slice", &[x, &starts, &ends, &axes], vec![])
    }

    /// ONNX `Reshape` (0 copies the input's dimension at the same index, −1 is inferred).
    pub fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let shape = self.constant_i64("shape", shape);
        self.node("Reshape", &[x, &shape], vec![])
    }

    /// `x · Wᵀ + b` of a tch linear layer on (N, in) rows.
    pub fn linear(&mut self, x: &str, layer: &tch::nn::Linear) -> String {
        let w = self.weight("fc", &layer.ws);
        let mut inputs = vec![x.to_string(), w];
        if let Some(b) = &layer.bs {
            inputs.push(self.weight("fc", b));
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.node("Gemm", &inputs, vec![("transB", Attr::Int(1))])
    }

    /// Mean (or with `op` "ReduceMax", maximum) over `axes`, keeping them.
    pub fn reduce(&mut self, op: &str, x: &str, axes: &[i64]) -> String {
        self.node(op, &[x], vec![("axes", Attr::Ints(axes.to_vec())), ("keepdims", Attr::Int(1))])
    }

    /// (N, C, H, W) → (N, C): global average pool and flatten.
    pub fn global_average(&mut self, x: &str) -> String {
        let pooled = self.node("GlobalAveragePool", &[x], vec![]);
        self.node("Flatten", &[&pooled], vec![("axis", Attr::Int(1))])
    }

    pub fn max_pool(&mut self, x: &str, kernel: i64, stride: i64, pad: i64) -> String {
        self.node(
            "MaxPool",
            &[x],
            vec![
                ("kernel_shape", Attr::Ints(vec![kernel; 2])),
                ("strides", Attr::Ints(vec![stride; 2])),
                ("pads", Attr::Ints(vec![pad; 4])),
            ],
        )
    }

    pub fn concat(&mut self, parts: &[String], axis: i64) -> String {
        let inputs: Vec<&str> = parts.iter().map(String::as_str).collect();
        self.node("Concat", &inputs, vec![("axis", Attr::Int(axis))])
    }

    pub fn relu(&mut self, x: &str) -> String {
        self.node("Relu", &[x], vec![])
    }

    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.node("Add", &[a, b], vec![])
    }

    pub fn scale(&mut self, x: &str, factor: f32) -> String {
        let factor = self.constant_f32("factor", &[], &[factor]);
        self.node("Mul", &[x, &factor], vec![])
    }

    /// Assembles the model: one float input `[N, ...]`, one float output.
    pub fn into_model(self, input: (&str, &[Dim]), output: (&str, &[Dim]), metadata: Vec<(String, String)>) -> ModelProto {
        let graph = GraphProto {
            name: "mer".into(),
            node: self.nodes,
            initializer: self.initializers,
            input: vec![value_info(input.0, input.1)],
            output: vec![value_info(output.0, output.1)],
            ..Default::default()
        };
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
            producer_name: "mer".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(graph),
            metadata_props: metadata.into_iter().map(|(key, value)| StringStringEntryProto { key, value }).collect(),
            ..Default::default()
        }
    }
}

pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

fn attribute(name: &str, value: Attr) -> AttributeProto {
    let mut a = AttributeProto { name: name.to_string(), ..Default::default() };
    match value {
        Attr::Int(i) => {
            a.r#type = AttributeType::Int as i32;
            a.i = i;
        }
        Attr::Ints(ints) => {
            a.r#type = AttributeType::Ints as i32;
            a.ints = ints;
        }
        Attr::Str(s) => {
            a.r#type = AttributeType::String as i32;
            a.s = s.as_bytes().to_vec();
        }
    }
    a
}

fn value_info(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Batch => dimension::Value::DimParam(BATCH.into()),
                Dim::Fixed(n) => dimension::Value::DimValue(*n),
            }),
            ..Default::default()
        })
        .collect();
    let tensor = type_proto::Tensor { elem_type: DataType::Float as i32, shape: Some(TensorShapeProto { dim }) };
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(tensor)), ..Default::default() }),
        ..Default::default()
    }
}
