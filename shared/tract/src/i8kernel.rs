//! The int8 × f32 matrix kernel behind [`crate::i8mm`]'s op, in plain `std` (no tract). Its
//! tests run with the crate's, natively (the scalar path) and as Wasm with simd128 and
//! relaxed-simd (the path the component runs; `scripts/test.sh`).
//!
//! Layout: `W [K, N]` is stored int8 in panels of 8 columns, `[N / 8][K][8]` (the columns past
//! the last multiple of 8 row-major after them), so that the 8 weights of one row of a panel
//! are 8 contiguous bytes (simd128: one `i16x8`/`i32x4` extend and convert). `X` is taken
//! [`CHUNK`] rows at a time and copied in blocks of 4 columns, `[K / 4][rows][4]`, so that
//! the kernel reads it front to back.
//!
//! The kernel is shaped by how Wasmtime's compiler (Cranelift) treats a loop body: it issues
//! every load first and computes the arithmetic just before its first use, it has 16 vector
//! registers, and its fused multiply-add overwrites a multiplicand, so a sum held in a register
//! across iterations costs a register move per iteration. So the kernel widens one 4 × 8 block
//! of a panel to f32 (4 values of `K`, 8 columns: 8 registers; the weights are widened once per
//! chunk, never stored as f32) and holds it while it walks down the rows; each row
//! loads its 4 values of `X` (one `v128`, lanes broadcast by shuffles) and its 8 running sums
//! from a small buffer, does 8 multiply-adds and stores the sums back. Nothing is spilled and
//! no sum is moved; the rows are independent, so the processor overlaps them. This runs at
//! ≈ 15–18 GMAC/s on one core (128-bit FMA peak ≈ 18.5), where a 4 × 8 register tile that
//! keeps its sums in registers reached 12–14. The column scales are applied to the sums, so the
//! result differs from `X · (f32(W) · S)` only by f32 rounding (the sums add the products in
//! order of `K`, as a plain loop would).
//!
//! An [`Epilogue`] finishes each row of 8 sums as it is written out: the bias of a following
//! `Add`, then the GELU of a following `x · ½(1 + erf(x / √2))`, so neither costs a pass over
//! the output. `erf` is Abramowitz & Stegun 7.1.28, the formula tract's own `Erf` uses
//! (absolute error 3e-7 in exact arithmetic; in f32 the 16th power brings it to ≈ 1e-6).

/// Rows per chunk: a chunk's `X` (≤ 384 KiB at `K` = 1536) stays in L2 while every panel
/// passes over it.
const CHUNK: usize = 64;

/// What is applied to each output after the scales: `gelu(y + bias)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Epilogue {
    /// One value per column, added first.
    pub bias: Option<Vec<f32>>,
    /// GELU (the exact, `erf` form) after the bias.
    pub gelu: bool,
}

impl Epilogue {
    /// The epilogue of one output in column `c`.
    fn scalar(&self, y: f32, c: usize) -> f32 {
        let y = y + self.bias.as_ref().map_or(0.0, |b| b[c]);
        if self.gelu {
            gelu(y)
        } else {
            y
        }
    }
}

/// Abramowitz & Stegun 7.1.28: `1 - 1 / (1 + a1·x + … + a6·x⁶)¹⁶` for `x ≥ 0`, odd.
const ERF_A: [f32; 6] = [
    0.070_523_08,
    0.042_282_01,
    0.009_270_527,
    0.000_152_014_3,
    0.000_276_567_2,
    0.000_043_063_8,
];

/// `½·v·(1 + erf(v / √2))`.
fn gelu(v: f32) -> f32 {
    0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2))
}

fn erf(x: f32) -> f32 {
    let a = x.abs();
    let p = ERF_A.iter().rev().fold(0.0, |acc, c| (acc + c) * a) + 1.0;
    (1.0 - p.powi(16).recip()).copysign(x)
}

/// An int8 `[K, N]` matrix in panels of 8 columns, with one f32 scale per column.
pub struct Packed {
    k: usize,
    n: usize,
    /// `[N / 8][K][8]`, then `[K][N % 8]`.
    data: Vec<i8>,
    scale: Vec<f32>,
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "I8Weights({}x{})", self.k, self.n)
    }
}

