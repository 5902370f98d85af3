//! Running an exported model with tract: the one inference path of host and device.
//!
//! The file's batch dimension is symbolic, but tract runs one sample at a time: at batch 1 it
//! gathers convolution patches lazily instead of materialising them, which made batch 16 about
//! three times faster per sample than a batch-16 plan (docs/BENCHMARKS.md). Several samples
//! are spread over the configured threads; a single sample uses them inside its matrix products.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;
use tract_linalg::multithread::{Executor, multithread_tract_scope};
use tract_onnx::pb::{ModelProto, TensorProto};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::konst::Const;

use crate::error::{Error, Result};
use crate::manifest::{LogitAgreement, Manifest, ONNX_METADATA_KEY};

mod reflect_pad;
mod row_runs;

pub struct OnnxModel {
    /// Optimised for one sample of `input_shape`.
    plan: Arc<TypedRunnableModel>,
    /// (channels, height, width) of one sample.
    input_shape: [usize; 3],
    metadata: HashMap<String, String>,
    threads: usize,
    /// Thread pool for the matrix products of a single sample.
    executor: Executor,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel").field("input_shape", &self.input_shape).finish_non_exhaustive()
    }
}

fn model_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Model(format!("{what}: {e}"))
}

impl OnnxModel {
    /// Parses an ONNX file's bytes. The model must have one float input (N, C, H, W) with fixed
    /// C, H, W and one output, and keep all weights inside the file.
    pub fn from_bytes(bytes: &[u8]) -> Result<OnnxModel> {
        OnnxModel::from_proto(OnnxModel::decode(bytes)?)
    }

    /// The decoded file, which owns copies of its weights: the bytes it came from may go.
    /// `bytes` may be a slice or a file read as it is decoded ([`crate::bundle::FileSection`]).
    pub fn decode(bytes: impl prost::bytes::Buf) -> Result<ModelProto> {
        let len = bytes.remaining();
        ModelProto::decode(bytes)
            .map_err(|e| model_error(&format!("not a readable ONNX file ({len} bytes; truncated or another format?)"), e))
    }

    /// [`OnnxModel::from_bytes`] from the decoded file.
    pub fn from_proto(proto: ModelProto) -> Result<OnnxModel> {
        let graph = proto.graph.as_ref().ok_or_else(|| Error::Model("the ONNX file has no graph".into()))?;
        // Weights stored beside the file would be read from paths the file names: refuse them.
        if graph.initializer.iter().any(|t| !t.external_data.is_empty() || t.data_location == Some(1)) {
            return Err(Error::Model("the ONNX model keeps weights in external files; only self-contained models are accepted".into()));
        }
        if graph.input.len() != 1 || graph.output.len() != 1 {
            return Err(Error::Model(format!(
                "the ONNX model has {} inputs and {} outputs; a mer model has one of each",
                graph.input.len(),
                graph.output.len()
            )));
        }
        let input_shape = sample_shape(&graph.input[0])?;
        let metadata = proto.metadata_props.iter().map(|e| (e.key.clone(), e.value.clone())).collect();
        let [c, h, w] = input_shape;
        let (proto, weights) = set_weights_aside(proto);
        let mut model = tract_onnx::onnx().model_for_proto_model(&proto).map_err(|e| model_error("tract cannot load the ONNX graph", e))?;
        drop(proto);
        put_weights_in(&mut model, weights)?;
        let plan = model
            .with_input_fact(0, f32::fact([1, c, h, w]).into())
            .and_then(|m| m.into_typed())
            .and_then(|m| m.into_decluttered())
            .and_then(|m| {
                let convolutions = row_runs::convolutions(&m);
                let mut optimized = m.into_optimized()?;
                reflect_pad::pad_in_one_pass(&mut optimized)?;
                row_runs::pack_in_runs(&mut optimized, &convolutions)?;
                optimized.into_runnable()
            })
            .map_err(|e| model_error("tract cannot load the ONNX graph", e))?;
        Ok(OnnxModel { plan, input_shape, metadata, threads: 1, executor: Executor::SingleThread })
    }

