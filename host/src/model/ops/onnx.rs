//! A small builder for ONNX graphs over tract's protobuf types, and [`Ops`] on it: the models'
//! generic forwards add their nodes here, so the exported graph is built from the same layer
//! description as the tch model. Inference only: batch norms are folded into their convs and
//! dropout is the identity.

use std::collections::HashMap;

use super::{BatchNorm, Conv2d, Ops, Pool};
use prost::Message;
use tch::{Kind, Tensor, nn};
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
    fn conv_node(&mut self, x: &str, weight: &Tensor, bias: Option<&Tensor>, stride: i64, padding: i64) -> String {
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

    /// Mirrors `pad` rows/columns (excluding the edge) onto both sides of `axis`.
    fn reflect_axis(&mut self, x: &str, axis: i64, pad: i64) -> String {
        // Before: elements pad, pad−1, …, 1. After: −2, −3, …, −(pad+1).
        let mut parts: Vec<String> = (1..=pad).rev().map(|i| self.slice(x, axis, i, i + 1)).collect();
        parts.push(x.to_string());
        parts.extend((2..=pad + 1).map(|i| self.slice(x, axis, -i, -i + 1)));
        self.concat_all(&parts, axis)
    }

    /// Zero padding along `axis` of a rank-`rank` tensor.
    fn zero_pad_axis(&mut self, x: &str, rank: usize, axis: usize, before: i64, after: i64) -> String {
        let mut pads = vec![0; 2 * rank];
        pads[axis] = before;
        pads[rank + axis] = after;
        let pads = self.constant_i64("pads", &pads);
        self.node("Pad", &[x, &pads], vec![("mode", Attr::Str("constant"))])
    }

    /// Elements `start..end` of `axis`.
    fn slice(&mut self, x: &str, axis: i64, start: i64, end: i64) -> String {
        let starts = self.constant_i64("starts", &[start]);
        let ends = self.constant_i64("ends", &[end]);
        let axes = self.constant_i64("axes", &[axis]);
        self.node("Slice", &[x, &starts, &ends, &axes], vec![])
    }

    fn times(&mut self, x: &str, factor: f32) -> String {
        let factor = self.constant_f32("factor", &[], &[factor]);
        self.node("Mul", &[x, &factor], vec![])
    }

    fn concat_all(&mut self, parts: &[String], axis: i64) -> String {
        let inputs: Vec<&str> = parts.iter().map(String::as_str).collect();
        self.node("Concat", &inputs, vec![("axis", Attr::Int(axis))])
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

impl Ops for OnnxGraph {
    type T = String;
    type Pair = [String; 2];

    fn param(&mut self, t: &Tensor) -> String {
        self.weight("param", t)
    }

    fn conv2d(&mut self, x: &String, weight: &Tensor, bias: Option<&Tensor>, stride: i64, padding: i64) -> String {
        self.conv_node(x, weight, bias, stride, padding)
    }

    fn conv_bn(&mut self, x: &String, conv: &Conv2d, bn: &BatchNorm) -> String {
        let (weight, bias) = tch::no_grad(|| bn.fold_into(&conv.conv.ws, conv.conv.bs.as_ref()));
        self.conv_node(x, &weight, Some(&bias), conv.stride, conv.padding)
    }

    fn conv1d(&mut self, x: &String, weight: &Tensor, padding: i64) -> String {
        let k = weight.size()[2];
        let w = self.weight("w", weight);
        self.node("Conv", &[x, &w], vec![("kernel_shape", Attr::Ints(vec![k])), ("pads", Attr::Ints(vec![padding; 2]))])
    }

    fn pointwise(&mut self, x: &String, weight: &Tensor, bias: Option<&Tensor>) -> String {
        self.conv_node(x, weight, bias, 1, 0)
    }

    fn linear(&mut self, x: &String, layer: &nn::Linear) -> String {
        let w = self.weight("fc", &layer.ws);
        let mut inputs = vec![x.clone(), w];
        if let Some(b) = &layer.bs {
            inputs.push(self.weight("fc", b));
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.node("Gemm", &inputs, vec![("transB", Attr::Int(1))])
    }

    /// Slices and concatenations: tract's generic reflect `Pad` copies element by element and
    /// was the slowest op of the whole graph.
    fn reflect_pad(&mut self, x: &String, pad: i64) -> String {
        let along_w = self.reflect_axis(x, 3, pad);
        self.reflect_axis(&along_w, 2, pad)
    }

    fn relu(&mut self, x: &String) -> String {
        self.node("Relu", &[x], vec![])
    }

    /// From Erf: the Gelu op needs opset 20.
    fn gelu(&mut self, x: &String) -> String {
        let scaled = self.times(x, std::f32::consts::FRAC_1_SQRT_2);
        let erf = self.node("Erf", &[&scaled], vec![]);
        let one = self.constant_f32("one", &[], &[1.0]);
        let shifted = self.node("Add", &[&erf, &one], vec![]);
        let product = self.node("Mul", &[x, &shifted], vec![]);
        self.times(&product, 0.5)
    }

    fn sigmoid(&mut self, x: &String) -> String {
        self.node("Sigmoid", &[x], vec![])
    }

    fn dropout(&mut self, x: &String, _p: f64) -> String {
        x.clone()
    }

    fn max_pool2d(&mut self, x: &String, kernel: i64, stride: i64, pad: i64) -> String {
        let attrs = vec![
            ("kernel_shape", Attr::Ints(vec![kernel; 2])),
            ("strides", Attr::Ints(vec![stride; 2])),
            ("pads", Attr::Ints(vec![pad; 4])),
        ];
        self.node("MaxPool", &[x], attrs)
    }

    fn avg_pool2d(&mut self, x: &String, kernel: i64, stride: i64, pad: i64) -> String {
        let attrs = vec![
            ("kernel_shape", Attr::Ints(vec![kernel; 2])),
            ("strides", Attr::Ints(vec![stride; 2])),
            ("pads", Attr::Ints(vec![pad; 4])),
            ("count_include_pad", Attr::Int(1)),
        ];
        self.node("AveragePool", &[x], attrs)
    }

    fn global_avg_pool(&mut self, x: &String) -> String {
        let pooled = self.node("GlobalAveragePool", &[x], vec![]);
        self.node("Flatten", &[&pooled], vec![("axis", Attr::Int(1))])
    }

    fn global_pool_keep(&mut self, x: &String, pool: Pool) -> String {
        let op = match pool {
            Pool::Mean => "GlobalAveragePool",
            Pool::Max => "GlobalMaxPool",
        };
        self.node(op, &[x], vec![])
    }

    fn reduce_keep(&mut self, x: &String, axis: i64, pool: Pool) -> String {
        let op = match pool {
            Pool::Mean => "ReduceMean",
            Pool::Max => "ReduceMax",
        };
        self.node(op, &[x], vec![("axes", Attr::Ints(vec![axis])), ("keepdims", Attr::Int(1))])
    }

    fn channel_norm(&mut self, x: &String, gain: &Tensor, bias: &Tensor, eps: f64) -> String {
        let mean = self.reduce_keep(x, 1, Pool::Mean);
        let centred = self.node("Sub", &[x, &mean], vec![]);
        let squared = self.node("Mul", &[&centred, &centred], vec![]);
        let var = self.reduce_keep(&squared, 1, Pool::Mean);
        let eps = self.constant_f32("eps", &[], &[eps as f32]);
        let var = self.node("Add", &[&var, &eps], vec![]);
        let std = self.node("Sqrt", &[&var], vec![]);
        let normed = self.node("Div", &[&centred, &std], vec![]);
        let (gain, bias) = (self.weight("ln_g", gain), self.weight("ln_b", bias));
        let scaled = self.node("Mul", &[&normed, &gain], vec![]);
        self.node("Add", &[&scaled, &bias], vec![])
    }

    fn add(&mut self, a: &String, b: &String) -> String {
        self.node("Add", &[a, b], vec![])
    }

    fn sub(&mut self, a: &String, b: &String) -> String {
        self.node("Sub", &[a, b], vec![])
    }

    fn mul(&mut self, a: &String, b: &String) -> String {
        self.node("Mul", &[a, b], vec![])
    }

    fn scale(&mut self, x: &String, factor: f64) -> String {
        self.times(x, factor as f32)
    }

    fn matmul(&mut self, a: &String, b: &String) -> String {
        self.node("MatMul", &[a, b], vec![])
    }

    fn softmax(&mut self, x: &String, axis: i64) -> String {
        self.node("Softmax", &[x], vec![("axis", Attr::Int(axis))])
    }

    fn concat(&mut self, parts: &[String], axis: i64) -> String {
        self.concat_all(parts, axis)
    }

    fn narrow(&mut self, x: &String, axis: i64, start: i64, len: i64) -> String {
        self.slice(x, axis, start, start + len)
    }

    fn reshape(&mut self, x: &String, shape: &[i64]) -> String {
        let shape = self.constant_i64("shape", shape);
        self.node("Reshape", &[x, &shape], vec![])
    }

    fn permute(&mut self, x: &String, perm: &[i64]) -> String {
        self.node("Transpose", &[x], vec![("perm", Attr::Ints(perm.to_vec()))])
    }

    fn pair_from_channels(&mut self, x: &String, start: i64, c: i64) -> [String; 2] {
        [self.slice(x, 1, start, start + c), self.slice(x, 1, start + c, start + 2 * c)]
    }

    fn pair_map(&mut self, pair: &[String; 2], mut f: impl FnMut(&mut Self, &String) -> String) -> [String; 2] {
        let first = f(self, &pair[0]);
        [first, f(self, &pair[1])]
    }

    /// The vacated places are zero padding.
    fn temporal_shift(&mut self, [segment0, segment1]: &[String; 2], c: i64) -> [String; 2] {
        let fold = c / 8;
        let from_next = self.slice(segment1, 1, 0, fold);
        let from_next = self.zero_pad_axis(&from_next, 4, 1, 0, fold);
        let rest0 = self.slice(segment0, 1, 2 * fold, c);
        let shifted0 = self.concat_all(&[from_next, rest0], 1);
        let from_previous = self.slice(segment0, 1, fold, 2 * fold);
        let from_previous = self.zero_pad_axis(&from_previous, 4, 1, fold, 0);
        let rest1 = self.slice(segment1, 1, 2 * fold, c);
        let shifted1 = self.concat_all(&[from_previous, rest1], 1);
        [shifted0, shifted1]
    }

    fn pair_mean(&mut self, [a, b]: &[String; 2]) -> String {
        let sum = self.node("Add", &[a, b], vec![]);
        self.times(&sum, 0.5)
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
