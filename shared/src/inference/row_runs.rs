//! Convolution patches packed in runs. tract feeds a convolution's matrix product from
//! `LazyIm2col`, which fills each panel of the patch matrix (one kernel tap per row, `r` output
//! points per column) one value at a time through a table of offsets. Where a panel's output
//! points are neighbours on one output row read with stride one, each tap reads them as one
//! contiguous run of the input; [`RowRunsIm2col`] copies such runs whole and leaves every other
//! panel to the per-value path. The panels hold the same values in the same places, so the
//! products, and the model's outputs, are unchanged to the bit. On the narrow (24–48 point)
//! rows of SKD-TSTSAN this was most of the cost of its convolutions (docs/BENCHMARKS.md).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use tract_linalg::WeightType;
use tract_linalg::mmm::{EagerPackedInput, MMMInputFormat, MMMInputValue, PackedMatrixStorage};
use tract_linalg::pack::{PackedFormat, PackingWriter};
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, PaddingSpec};
use tract_onnx::tract_core::ops::matmul::pack::DynPackedExoticFact;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

/// The name tract gives the patch-gathering node it wires for a convolution named `conv`.
fn lazy_im2col_name(conv: &str) -> String {
    format!("{conv}.lazyIm2col")
}

/// The convolutions of a decluttered model, by node name, as tract will turn them into matrix
/// products.
pub(super) fn convolutions(model: &TypedModel) -> HashMap<String, Conv> {
    model.nodes().iter().filter_map(|n| n.op_as::<Conv>().map(|c| (lazy_im2col_name(&n.name), c.clone()))).collect()
}

/// Replaces each of tract's `LazyIm2col` nodes in `model` (optimised from the model `convs`
/// came from) by [`RowRunsIm2col`] where it can take it; returns how many it replaced.
pub(super) fn pack_in_runs(model: &mut TypedModel, convs: &HashMap<String, Conv>) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        let Some(conv) = convs.get(&node.name) else { continue };
        if node.op().name() != "LazyIm2col" || node.inputs.len() != 1 {
            continue;
        }
        let input = model.outlet_fact(node.inputs[0])?;
        let Some(fact) = node.outputs[0].fact.exotic_fact().and_then(|f| f.downcast_ref::<DynPackedExoticFact>()) else {
            continue;
        };
        let Some(packer) = fact.packers.first().and_then(|p| p.downcast_ref::<PackedFormat>()) else { continue };
        let Some(params) = RunsParams::for_conv(conv, input, packer.clone())? else { continue };
        // Only where the geometry gives exactly the matrix tract sized for this node.
        if fact.k.to_usize().ok() != Some(params.k_byte_offsets.len()) || fact.mn.to_usize().ok() != Some(params.n_byte_offsets.len()) {
            continue;
        }
        model.node_mut(id).op = Box::new(RowRunsIm2col { params: Arc::new(params) });
        replaced += 1;
    }
    Ok(replaced)
}

/// Where each value of the patch matrix is read: the input's byte offset of kernel tap k
/// (channel and position in the kernel) plus that of output point n; as in tract's own.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct RunsParams {
    packer: PackedFormat,
    k_byte_offsets: Vec<isize>,
    n_byte_offsets: Vec<isize>,
    /// Per panel: whether its output points are `r` consecutive input values.
    contiguous: Vec<bool>,
}

impl RunsParams {
    /// The geometry of `conv` over an input of fact `input`, for an f32, single-group
    /// convolution of one sample whose padding tract has already applied; `None` otherwise.
    fn for_conv(conv: &Conv, input: &TypedFact, packer: PackedFormat) -> TractResult<Option<RunsParams>> {
        let Some(shape) = input.shape.as_concrete() else { return Ok(None) };
        if input.datum_type != f32::datum_type() || conv.group != 1 || conv.q_params.is_some() || shape.first() != Some(&1) {
            return Ok(None);
        }
        let valid = tract_onnx::tract_core::ops::cnn::PoolSpec { padding: PaddingSpec::Valid, ..conv.pool_spec.clone() };
        let geo = valid.compute_geo(&input.shape)?.to_concrete(shape)?.into_owned();
        let size = std::mem::size_of::<f32>() as isize;
        let n_byte_offsets: Vec<isize> = geo.patch.centers_offsets().into_iter().map(|x| x * size).collect();
        let c_stride = *geo.input_shape.c_stride() as isize;
        let field = &geo.patch.standard_layout_data_field;
        let k_byte_offsets: Vec<isize> =
            (0..conv.input_channels() as isize).flat_map(|c| field.iter().map(move |x| (x + c * c_stride) * size)).collect();
        let r = packer.r;
        let contiguous = n_byte_offsets
            .chunks(r)
            .map(|panel| panel.len() == r && panel.iter().enumerate().all(|(j, o)| *o == panel[0] + j as isize * size))
            .collect();
        Ok(Some(RunsParams { packer, k_byte_offsets, n_byte_offsets, contiguous }))
    }

