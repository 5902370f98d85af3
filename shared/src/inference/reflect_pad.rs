//! Reflection padding in one pass. Exported models pad by reflection with single-row slices and
//! concatenations (tract's own reflect `Pad` copies element by element): per padded convolution
//! 4 × pad slice nodes and two concatenations, the tensor copied twice. [`pad_in_one_pass`] finds
//! that pattern in tract's optimised graph and puts [`ReflectPad2d`] in its place, which writes
//! the padded tensor once, row by row. The values are copies either way, so nothing changes.

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::array::{Slice, TypedConcat};
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

/// Replaces each reflection padding of the last two axes written as slices and concatenations
/// by one [`ReflectPad2d`]; returns how many it replaced.
pub(super) fn pad_in_one_pass(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes().len() {
        let Some((along_w, pad_h)) = reflection(model, id, 2)? else { continue };
        if model.outlet_fact(along_w)?.datum_type != f32::datum_type() {
            continue;
        }
        let Some((x, pad_w)) = reflection(model, along_w.node, 1)? else { continue };
        let mut patch = TypedModelPatch::new("reflection padding in one pass");
        let tap = patch.tap_model(model, x)?;
        let name = format!("{}.reflect_pad", model.node(id).name);
        let padded = patch.wire_node(name, ReflectPad2d { pad_h, pad_w }, &[tap])?[0];
        patch.shunt_outside(model, id.into(), padded)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// When node `id` mirrors some `pad` elements of its source onto both ends of axis
/// `rank - from_end`, as the exporter writes it (elements pad, …, 1, the source, then L-2, …,
/// L-1-pad): the source and `pad`.
fn reflection(model: &TypedModel, id: usize, from_end: usize) -> TractResult<Option<(OutletId, usize)>> {
    let node = model.node(id);
    let Some(concat) = node.op_as::<TypedConcat>() else { return Ok(None) };
    let parts = &node.inputs;
    if parts.len() < 3 || parts.len().is_multiple_of(2) {
        return Ok(None);
    }
    let pad = parts.len() / 2;
    let source = parts[pad];
    let fact = model.outlet_fact(source)?;
    let Some(shape) = fact.shape.as_concrete() else { return Ok(None) };
    if shape.len() < 2 || concat.axis != shape.len() - from_end || shape[concat.axis] <= pad {
        return Ok(None);
    }
    let len = shape[concat.axis] as i64;
    let expected = (0..pad).map(|i| (pad - i) as i64).chain((0..pad).map(|q| len - 2 - q as i64));
    let sliced = parts[..pad].iter().chain(&parts[pad + 1..]);
    for (part, index) in sliced.zip(expected) {
        let slice_node = model.node(part.node);
        let Some(slice) = slice_node.op_as::<Slice>() else { return Ok(None) };
        let bounds = (slice.start.to_i64().ok(), slice.end.to_i64().ok());
        if slice_node.inputs != [source] || slice.axis != concat.axis || bounds != (Some(index), Some(index + 1)) {
            return Ok(None);
        }
    }
    Ok(Some((source, pad)))
}

/// Pads the last two axes (H, W) of an f32 tensor by reflection (the edge itself not repeated).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) struct ReflectPad2d {
    pad_h: usize,
    pad_w: usize,
}

/// Where padded index `i` (0..len + 2·pad) reads from along an axis of length `len`.
fn reflected(i: usize, pad: usize, len: usize) -> usize {
    let i = i as isize - pad as isize;
    let len = len as isize;
    (if i < 0 {
        -i
    } else if i >= len {
        2 * len - 2 - i
    } else {
        i
    }) as usize
}

impl ReflectPad2d {
    fn padded_shape(&self, shape: &[usize]) -> TVec<usize> {
        let mut out: TVec<usize> = shape.into();
        let rank = out.len();
        out[rank - 2] += 2 * self.pad_h;
        out[rank - 1] += 2 * self.pad_w;
        out
    }
}

impl Op for ReflectPad2d {
    fn name(&self) -> StaticName {
        "ReflectPad2d".into()
    }

    op_as_typed_op!();
}

impl EvalOp for ReflectPad2d {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape();
        ensure!(shape.len() >= 2, "reflection padding of a tensor of rank {}", shape.len());
        let (h, w) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        ensure!(h > self.pad_h && w > self.pad_w, "reflection padding of {}×{} by {}×{}", h, w, self.pad_h, self.pad_w);
        let view = input.try_as_plain_ram()?;
        let src = view.as_slice::<f32>()?;
        let (ph, pw) = (h + 2 * self.pad_h, w + 2 * self.pad_w);
        let mut out = Vec::with_capacity(src.len() / (h * w).max(1) * ph * pw);
        for plane in src.chunks_exact(h * w) {
            for y in 0..ph {
                let from = &plane[reflected(y, self.pad_h, h) * w..][..w];
                out.extend((0..self.pad_w).map(|x| from[reflected(x, self.pad_w, w)]));
                out.extend_from_slice(from);
                out.extend((self.pad_w + w..pw).map(|x| from[reflected(x, self.pad_w, w)]));
            }
        }
        let padded = tract_ndarray::ArrayD::from_shape_vec(&*self.padded_shape(shape), out)?;
        Ok(tvec!(padded.into_tensor().into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for ReflectPad2d {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = inputs[0].shape.as_concrete().context("reflection padding needs a fixed shape")?;
        Ok(tvec!(f32::fact(self.padded_shape(shape))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_mirror_without_repeating_the_edge() {
        // len 4 padded by 2: [2, 1 | 0, 1, 2, 3 | 2, 1]
        let got: Vec<usize> = (0..8).map(|i| reflected(i, 2, 4)).collect();
        assert_eq!(got, [2, 1, 0, 1, 2, 3, 2, 1]);
    }
}
