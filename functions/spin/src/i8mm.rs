//! `I8MatMul`: `Y = X · (W · diag(S))` with `W` int8 kept int8 in memory, as tract ops.
//!
//! The kernel widens one panel of 8 columns at a time to f32 (a `K × 8` scratch buffer) and
//! multiplies it in f32 (simd128), 4 rows × 8 columns at a time, reading `X` and `W` where they
//! lie (row-major `[.., K]` and `[K, N]`): the weights stay int8, only a panel is ever f32. The column scales are applied to the sums: the result differs from ONNX's
//! `X · (f32(W) · S)` only by f32 rounding.

use std::sync::Arc;

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::{
    check_input_arity, check_output_arity, expand, Expansion, InferenceOp, InferenceResult, Solver,
    TensorProxy,
};

/// An int8 `[K, N]` weight matrix (row-major) and one f32 scale per column.
pub struct I8Weights {
    k: usize,
    n: usize,
    data: Vec<u8>,
    scale: Vec<f32>,
}

impl std::fmt::Debug for I8Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "I8Weights({}x{})", self.k, self.n)
    }
}

impl I8Weights {
    /// `data`: `k * n` int8 bytes, row-major; `scale`: `n` values.
    pub fn new(k: usize, n: usize, data: Vec<u8>, scale: Vec<f32>) -> Self {
        assert_eq!(
            data.len(),
            k * n,
            "I8Weights: {k}x{n} needs {} bytes",
            k * n
        );
        assert_eq!(scale.len(), n, "I8Weights: {n} columns need {n} scales");
        Self { k, n, data, scale }
    }

    /// `y[m, N] = x[m, K] · W · diag(S)`.
    ///
    /// Rows go in chunks of [`CHUNK`]; for each chunk, each panel of 8 columns is widened to f32
    /// once (`K × 8`, in L1/L2) and multiplied into every 4 rows of the chunk.
    pub fn matmul(&self, x: &[f32], m: usize, y: &mut [f32]) {
        let (k, n) = (self.k, self.n);
        assert!(x.len() >= m * k && y.len() >= m * n);
        let wide = n / 8 * 8;
        let mut panel = vec![0f32; k * 8];
        for m0 in (0..m).step_by(CHUNK) {
            let rows = (m - m0).min(CHUNK);
            for n0 in (0..wide).step_by(8) {
                self.widen(n0, &mut panel);
                let s = &self.scale[n0..n0 + 8];
                let mut r = m0;
                while r < m0 + rows {
                    let mr = (m0 + rows - r).min(4);
                    let (x, y) = (
                        &x[r * k..(r + mr) * k],
                        &mut y[r * n..(r + mr - 1) * n + n0 + 8],
                    );
                    match mr {
                        4 => tile::<4>(&panel, x, k, y, n, n0, s),
                        3 => tile::<3>(&panel, x, k, y, n, n0, s),
                        2 => tile::<2>(&panel, x, k, y, n, n0, s),
                        _ => tile::<1>(&panel, x, k, y, n, n0, s),
                    }
                    r += mr;
                }
            }
        }
        // Columns past the last multiple of 8.
        for row in 0..m {
            for c in wide..n {
                let mut sum = 0f32;
                for kk in 0..k {
                    sum += x[row * k + kk] * f32::from(self.data[kk * n + c] as i8);
                }
                y[row * n + c] = sum * self.scale[c];
            }
        }
    }

    /// Columns `n0..n0 + 8` of `W` as f32, `[K][8]`.
    fn widen(&self, n0: usize, panel: &mut [f32]) {
        let n = self.n;
        for (kk, out) in panel.chunks_exact_mut(8).enumerate() {
            let row = &self.data[kk * n + n0..kk * n + n0 + 8];
            for (o, w) in out.iter_mut().zip(row) {
                *o = f32::from(*w as i8);
            }
        }
    }
}

/// Rows per chunk: a chunk's `X` stays in L2 while every panel passes over it.
const CHUNK: usize = 64;

