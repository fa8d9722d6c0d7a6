//! `I8Gather`: rows of an int8 table (a vocabulary's embeddings) gathered and dequantized,
//! `Y[.., D] = f32(W[ids]) · S`, as a tract op that owns the table.
//!
//! [`crate::quant`] moves the table's bytes out of the protobuf into an [`I8Table`] (no copy:
//! a copy would leave the freed original as a hole in the pre-initialised heap, 11 MiB for
//! MiniLM), and only the gathered rows are ever converted to f32. Ids follow ONNX `Gather`:
//! negative ones count from the end; out of range is an error, never a panic.

use std::sync::Arc;

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::infer::IntoExp;
use tract_onnx::tract_hir::internal::{
    check_input_arity, check_output_arity, expand, Expansion, InferenceOp, InferenceResult, Solver,
    TensorProxy,
};

/// How a table's values are scaled.
#[derive(Debug, Clone, PartialEq)]
pub enum Scale {
    /// One scale for the whole table.
    All(f32),
    /// One per row (gathered with the row).
    Row(Vec<f32>),
    /// One per column.
    Column(Vec<f32>),
}

/// An int8 table `[rows, dim]`, row-major.
#[derive(Debug)]
pub struct I8Table {
    rows: usize,
    dim: usize,
    data: Vec<u8>,
    scale: Scale,
}

impl I8Table {
    /// `data`: `rows * dim` int8 bytes; `None` when the sizes disagree.
    pub fn new(rows: usize, dim: usize, data: Vec<u8>, scale: Scale) -> Option<Self> {
        let fits = match &scale {
            Scale::All(_) => true,
            Scale::Row(s) => s.len() == rows,
            Scale::Column(s) => s.len() == dim,
        };
        (fits && data.len() == rows * dim).then_some(Self {
            rows,
            dim,
            data,
            scale,
        })
    }

    /// Row `id` (ONNX `Gather` indexing) into `out[..dim]`.
    fn row(&self, id: i64, out: &mut [f32]) -> TractResult<()> {
        let rows = self.rows as i64;
        ensure!(
            (-rows..rows).contains(&id),
            "I8Gather: index {id} is outside a table of {rows} rows"
        );
        let r = if id < 0 { id + rows } else { id } as usize;
        let src = &self.data[r * self.dim..(r + 1) * self.dim];
        match &self.scale {
            Scale::All(s) => out
                .iter_mut()
                .zip(src)
                .for_each(|(o, w)| *o = f32::from(*w as i8) * s),
            Scale::Row(s) => out
                .iter_mut()
                .zip(src)
                .for_each(|(o, w)| *o = f32::from(*w as i8) * s[r]),
            Scale::Column(s) => out
                .iter_mut()
                .zip(src)
                .zip(s)
                .for_each(|((o, w), s)| *o = f32::from(*w as i8) * s),
        }
        Ok(())
    }
}

/// The typed op: one input `ids` (integers), output `[ids.., dim]` f32.
#[derive(Debug, Clone)]
pub struct I8Gather {
    table: Arc<I8Table>,
}

impl PartialEq for I8Gather {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.table, &other.table)
    }
}

impl Eq for I8Gather {}

impl Op for I8Gather {
    fn name(&self) -> StaticName {
        "I8Gather".into()
    }

    op_as_typed_op!();
}

impl EvalOp for I8Gather {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let ids = args_1!(inputs);
        let ids = ids.cast_to::<i64>()?;
        let mut shape: TVec<usize> = ids.shape().into();
        shape.push(self.table.dim);
        let mut y = Tensor::zero::<f32>(&shape)?;
        {
            let ids = ids.try_as_plain_ram()?;
            let mut ys = y.try_as_plain_ram_mut()?;
            let out = ys.as_slice_mut::<f32>()?;
            let dim = self.table.dim.max(1);
            for (id, row) in ids.as_slice::<i64>()?.iter().zip(out.chunks_mut(dim)) {
                self.table.row(*id, row)?;
            }
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for I8Gather {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        shape.push(self.table.dim.into());
        Ok(tvec!(f32::fact(shape)))
    }

    as_op!();
}

/// The parsed node: wires its [`I8Gather`] on its one input.
#[derive(Debug, Clone)]
struct I8GatherExpansion(I8Gather);

impl Expansion for I8GatherExpansion {
    fn name(&self) -> StaticName {
        "I8Gather".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(inputs[0].rank.bex() + 1, &outputs[0].rank)?;
        let dim = self.0.table.dim;
        s.given(&inputs[0].rank, move |s, rank| {
            let rank = rank as usize;
            for axis in 0..rank {
                s.equals(&inputs[0].shape[axis], &outputs[0].shape[axis])?;
            }
            s.equals(&outputs[0].shape[rank], dim.to_dim())
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.0.clone(), &[inputs[0]])
    }
}

/// The parser of [`crate::quant::I8_GATHER`] nodes.
pub fn parse(
    _: &tract_onnx::model::ParsingContext,
    node: &tract_onnx::pb::NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let key: String = node.get_attr("key")?;
    let table = crate::quant::table(&key)
        .ok_or_else(|| format_err!("{}: no int8 table registered as {key}", node.name))?;
    Ok((expand(I8GatherExpansion(I8Gather { table })), vec![]))
}