    /// Uses up to `threads` threads per call (1 = the calling thread only).
    pub fn with_threads(mut self, threads: usize) -> OnnxModel {
        self.threads = threads.max(1);
        self.executor = if self.threads > 1 { Executor::multithread(self.threads) } else { Executor::SingleThread };
        self
    }

    pub fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }

    /// The manifest embedded by `mer export`, if the file has one.
    pub fn manifest(&self) -> Option<Result<Manifest>> {
        self.metadata.get(ONNX_METADATA_KEY).map(|json| Manifest::from_json(json))
    }

    /// Runs `batch` samples laid out (N, C, H, W) and returns one row of outputs per sample.
    pub fn run(&self, input: &[f32], batch: usize) -> Result<Vec<Vec<f32>>> {
        let [c, h, w] = self.input_shape;
        let per_sample = c * h * w;
        if batch == 0 || input.len() != batch * per_sample {
            return Err(Error::size(
                "model input",
                format!("{batch} × {c} × {h} × {w} = {} values", batch * per_sample),
                format!("{} values", input.len()),
            ));
        }
        let samples: Vec<&[f32]> = input.chunks(per_sample).collect();
        if batch == 1 || self.threads == 1 {
            return multithread_tract_scope(self.executor.clone(), || samples.iter().map(|x| self.run_one(x)).collect());
        }
        let per_thread = batch.div_ceil(self.threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> = samples
                .chunks(per_thread)
                .map(|chunk| scope.spawn(move || chunk.iter().map(|x| self.run_one(x)).collect::<Result<Vec<_>>>()))
                .collect();
            let mut rows = Vec::with_capacity(batch);
            for worker in workers {
                rows.extend(worker.join().map_err(|_| Error::Model("an inference thread panicked".into()))??);
            }
            Ok(rows)
        })
    }

    fn run_one(&self, sample: &[f32]) -> Result<Vec<f32>> {
        let [c, h, w] = self.input_shape;
        let tensor =
            tract_ndarray::Array4::from_shape_vec((1, c, h, w), sample.to_vec()).map_err(|e| model_error("cannot shape the input", e))?;
        let outputs = self.plan.run(tvec!(Tensor::from(tensor).into())).map_err(|e| model_error("inference failed", e))?;
        let view = outputs[0].to_plain_array_view::<f32>().map_err(|e| model_error("the model's output is not float32", e))?;
        if view.shape().first() != Some(&1) {
            return Err(Error::Model(format!("the model returned shape {:?} for one sample", view.shape())));
        }
        Ok(view.iter().copied().collect())
    }

    /// Runs the manifest's probe and checks the logits against the exporter's.
    pub fn check_probe(&self, manifest: &Manifest) -> Result<LogitAgreement> {
        if manifest.input_shape() != self.input_shape {
            return Err(Error::Model(format!(
                "the manifest describes input {:?}, the ONNX graph takes {:?}",
                manifest.input_shape(),
                self.input_shape
            )));
        }
        let input = manifest.probe.regenerate(self.input_shape)?;
        let got = self.run(&input, manifest.probe.batch)?;
        let agreement = LogitAgreement::between(&manifest.probe.logits, &got);
        if !agreement.within_tolerance() {
            return Err(Error::Model(format!(
                "probe check failed: max |logit difference| {:.3e} (tolerance {:.0e}), {} of {} arg-max differ; this runtime does not compute what the exporter did",
                agreement.max_abs_diff,
                crate::manifest::LOGIT_TOLERANCE,
                agreement.argmax_mismatches,
                manifest.probe.batch
            )));
        }
        Ok(agreement)
    }

    /// Where tract's time goes on one sample, in one thread: milliseconds per run summed over
    /// the nodes of each kind (an operator and, for a matrix product, its m × k × n), largest
    /// first, with the node count. For `mer bench-infer --profile`.
    pub fn profile(&self, sample: &[f32], runs: usize) -> Result<Vec<OpTime>> {
        let [c, h, w] = self.input_shape;
        if sample.len() != c * h * w {
            return Err(Error::size("model input", format!("{c} × {h} × {w} values"), format!("{} values", sample.len())));
        }
        let input: TValue = tract_ndarray::Array4::from_shape_vec((1, c, h, w), sample.to_vec())
            .map(Tensor::from)
            .map_err(|e| model_error("cannot shape the input", e))?
            .into();
        let mut per_node: HashMap<usize, std::time::Duration> = HashMap::new();
        for _ in 0..runs.max(1) {
            let mut state = tract_onnx::tract_core::plan::SimpleState::new(&self.plan).map_err(|e| model_error("inference failed", e))?;
            state
                .run_plan_with_eval(tvec!(input.clone()), |session, op_state, node, inputs| {
                    let start = std::time::Instant::now();
                    let out = tract_onnx::tract_core::plan::eval(session, op_state, node, inputs);
                    *per_node.entry(node.id).or_default() += start.elapsed();
                    out
                })
                .map_err(|e| model_error("inference failed", e))?;
        }
        let mut kinds: HashMap<String, OpTime> = HashMap::new();
        for (id, time) in per_node {
            let node = self.plan.model().node(id);
            let info = node.op().info().unwrap_or_default();
            let geometry = info.iter().find_map(|line| line.strip_prefix("Mult: ")).map(str::to_string);
            let kind = match geometry {
                Some(g) => format!("{} {g}", node.op().name()),
                None => format!("{} → {:?}", node.op().name(), node.outputs[0].fact.shape),
            };
            let entry = kinds.entry(kind.clone()).or_insert(OpTime { kind, nodes: 0, ms_per_run: 0.0 });
            entry.nodes += 1;
            entry.ms_per_run += time.as_secs_f64() * 1e3 / runs.max(1) as f64;
        }
        let mut rows: Vec<OpTime> = kinds.into_values().collect();
        rows.sort_by(|a, b| b.ms_per_run.total_cmp(&a.ms_per_run));
        Ok(rows)
    }
}