/// `y[r, n0..n0 + 8] = (x[r, ..] · panel) · s` for the `MR` rows of `x` (row stride `k`; `y`'s
/// row stride is `n`).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn tile<const MR: usize>(
    panel: &[f32],
    x: &[f32],
    k: usize,
    y: &mut [f32],
    n: usize,
    n0: usize,
    s: &[f32],
) {
    use std::arch::wasm32::*;
    assert!(panel.len() >= k * 8 && x.len() >= MR * k && s.len() >= 8);
    assert!(y.len() >= (MR - 1) * n + n0 + 8);
    let (p, xp, yp) = (panel.as_ptr(), x.as_ptr(), y.as_mut_ptr());
    // SAFETY: reads `panel[kk * 8 .. kk * 8 + 8]` (kk < k), `x[r * k + kk]` (r < MR), `s[..8]`;
    // writes `y[r * n + n0 .. r * n + n0 + 8]` (r < MR): all within the lengths asserted above.
    unsafe {
        let mut acc = [[f32x4_splat(0.0); 2]; MR];
        for kk in 0..k {
            let lo = v128_load(p.add(kk * 8) as *const v128);
            let hi = v128_load(p.add(kk * 8 + 4) as *const v128);
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = f32x4_splat(*xp.add(r * k + kk));
                acc[0] = madd(acc[0], a, lo);
                acc[1] = madd(acc[1], a, hi);
            }
        }
        let (s0, s1) = (
            v128_load(s.as_ptr() as *const v128),
            v128_load(s.as_ptr().add(4) as *const v128),
        );
        for (r, acc) in acc.iter().enumerate() {
            v128_store(yp.add(r * n + n0) as *mut v128, f32x4_mul(acc[0], s0));
            v128_store(yp.add(r * n + n0 + 4) as *mut v128, f32x4_mul(acc[1], s1));
        }
    }
}

/// The same without SIMD.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn tile<const MR: usize>(
    panel: &[f32],
    x: &[f32],
    k: usize,
    y: &mut [f32],
    n: usize,
    n0: usize,
    s: &[f32],
) {
    for r in 0..MR {
        for c in 0..8 {
            let sum: f32 = (0..k).map(|kk| x[r * k + kk] * panel[kk * 8 + c]).sum();
            y[r * n + n0 + c] = sum * s[c];
        }
    }
}

/// `acc + a * b`: fused where the build allows relaxed SIMD.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn madd(
    acc: std::arch::wasm32::v128,
    a: std::arch::wasm32::v128,
    b: std::arch::wasm32::v128,
) -> std::arch::wasm32::v128 {
    use std::arch::wasm32::*;
    #[cfg(target_feature = "relaxed-simd")]
    {
        f32x4_relaxed_madd(a, b, acc)
    }
    #[cfg(not(target_feature = "relaxed-simd"))]
    {
        f32x4_add(acc, f32x4_mul(a, b))
    }
}

/// The typed op: one input `X [.., K]` (f32), output `[.., N]`.
#[derive(Debug, Clone)]
pub struct I8MatMul {
    w: Arc<I8Weights>,
}

impl PartialEq for I8MatMul {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.w, &other.w)
    }
}

impl Eq for I8MatMul {}

impl Op for I8MatMul {
    fn name(&self) -> StaticName {
        "I8MatMul".into()
    }

    op_as_typed_op!();
}

impl EvalOp for I8MatMul {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let x = x.cast_to::<f32>()?;
        let shape = x.shape();
        ensure!(
            shape.last() == Some(&self.w.k),
            "I8MatMul: input {shape:?}, weights {:?}",
            self.w
        );
        let m = x.len() / self.w.k;
        let mut out: TVec<usize> = shape.into();
        *out.last_mut().expect("rank checked") = self.w.n;
        let mut y = Tensor::zero::<f32>(&out)?;
        {
            let xs = x.try_as_plain_ram()?;
            let mut ys = y.try_as_plain_ram_mut()?;
            self.w
                .matmul(xs.as_slice::<f32>()?, m, ys.as_slice_mut::<f32>()?);
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for I8MatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        ensure!(!shape.is_empty(), "I8MatMul on a scalar");
        *shape.last_mut().expect("not empty") = self.w.n.into();
        Ok(tvec!(f32::fact(shape)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let rows: TDim = inputs[0].shape.iter().rev().skip(1).product();
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            rows * (self.w.k * self.w.n)
        )))
    }

    as_op!();
}

/// The parsed node: wires [`I8MatMul`] on its one input.
#[derive(Debug, Clone)]
struct I8MatMulExpansion {
    w: Arc<I8Weights>,
}

impl Expansion for I8MatMulExpansion {
    fn name(&self) -> StaticName {
        "I8MatMul".into()
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
        s.equals(&inputs[0].rank, &outputs[0].rank)?;
        let n = self.w.n;
        s.given(&inputs[0].rank, move |s, rank| {
            let rank = rank as usize;
            for axis in 0..rank.saturating_sub(1) {
                s.equals(&inputs[0].shape[axis], &outputs[0].shape[axis])?;
            }
            if rank > 0 {
                s.equals(&outputs[0].shape[rank - 1], n.to_dim())?;
            }
            Ok(())
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, I8MatMul { w: self.w.clone() }, &[inputs[0]])
    }
}

/// The parser of [`crate::quant::I8_MATMUL`] nodes.
pub fn parse(
    _: &tract_onnx::model::ParsingContext,
    node: &tract_onnx::pb::NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let key: String = node.get_attr("key")?;
    let w = crate::quant::weights(&key)
        .ok_or_else(|| format_err!("{}: no int8 weights registered as {key}", node.name))?;
    Ok((expand(I8MatMulExpansion { w }), vec![]))
}