    /// Writes panel `i` of the patch matrix of `input` at `panel` (the packer's single-panel
    /// layout: for each k, the panel's `r` values).
    ///
    /// # Safety
    /// `input` is the tensor the offsets were built for and `panel` holds a single panel.
    unsafe fn write_panel(&self, input: *const u8, i: usize, panel: *mut f32) {
        let r = self.packer.r;
        if self.contiguous[i] {
            // SAFETY: (every arm) the caller's contract; a run of r values starts at each tap.
            unsafe {
                let first = input.offset(self.n_byte_offsets[i * r]);
                match r {
                    8 => copy_runs::<8>(&self.k_byte_offsets, first, panel),
                    12 => copy_runs::<12>(&self.k_byte_offsets, first, panel),
                    16 => copy_runs::<16>(&self.k_byte_offsets, first, panel),
                    _ => {
                        for (k, off) in self.k_byte_offsets.iter().enumerate() {
                            std::ptr::copy_nonoverlapping(first.offset(*off) as *const f32, panel.add(k * r), r);
                        }
                    }
                }
            }
            return;
        }
        let points = &self.n_byte_offsets[i * r..((i + 1) * r).min(self.n_byte_offsets.len())];
        let mut writer = if points.len() == r {
            Writer::Whole(self.packer.write_single_panel_with_k_outer(panel))
        } else {
            Writer::Partial(self.packer.write_with_k_outer(panel, self.k_byte_offsets.len(), points.len()))
        };
        for off in &self.k_byte_offsets {
            for point in points {
                // SAFETY: the caller's contract.
                writer.write(unsafe { *(input.offset(off + point) as *const f32) });
            }
        }
    }
}

/// Each tap's run of `R` values from `first` (the panel's first point) into the panel; compiled
/// for the host's vector instructions, which move a run in fewer, wider copies.
///
/// # Safety
/// A run of `R` values starts at `first` plus each offset, and the panel holds one per offset.
#[multiversion::multiversion(targets = "simd")]
unsafe fn copy_runs<const R: usize>(k_byte_offsets: &[isize], first: *const u8, panel: *mut f32) {
    for (k, off) in k_byte_offsets.iter().enumerate() {
        // SAFETY: the caller's contract; unaligned, as neither side is aligned to R values.
        unsafe {
            let run = (first.offset(*off) as *const [f32; R]).read_unaligned();
            (panel.add(k * R) as *mut [f32; R]).write_unaligned(run);
        }
    }
}

/// tract's two panel writers, for a whole panel and for the last, partial one.
enum Writer<'p> {
    Whole(tract_linalg::pack::KOutSinglePanelWriter<'p, f32>),
    Partial(tract_linalg::pack::KOutWriter<'p, f32>),
}

impl Writer<'_> {
    #[inline(always)]
    fn write(&mut self, v: f32) {
        match self {
            Writer::Whole(w) => w.write(v),
            Writer::Partial(w) => w.write(v),
        }
    }
}

impl fmt::Display for RunsParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RowRunsIm2col")
    }
}

impl ExoticFact for RunsParams {
    fn buffer_sizes(&self) -> TVec<TDim> {
        tvec!(MMMInputFormat::mem_size(self, self.k_byte_offsets.len().to_dim(), self.n_byte_offsets.len().to_dim()))
    }
}

/// Like tract's own lazy format: a matrix product reads it through `panel_bytes` only.
impl MMMInputFormat for RunsParams {
    fn prepare_tensor(&self, _t: &Tensor, _k_axis: usize, _mn_axis: usize) -> TractResult<Tensor> {
        bail!("patches packed in runs are built from a convolution input only")
    }