/// Initializers of at least this many bytes are put into tract's graph after it is built.
const SET_ASIDE_BYTES: usize = 64 * 1024;
/// The first value of the stand-in for a set-aside weight (the second is its index): tract
/// merges equal constants, so every stand-in must differ from the others and from real ones.
const STAND_IN_MARK: i64 = 0x6d65_725f_7769_6768;

/// Takes the large weights out of the decoded file, leaving small distinct stand-ins. tract
/// converts every initializer while it reads the graph, so without this each weight would be
/// held twice at once — in the decoded file and in tract — which for HTNet (470 MB) is most of
/// the peak memory of loading a model.
fn set_weights_aside(mut proto: ModelProto) -> (ModelProto, Vec<TensorProto>) {
    let mut aside = Vec::new();
    if let Some(graph) = proto.graph.as_mut() {
        for init in graph.initializer.iter_mut().filter(|t| t.raw_data.len() >= SET_ASIDE_BYTES) {
            let stand_in = TensorProto {
                name: init.name.clone(),
                data_type: tract_onnx::pb::tensor_proto::DataType::Int64 as i32,
                dims: vec![2],
                int64_data: vec![STAND_IN_MARK, aside.len() as i64],
                ..Default::default()
            };
            aside.push(std::mem::replace(init, stand_in));
        }
    }
    (proto, aside)
}