impl Packed {
    /// `data`: `k * n` int8 bytes, row-major `[K, N]`; `scale`: `n` values.
    pub fn new(k: usize, n: usize, data: &[u8], scale: Vec<f32>) -> Self {
        assert_eq!(data.len(), k * n, "int8 {k}x{n} needs {} bytes", k * n);
        assert_eq!(scale.len(), n, "{n} columns need {n} scales");
        let wide = n / 8 * 8;
        let mut packed = Vec::with_capacity(k * n);
        for n0 in (0..wide).step_by(8) {
            for kk in 0..k {
                packed.extend(data[kk * n + n0..kk * n + n0 + 8].iter().map(|b| *b as i8));
            }
        }
        for kk in 0..k {
            packed.extend(data[kk * n + wide..kk * n + n].iter().map(|b| *b as i8));
        }
        Self {
            k,
            n,
            data: packed,
            scale,
        }
    }

    /// Rows of `W` (the inner dimension).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of `W`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// `y[m, N] = epilogue(x[m, K] · W · diag(S))`: writes every one of `y[..m * N]`, reads
    /// none of them.
    pub fn matmul(&self, x: &[f32], m: usize, y: &mut [f32], epilogue: &Epilogue) {
        let (k, n) = (self.k, self.n);
        assert!(x.len() >= m * k && y.len() >= m * n);
        if let Some(b) = &epilogue.bias {
            assert_eq!(b.len(), n, "{n} columns need {n} biases");
        }
        let zeros = [0f32; 8];
        let wide = n / 8 * 8;
        // `K` rounded up to the 4 values of a block; the padding stays zero in both operands.
        let kp = k.next_multiple_of(4);
        let most = m.min(CHUNK);
        let mut scratch = SCRATCH.with(|s| s.take());
        let [xr, sums] = scratch.split([most * kp, most * 8]);
        for m0 in (0..m).step_by(CHUNK) {
            let rows = (m - m0).min(CHUNK);
            let xr = &mut xr[..rows * kp];
            for r in 0..rows {
                let row = &x[(m0 + r) * k..(m0 + r + 1) * k];
                for (b, part) in row.chunks(4).enumerate() {
                    let at = (b * rows + r) * 4;
                    xr[at..at + part.len()].copy_from_slice(part);
                    xr[at + part.len()..at + 4].fill(0.0);
                }
            }
            for n0 in (0..wide).step_by(8) {
                let sums = &mut sums[..rows * 8];
                blocks(&self.data[n0 * k..(n0 + 8) * k], xr, sums);
                let e = Finish {
                    scale: &self.scale[n0..n0 + 8],
                    bias: epilogue
                        .bias
                        .as_ref()
                        .map_or(&zeros[..], |b| &b[n0..n0 + 8]),
                    gelu: epilogue.gelu,
                };
                for (r, sums) in sums.chunks_exact(8).enumerate() {
                    let at = (m0 + r) * n + n0;
                    e.row(sums, &mut y[at..at + 8]);
                }
            }
        }
        SCRATCH.with(|s| s.set(scratch));
        // Columns past the last multiple of 8.
        let (tail, rest) = (&self.data[wide * k..], n - wide);
        for row in 0..m {
            for c in 0..rest {
                let sum: f32 = (0..k)
                    .map(|kk| x[row * k + kk] * f32::from(tail[kk * rest + c]))
                    .sum();
                y[row * n + wide + c] = epilogue.scalar(sum * self.scale[wide + c], wide + c);
            }
        }
    }
}

thread_local! {
    /// The kernel's buffers, kept from one call to the next (the component has one thread), so
    /// that each of a forward pass's matmuls does not allocate and zero its own.
    static SCRATCH: std::cell::Cell<Quads> = const { std::cell::Cell::new(Quads(Vec::new())) };
}

/// An f32 buffer aligned to 16 bytes, so that no `v128` access splits a cache line.
#[derive(Default)]
struct Quads(Vec<Quad>);

#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Quad([f32; 4]);