    fn prepare_one_view(&self, _t: &TensorView, _k_axis: usize, _mn_axis: usize) -> TractResult<Box<dyn MMMInputValue>> {
        bail!("patches packed in runs are built from a convolution input only")
    }

    fn precursor(&self) -> WeightType {
        self.packer.precursor()
    }

    fn r(&self) -> usize {
        self.packer.r
    }

    fn k_alignment(&self) -> usize {
        1
    }

    fn mem_size(&self, k: TDim, mn: TDim) -> TDim {
        k * mn * std::mem::size_of::<f32>()
    }

    fn extract_at_mn_f16(&self, _data: &EagerPackedInput, _mn: usize, _slice: &mut [f16]) -> TractResult<()> {
        bail!("patches packed in runs are read by panels only")
    }

    fn extract_at_mn_f32(&self, _data: &EagerPackedInput, _mn: usize, _slice: &mut [f32]) -> TractResult<()> {
        bail!("patches packed in runs are read by panels only")
    }
}

/// The op that stands where tract's `LazyIm2col` stood: it hands the matrix product a
/// [`RunsInput`] over its input tensor.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) struct RowRunsIm2col {
    params: Arc<RunsParams>,
}

impl Op for RowRunsIm2col {
    fn name(&self) -> StaticName {
        "RowRunsIm2col".into()
    }

    op_as_typed_op!();
}

impl EvalOp for RowRunsIm2col {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let tensor = args_1!(inputs);
        ensure!(tensor.datum_type() == f32::datum_type(), "patches packed in runs are f32 only");
        let value: Box<dyn MMMInputValue> = Box::new(RunsInput { tensor, params: self.params.clone() });
        Ok(tvec!(PackedMatrixStorage::new_batched(&[1, 1], tvec!(value)).into_tensor(f32::datum_type()).into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for RowRunsIm2col {
    as_op!();

    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let fact = DynPackedExoticFact {
            k: self.params.k_byte_offsets.len().to_dim(),
            mn: self.params.n_byte_offsets.len().to_dim(),
            packers: vec![Box::new(self.params.packer.clone())],
        };
        Ok(tvec!(f32::fact([1, 1]).with_exotic_fact(fact)))
    }
}

/// One convolution input, read by the matrix product a panel at a time.
#[derive(Clone, Debug)]
struct RunsInput {
    tensor: TValue,
    params: Arc<RunsParams>,
}

impl PartialEq for RunsInput {
    fn eq(&self, other: &Self) -> bool {
        self.params == other.params && self.tensor.as_bytes() == other.tensor.as_bytes()
    }
}

impl Eq for RunsInput {}

impl std::hash::Hash for RunsInput {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.tensor.as_bytes(), &self.params).hash(state);
    }
}

impl fmt::Display for RunsInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "patches in runs of {:?}", self.tensor.shape())
    }
}

impl MMMInputValue for RunsInput {
    fn format(&self) -> &dyn MMMInputFormat {
        &*self.params
    }

    fn scratch_panel_buffer_layout(&self) -> Option<std::alloc::Layout> {
        Some(self.params.packer.single_panel_layout(self.k(), std::mem::size_of::<f32>()))
    }

    fn panel_bytes(&self, i: usize, buffer: Option<*mut u8>) -> TractResult<*const u8> {
        let panel = buffer.context("a panel of patches needs a scratch buffer")?;
        ensure!(i < self.params.contiguous.len(), "panel {i} of {}", self.params.contiguous.len());
        // SAFETY: the buffer has the single-panel layout asked for above, and the tensor has the
        // shape the offsets were built for (the node's input fact, fixed in the plan).
        unsafe { self.params.write_panel(self.tensor.as_ptr_unchecked::<u8>(), i, panel as *mut f32) };
        Ok(panel)
    }

    fn mn(&self) -> usize {
        self.params.n_byte_offsets.len()
    }

    fn k(&self) -> usize {
        self.params.k_byte_offsets.len()
    }

    fn exotic_fact(&self) -> &dyn ExoticFact {
        &*self.params
    }

    fn extract_at_mn_f16(&self, _mn: usize, _slice: &mut [f16]) -> TractResult<()> {
        bail!("patches packed in runs are read by panels only")
    }

    fn extract_at_mn_f32(&self, _mn: usize, _slice: &mut [f32]) -> TractResult<()> {
        bail!("patches packed in runs are read by panels only")
    }
}