/// Replaces each stand-in constant of [`set_weights_aside`] by its weight, converting one at a
/// time and letting each decoded copy go as soon as tract holds its own.
fn put_weights_in(model: &mut InferenceModel, weights: Vec<TensorProto>) -> Result<()> {
    let mut slots: Vec<Option<usize>> = vec![None; weights.len()];
    for node in model.nodes() {
        let Some(value) = node.op_as::<Const>().map(|c| c.val()) else { continue };
        if value.datum_type() == i64::datum_type() && value.shape() == [2] {
            let v = value.to_plain_array_view::<i64>().map_err(|e| model_error("reading a constant", e))?;
            if v[0] == STAND_IN_MARK {
                let slot = slots.get_mut(v[1] as usize).ok_or_else(|| Error::Model(format!("constant {} is not a weight", node.name)))?;
                if slot.replace(node.id).is_some() {
                    return Err(Error::Model(format!("weight {} appears twice in tract's graph", v[1])));
                }
            }
        }
    }
    for (weight, slot) in weights.into_iter().zip(slots) {
        let id = slot.ok_or_else(|| Error::Model(format!("the weight {} has no place in tract's graph", weight.name)))?;
        let tensor = tract_onnx::tensor::load_tensor(&tract_onnx::data_resolver::FopenDataResolver, &weight, None)
            .map_err(|e| model_error(&format!("cannot read the weight {}", weight.name), e))?;
        drop(weight);
        let tensor = tensor.into_arc_tensor();
        let fact = TypedFact::try_from(tensor.clone()).map_err(|e| model_error("typing a weight", e))?;
        let node = model.node_mut(id);
        node.op = Const::new(tensor).map_err(|e| model_error("placing a weight", e))?.into();
        node.outputs[0].fact = fact.into();
    }
    Ok(())
}

/// Time of one kind of node in [`OnnxModel::profile`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct OpTime {
    pub kind: String,
    pub nodes: usize,
    pub ms_per_run: f64,
}