impl Quads {
    /// Two buffers of these lengths, each starting on a 16-byte boundary. They hold what the
    /// last call left in them: the caller writes before it reads.
    fn split(&mut self, lens: [usize; 2]) -> [&mut [f32]; 2] {
        let quads = lens.map(|n| n.div_ceil(4));
        let total = quads.iter().sum();
        if self.0.len() < total {
            self.0.resize(total, Quad([0.0; 4]));
        }
        // SAFETY: `Quad` is `repr(C)` around `[f32; 4]`: the vector is that many f32s in a row.
        let all: &mut [f32] =
            unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), self.0.len() * 4) };
        let (a, b) = all.split_at_mut(quads[0] * 4);
        [&mut a[..lens[0]], &mut b[..lens[1]]]
    }
}

/// One panel's slice of the scales and the [`Epilogue`]: 8 of each (zero biases when there
/// are none).
struct Finish<'a> {
    scale: &'a [f32],
    bias: &'a [f32],
    gelu: bool,
}

impl Finish<'_> {
    /// `y[..8] = gelu?(sums · scale + bias)`.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    fn row(&self, sums: &[f32], y: &mut [f32]) {
        use std::arch::wasm32::*;
        assert!(sums.len() >= 8 && y.len() >= 8 && self.scale.len() >= 8 && self.bias.len() >= 8);
        // SAFETY: 8 floats read from `sums`, `scale` and `bias`, 8 written to `y` (asserted).
        unsafe {
            let load = |p: *const f32| v128_load(p as *const v128);
            for half in [0, 4] {
                let mut v = madd(
                    load(self.bias.as_ptr().add(half)),
                    load(sums.as_ptr().add(half)),
                    load(self.scale.as_ptr().add(half)),
                );
                if self.gelu {
                    v = gelu4(v);
                }
                v128_store(y.as_mut_ptr().add(half) as *mut v128, v);
            }
        }
    }

    /// The same without SIMD.
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    fn row(&self, sums: &[f32], y: &mut [f32]) {
        for c in 0..8 {
            let v = sums[c] * self.scale[c] + self.bias[c];
            y[c] = if self.gelu { gelu(v) } else { v };
        }
    }
}

/// `sums[r][..8] = Σ_k xr[k / 4][r][k % 4] · f32(panel[k][..8])` for the `sums.len() / 8`
/// rows, `panel` one int8 panel `[K][8]`: its 4 × 8 blocks in turn, each widened to f32 in
/// registers and held there while it goes down the rows (see the module's documentation). A
/// last block past `K` is padded with zero weights.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn blocks(panel: &[i8], xr: &[f32], sums: &mut [f32]) {
    use std::arch::wasm32::*;
    let (k, rows) = (panel.len() / 8, sums.len() / 8);
    let kp = k.next_multiple_of(4);
    assert!(xr.len() >= kp * rows);
    if k == 0 {
        sums.fill(0.0);
    }
    let (x, s) = (xr.as_ptr(), sums.as_mut_ptr());
    // SAFETY: block `b < kp / 4` reads `panel[kk * 8 ..][..8]` for `kk < k` and
    // `xr[(b * rows + r) * 4 ..][..4]`, and reads and writes `sums[r * 8 ..][..8]`, for
    // `r < rows`: within the lengths asserted above.
    unsafe {
        for b in 0..kp / 4 {
            let mut w = [f32x4_splat(0.0); 8];
            for j in 0..4.min(k - b * 4) {
                let i = i16x8_extend_low_i8x16(v128_load64_zero(
                    panel.as_ptr().add((b * 4 + j) * 8) as *const u64,
                ));
                w[2 * j] = f32x4_convert_i32x4(i32x4_extend_low_i16x8(i));
                w[2 * j + 1] = f32x4_convert_i32x4(i32x4_extend_high_i16x8(i));
            }
            let (mut a, mut o, end) = (x.add(b * rows * 4), s, s.add(rows * 8));
            while o < end {
                let xv = v128_load(a as *const v128);
                let [mut lo, mut hi] = if b == 0 {
                    [f32x4_splat(0.0); 2]
                } else {
                    *(o as *const [v128; 2])
                };
                macro_rules! step {
                    ($j:literal) => {{
                        let a = i32x4_shuffle::<$j, $j, $j, $j>(xv, xv);
                        lo = madd(lo, a, w[2 * $j]);
                        hi = madd(hi, a, w[2 * $j + 1]);
                    }};
                }
                step!(0);
                step!(1);
                step!(2);
                step!(3);
                *(o as *mut [v128; 2]) = [lo, hi];
                a = a.add(4);
                o = o.add(8);
            }
        }
    }
}

/// The same without SIMD.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn blocks(panel: &[i8], xr: &[f32], sums: &mut [f32]) {
    let (k, rows) = (panel.len() / 8, sums.len() / 8);
    sums.fill(0.0);
    for kk in 0..k {
        for r in 0..rows {
            let a = xr[(kk / 4 * rows + r) * 4 + kk % 4];
            for c in 0..8 {
                sums[r * 8 + c] += a * f32::from(panel[kk * 8 + c]);
            }
        }
    }
}

/// GELU of 4 lanes: `½·v·(1 + erf(v / √2))`, `erf` as [`erf`].
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn gelu4(v: std::arch::wasm32::v128) -> std::arch::wasm32::v128 {
    use std::arch::wasm32::*;
    let x = f32x4_mul(v, f32x4_splat(std::f32::consts::FRAC_1_SQRT_2));
    let a = f32x4_abs(x);
    let mut p = f32x4_splat(ERF_A[5]);
    for c in ERF_A[..5].iter().rev() {
        p = madd(f32x4_splat(*c), p, a);
    }
    let one = f32x4_splat(1.0);
    let mut q = madd(one, p, a);
    for _ in 0..4 {
        q = f32x4_mul(q, q);
    }
    let e = f32x4_sub(one, f32x4_div(one, q));
    // erf is odd: the sign of x on |erf|.
    let sign = f32x4_splat(-0.0);
    let erf = v128_or(v128_and(x, sign), e);
    f32x4_mul(f32x4_mul(v, f32x4_splat(0.5)), f32x4_add(one, erf))
}