/// (C, H, W) of a graph input declared as (N, C, H, W) with fixed C, H, W.
fn sample_shape(input: &tract_onnx::pb::ValueInfoProto) -> Result<[usize; 3]> {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value;
    use tract_onnx::pb::type_proto;
    let dims: Option<Vec<Option<i64>>> = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) if t.elem_type == 1 => t.shape.as_ref().map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(Value::DimValue(v)) if v > 0 => Some(v),
                    _ => None,
                })
                .collect()
        }),
        _ => return Err(Error::Model(format!("the ONNX input {:?} is not a float32 tensor", input.name))),
    };
    match dims.as_deref() {
        Some([_, Some(c), Some(h), Some(w)]) => Ok([*c as usize, *h as usize, *w as usize]),
        _ => Err(Error::Model(format!("the ONNX input {:?} is not declared as (N, C, H, W) with fixed C, H and W: {dims:?}", input.name))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Bundle;

    fn default_model() -> ModelProto {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/skd-tstsan-synthetic.merb");
        let bytes = std::fs::read(&path).unwrap();
        OnnxModel::decode(Bundle::from_bytes(&bytes).unwrap().onnx()).unwrap()
    }

    /// What tract alone computes for `proto` on `input` (one sample).
    fn tract_alone(proto: &ModelProto, input: &[f32]) -> Vec<f32> {
        let [c, h, w] = sample_shape(&proto.graph.as_ref().unwrap().input[0]).unwrap();
        let plain = tract_onnx::onnx()
            .model_for_proto_model(proto)
            .and_then(|m| m.with_input_fact(0, f32::fact([1, c, h, w]).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .unwrap();
        let out = plain.run(tvec!(Tensor::from_shape(&[1, c, h, w], input).unwrap().into())).unwrap();
        out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
    }

    /// How many of the model's convolutions gather their patches in runs.
    fn convolutions_in_runs(model: &OnnxModel) -> usize {
        model.plan.model().nodes().iter().filter(|n| n.op().name() == "RowRunsIm2col").count()
    }

    /// (c, h, w, out, k, stride, pad): a convolution of a (1, c, h, w) input to `out` channels
    /// with a k × k kernel, the stride and zero padding given.
    type Geometry = (usize, usize, usize, usize, usize, usize, usize);

    /// A model of one convolution (bias included), its input first padded by `reflect` on each
    /// side by reflection as exported models do it (single-row slices, concatenations).
    fn one_convolution((c, h, w, out, k, stride, pad): Geometry, reflect: usize) -> ModelProto {
        use tract_onnx::pb::attribute_proto::AttributeType;
        use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
        use tract_onnx::pb::{
            AttributeProto, GraphProto, NodeProto, OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto, type_proto,
        };
        let float = tract_onnx::pb::tensor_proto::DataType::Float as i32;
        let value = |name: &str, dims: &[usize]| ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: float,
                    shape: Some(TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|d| Dimension { value: Some(dimension::Value::DimValue(*d as i64)), ..Default::default() })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ints = |name: &str, v: Vec<usize>| AttributeProto {
            name: name.into(),
            r#type: AttributeType::Ints as i32,
            ints: v.into_iter().map(|x| x as i64).collect(),
            ..Default::default()
        };
        let tensor = |name: &str, dims: &[usize], seed: usize| TensorProto {
            name: name.into(),
            dims: dims.iter().map(|d| *d as i64).collect(),
            data_type: float,
            float_data: (0..dims.iter().product::<usize>()).map(|i| (((i + seed) * 7919 % 211) as f32 - 105.0) / 211.0).collect(),
            ..Default::default()
        };
        let mut initializer = vec![tensor("w", &[out, c, k, k], 1), tensor("b", &[out], 2)];
        let mut node = Vec::new();
        let mut x = "x".to_string();
        for axis in [3, 2] {
            if reflect == 0 {
                break;
            }
            // Elements reflect, …, 1 before; -2, …, -(reflect + 1) after (the exporter's indices).
            let before = (1..=reflect as i64).rev();
            let after = (2..=reflect as i64 + 1).map(|i| -i);
            let mut parts = Vec::new();
            for (n, start) in before.chain(after).enumerate() {
                let name = format!("{x}.{axis}.{n}");
                for (what, v) in [("starts", start), ("ends", start + 1), ("axes", axis)] {
                    let int64 = tract_onnx::pb::tensor_proto::DataType::Int64 as i32;
                    initializer.push(TensorProto {
                        name: format!("{name}.{what}"),
                        dims: vec![1],
                        data_type: int64,
                        int64_data: vec![v],
                        ..Default::default()
                    });
                }
                let inputs = ["", ".starts", ".ends", ".axes"].map(|s| if s.is_empty() { x.clone() } else { format!("{name}{s}") });
                node.push(NodeProto { op_type: "Slice".into(), input: inputs.into(), output: vec![name.clone()], ..Default::default() });
                parts.push(name);
            }
            parts.insert(reflect, x.clone());
            let padded = format!("{x}.padded{axis}");
            let axis_attr = AttributeProto { name: "axis".into(), r#type: AttributeType::Int as i32, i: axis, ..Default::default() };
            node.push(NodeProto {
                op_type: "Concat".into(),
                input: parts,
                output: vec![padded.clone()],
                attribute: vec![axis_attr],
                ..Default::default()
            });
            x = padded;
        }
        node.push(NodeProto {
            op_type: "Conv".into(),
            input: vec![x, "w".into(), "b".into()],
            output: vec!["y".into()],
            attribute: vec![ints("kernel_shape", vec![k, k]), ints("strides", vec![stride, stride]), ints("pads", vec![pad; 4])],
            ..Default::default()
        });
        let (ph, pw) = (h + 2 * pad + 2 * reflect, w + 2 * pad + 2 * reflect);
        let (oh, ow) = ((ph - k) / stride + 1, (pw - k) / stride + 1);
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
            graph: Some(GraphProto {
                node,
                initializer,
                input: vec![value("x", &[1, c, h, w])],
                output: vec![value("y", &[1, out, oh, ow])],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn convolutions_gathered_in_runs_compute_exactly_what_tract_alone_does() {
        // Rows whose points split across panels (20, 46 wide) or fill them (24, 48), a partial
        // last panel, zero padding (tract pads first), stride two (no runs: every value apart),
        // kernels of 3, 5 and 7, and small maps of many channels (tract's panels of 5 and 8).
        for (c, h, w, out, k, stride, pad) in [
            (3, 20, 20, 8, 3, 1, 1),
            (32, 26, 26, 32, 3, 1, 0),
            (16, 50, 50, 32, 3, 2, 0),
            (4, 30, 30, 16, 7, 1, 0),
            (8, 50, 52, 64, 5, 1, 1),
            (2, 48, 48, 16, 3, 1, 0),
            (64, 12, 12, 64, 3, 1, 0),
            (128, 7, 7, 128, 3, 1, 0),
        ] {
            let proto = one_convolution((c, h, w, out, k, stride, pad), 0);
            let ours = OnnxModel::from_proto(proto.clone()).unwrap();
            assert_eq!(convolutions_in_runs(&ours), 1, "{c}×{h}×{w}, {k}×{k} stride {stride}");
            let input: Vec<f32> = (0..c * h * w).map(|i| ((i * 37 % 101) as f32) / 101.0 - 0.5).collect();
            let (got, expected) = (ours.run(&input, 1).unwrap().remove(0), tract_alone(&proto, &input));
            let first_difference = got.iter().zip(&expected).position(|(a, b)| a.to_bits() != b.to_bits());
            assert!(
                got.len() == expected.len() && first_difference.is_none(),
                "{c}×{h}×{w}, {k}×{k} stride {stride}: {} values against {}, first difference at {first_difference:?}",
                got.len(),
                expected.len()
            );
        }
    }

    #[test]
    fn reflection_padding_in_one_pass_computes_exactly_what_tract_alone_does() {
        for (c, h, w, reflect) in [(32, 24, 24, 1), (16, 48, 48, 3), (2, 9, 7, 2), (1, 5, 6, 4)] {
            let proto = one_convolution((c, h, w, 8, 3, 1, 0), reflect);
            let ours = OnnxModel::from_proto(proto.clone()).unwrap();
            let in_one_pass = ours.plan.model().nodes().iter().filter(|n| n.op().name() == "ReflectPad2d").count();
            assert_eq!(in_one_pass, 1, "{c}×{h}×{w} padded by {reflect}");
            let input: Vec<f32> = (0..c * h * w).map(|i| ((i * 37 % 101) as f32) / 101.0 - 0.5).collect();
            let (got, expected) = (ours.run(&input, 1).unwrap().remove(0), tract_alone(&proto, &input));
            assert!(got.iter().map(|v| v.to_bits()).eq(expected.iter().map(|v| v.to_bits())), "{c}×{h}×{w} padded by {reflect}");
        }
    }

    #[test]
    fn weights_put_in_afterwards_compute_exactly_what_tract_alone_does() {
        let proto = default_model();
        let (_, aside) = set_weights_aside(proto.clone());
        assert!(aside.len() >= 10, "{} weights set aside", aside.len());
        let ours = OnnxModel::from_proto(proto.clone()).unwrap();
        // Most of its convolutions (all those on rows narrower than tract's direct ones) too.
        assert!(convolutions_in_runs(&ours) >= 100, "{} convolutions in runs", convolutions_in_runs(&ours));
        let in_one_pass = ours.plan.model().nodes().iter().filter(|n| n.op().name() == "ReflectPad2d").count();
        assert!(in_one_pass >= 90, "{in_one_pass} reflection paddings in one pass");

        let [c, h, w] = ours.input_shape();
        let input: Vec<f32> = (0..c * h * w).map(|i| ((i * 37 % 101) as f32) / 101.0).collect();
        assert_eq!(ours.run(&input, 1).unwrap(), vec![tract_alone(&proto, &input)]);
    }

    #[test]
    fn a_stand_in_left_without_its_weight_is_an_error() {
        let (proto, mut aside) = set_weights_aside(default_model());
        let mut model = tract_onnx::onnx().model_for_proto_model(&proto).unwrap();
        aside.push(TensorProto { name: "extra".into(), ..Default::default() });
        let e = put_weights_in(&mut model, aside).unwrap_err().to_string();
        assert!(e.contains("the weight extra has no place"), "{e}");
    }
}