/// `acc + a * b`: fused where the build has relaxed SIMD (Wasmtime then emits FMA where the
/// CPU has it).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic generator (no crates: the file also builds alone).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }
    }

    /// `erf` in f64: its Maclaurin series up to |x| = 3 (terms stay below 1e4, so the sum
    /// keeps ≈ 1e-12), beyond that `1 - erfc` by erfc's asymptotic series (four terms: the
    /// next is below 2e-8 of erfc(3) = 2.2e-5).
    fn erf64(x: f64) -> f64 {
        if x.abs() > 3.0 {
            let (a, z) = (x.abs(), 1.0 / (2.0 * x * x));
            let series = 1.0 - z + 3.0 * z * z - 15.0 * z * z * z;
            let erfc = (-a * a).exp() / (a * std::f64::consts::PI.sqrt()) * series;
            return (1.0 - erfc).copysign(x);
        }
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    /// Checks `Packed::matmul` against a scalar f64 reference on `W [k, n]` (every int8 value,
    /// extremes included) and random `X [m, k]`: each sum within f32's error bound for `k`
    /// products, `k · ε · Σ|x · w| · s`.
    fn check(m: usize, k: usize, n: usize, seed: u64) {
        check_with(m, k, n, seed, false, false);
    }

    /// [`check`] with a bias and GELU epilogue: the bias adds `ε·|b|`, GELU's `erf` 1.5e-6
    /// absolute (and GELU's slope is below 1.13, so the matmul's error carries over at most
    /// 1.13 times).
    fn check_with(m: usize, k: usize, n: usize, seed: u64, bias: bool, gelu: bool) {
        let mut rng = Lcg(seed);
        let mut data: Vec<u8> = (0..k * n).map(|_| rng.next() as u8).collect();
        data[0] = 0x80; // -128
        if data.len() > 1 {
            data[1] = 0x7f;
        }
        let scale: Vec<f32> = (0..n)
            .map(|_| (1 + rng.next() % 1000) as f32 * 1e-4)
            .collect();
        let x: Vec<f32> = (0..m * k)
            .map(|_| (rng.next() % 20001) as f32 / 1e4 - 1.0)
            .collect();
        let w = Packed::new(k, n, &data, scale.clone());
        let b: Vec<f32> = (0..n)
            .map(|_| (rng.next() % 2001) as f32 / 500.0 - 2.0)
            .collect();
        let epilogue = Epilogue {
            bias: bias.then(|| b.clone()),
            gelu,
        };
        let mut y = vec![f32::NAN; m * n];
        w.matmul(&x, m, &mut y, &epilogue);
        for r in 0..m {
            for c in 0..n {
                let (mut sum, mut bound) = (0f64, 0f64);
                for kk in 0..k {
                    let p = f64::from(x[r * k + kk]) * f64::from(data[kk * n + c] as i8);
                    sum += p;
                    bound += p.abs();
                }
                let (mut want, s) = (sum * f64::from(scale[c]), f64::from(scale[c]));
                let mut tol = (k as f64 + 2.0) * f64::from(f32::EPSILON) * bound * s + 1e-30;
                if bias {
                    want += f64::from(b[c]);
                    tol += 2.0 * f64::from(f32::EPSILON) * (want.abs() + f64::from(b[c]).abs());
                }
                if gelu {
                    let v = want;
                    want = 0.5 * v * (1.0 + erf64(v / std::f64::consts::SQRT_2));
                    tol = 1.13 * tol
                        + 0.5 * v.abs() * 1.5e-6
                        + 8.0 * f64::from(f32::EPSILON) * want.abs();
                }
                let got = f64::from(y[r * n + c]);
                assert!(
                    (got - want).abs() <= tol,
                    "m={m} k={k} n={n}: y[{r}, {c}] = {got}, reference {want} (tolerance {tol:e})"
                );
            }
        }
    }

    #[test]
    fn matches_the_scalar_reference_on_minilm_shapes() {
        check(16, 384, 384, 1);
        check(17, 384, 1536, 2);
        check(9, 1536, 384, 3);
    }

    #[test]
    fn every_row_and_column_remainder() {
        // Rows: fewer than a chunk, across a chunk boundary; columns: panels and a tail; inner
        // dimension: multiples of 4 and not (a block padded with zeros).
        for (i, &(m, k, n)) in [
            (1, 1, 1),
            (2, 3, 8),
            (3, 4, 9),
            (5, 7, 16),
            (6, 8, 13),
            (CHUNK + 3, 12, 24),
            (2 * CHUNK + 1, 5, 7),
        ]
        .iter()
        .enumerate()
        {
            check(m, k, n, 10 + i as u64);
        }
    }

    #[test]
    fn bias_and_gelu_match_the_reference() {
        // Bias alone, GELU alone, both; panels and a tail; sums well past erf's split points.
        check_with(9, 64, 20, 30, true, false);
        check_with(9, 64, 20, 31, false, true);
        check_with(9, 384, 1536 + 5, 32, true, true);
    }

    #[test]
    fn erf_is_within_its_bound() {
        for i in -6000..=6000 {
            let x = i as f32 / 1000.0;
            let err = (f64::from(erf(x)) - erf64(f64::from(x))).abs();
            assert!(err <= 1.5e-6, "erf({x}) off by {err:e}");
        }
    }

    #[test]
    fn an_infinite_input_stays_in_its_row() {
        // With K = 6 the second block of each row is padded. The padding of the last chunk
        // (2 rows) lies where the first chunk (64 rows) put row 2's values: it must be zeroed
        // again, or row 2's ∞ times a zero weight makes the last rows NaN.
        let (m, k, n) = (CHUNK + 2, 6, 8);
        let mut x = vec![0.5f32; m * k];
        x[2 * k + 2] = f32::INFINITY;
        let w = Packed::new(k, n, &[1; 6 * 8], vec![1.0; n]);
        let mut y = vec![f32::NAN; m * n];
        w.matmul(&x, m, &mut y, &Epilogue::default());
        for r in (0..m).filter(|r| *r != 2) {
            assert_eq!(&y[r * n..(r + 1) * n], &[3.0; 8], "row {r}");
        }
    }

    #[test]
    fn packing_keeps_every_weight() {
        let (k, n) = (3, 11);
        let data: Vec<u8> = (0..k * n).map(|i| (i * 37 % 256) as u8).collect();
        let w = Packed::new(k, n, &data, vec![1.0; n]);
        for c in 0..n {
            // Column `c` of W by a one-hot X row.
            for kk in 0..k {
                let mut x = vec![0f32; k];
                x[kk] = 1.0;
                let mut y = vec![0f32; n];
                w.matmul(&x, 1, &mut y, &Epilogue::default());
                assert_eq!(y[c], f32::from(data[kk * n + c] as i8), "W[{kk}, {c}]");
            }
        }
    }
}
