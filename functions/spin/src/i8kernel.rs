//! The int8 × f32 matrix kernel behind [`crate::i8mm`]'s op: plain `std` (no tract), so that
//! its tests also run on their own, natively and as Wasm:
//!
//! ```text
//! rustc --edition 2021 --test -O --target wasm32-wasip2 \
//!   -C target-feature=+simd128,+relaxed-simd functions/spin/src/i8kernel.rs -o /tmp/k.wasm
//! wasmtime /tmp/k.wasm
//! ```
//!
//! Layout: `W [K, N]` is stored int8 in panels of 8 columns, `[N / 8][K][8]` (the columns past
//! the last multiple of 8 row-major after them), so that widening one panel to f32 reads
//! contiguous bytes (simd128: 8 weights per `i16x8`/`i32x4` extend and convert). Each panel is
//! widened once per chunk of [`CHUNK`] rows and multiplied into every 4 rows of the chunk:
//! a 4 × 8 register tile, `K` unrolled by 4 (one `v128` load of `X` per row, its lanes
//! broadcast by shuffles), multiply-add fused where the build has `relaxed-simd`; the 1 or 2
//! rows left over split their sums over `K` to keep as many multiply-adds in flight. The column
//! scales are applied to the sums, so the result differs from `X · (f32(W) · S)` only by f32
//! rounding.
//!
//! An [`Epilogue`] finishes each tile while it is still in registers: the bias of a following
//! `Add`, then the GELU of a following `x · ½(1 + erf(x / √2))`, so neither costs a pass over
//! the output. `erf` is Abramowitz & Stegun 7.1.28, the formula tract's own `Erf` uses
//! (absolute error 3e-7 in exact arithmetic; in f32 the 16th power brings it to ≈ 1e-6).

/// Rows per chunk: a chunk's `X` stays in L2 while every panel passes over it.
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

    /// `y[m, N] = epilogue(x[m, K] · W · diag(S))`.
    pub fn matmul(&self, x: &[f32], m: usize, y: &mut [f32], epilogue: &Epilogue) {
        let (k, n) = (self.k, self.n);
        assert!(x.len() >= m * k && y.len() >= m * n);
        if let Some(b) = &epilogue.bias {
            assert_eq!(b.len(), n, "{n} columns need {n} biases");
        }
        let zeros = [0f32; 8];
        let wide = n / 8 * 8;
        let mut panel = vec![0f32; k * 8];
        for m0 in (0..m).step_by(CHUNK) {
            let end = m.min(m0 + CHUNK);
            for n0 in (0..wide).step_by(8) {
                widen(&self.data[n0 * k..(n0 + 8) * k], &mut panel);
                let s = &self.scale[n0..n0 + 8];
                let e = Finish {
                    bias: epilogue
                        .bias
                        .as_ref()
                        .map_or(&zeros[..], |b| &b[n0..n0 + 8]),
                    gelu: epilogue.gelu,
                };
                let mut r = m0;
                while r < end {
                    let mr = (end - r).min(4);
                    let x = &x[r * k..(r + mr) * k];
                    let y = &mut y[r * n..(r + mr - 1) * n + n0 + 8];
                    match mr {
                        4 => tile::<4>(&panel, x, k, y, n, n0, s, &e),
                        3 => tile::<3>(&panel, x, k, y, n, n0, s, &e),
                        2 => narrow::<2, 2>(&panel, x, k, y, n, n0, s, &e),
                        _ => narrow::<1, 4>(&panel, x, k, y, n, n0, s, &e),
                    }
                    r += mr;
                }
            }
        }
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

/// One panel's slice of the [`Epilogue`]: 8 biases (zeros when there are none).
struct Finish<'a> {
    bias: &'a [f32],
    gelu: bool,
}

/// One panel `[K][8]` of int8 as f32.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn widen(src: &[i8], panel: &mut [f32]) {
    use std::arch::wasm32::*;
    assert!(src.len() >= panel.len() && panel.len() % 8 == 0);
    let (s, p) = (src.as_ptr(), panel.as_mut_ptr());
    // SAFETY: reads `src[i * 8 .. i * 8 + 8]` and writes `panel[i * 8 .. i * 8 + 8]` for
    // `i < panel.len() / 8`: within both lengths (asserted).
    unsafe {
        for i in 0..panel.len() / 8 {
            let w = i16x8_extend_low_i8x16(v128_load64_zero(s.add(i * 8) as *const u64));
            let lo = f32x4_convert_i32x4(i32x4_extend_low_i16x8(w));
            let hi = f32x4_convert_i32x4(i32x4_extend_high_i16x8(w));
            v128_store(p.add(i * 8) as *mut v128, lo);
            v128_store(p.add(i * 8 + 4) as *mut v128, hi);
        }
    }
}

/// The same without SIMD.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn widen(src: &[i8], panel: &mut [f32]) {
    for (o, w) in panel.iter_mut().zip(src) {
        *o = f32::from(*w);
    }
}

/// `y[r, n0..n0 + 8] = finish((x[r, ..] · panel) · s)` for the `MR` rows of `x` (row stride
/// `k`; `y`'s row stride is `n`).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile<const MR: usize>(
    panel: &[f32],
    x: &[f32],
    k: usize,
    y: &mut [f32],
    n: usize,
    n0: usize,
    s: &[f32],
    e: &Finish,
) {
    use std::arch::wasm32::*;
    assert!(panel.len() >= k * 8 && x.len() >= MR * k && s.len() >= 8 && e.bias.len() >= 8);
    assert!(y.len() >= (MR - 1) * n + n0 + 8);
    let (p, xp, yp) = (panel.as_ptr(), x.as_ptr(), y.as_mut_ptr());
    // SAFETY: reads `panel[kk * 8 .. kk * 8 + 8]` (kk < k), `x[r * k + kk]` (r < MR, kk < k;
    // the 4-wide loads stop at `kk + 4 <= k`), `s[..8]`; writes `y[r * n + n0 .. r * n + n0 + 8]`
    // (r < MR), `e.bias[..8]`: all within the lengths asserted above.
    unsafe {
        let mut acc = [[f32x4_splat(0.0); 2]; MR];
        let mut kk = 0;
        while kk + 4 <= k {
            let mut xv = [f32x4_splat(0.0); MR];
            for (r, xv) in xv.iter_mut().enumerate() {
                *xv = v128_load(xp.add(r * k + kk) as *const v128);
            }
            macro_rules! step {
                ($j:literal) => {{
                    let lo = v128_load(p.add((kk + $j) * 8) as *const v128);
                    let hi = v128_load(p.add((kk + $j) * 8 + 4) as *const v128);
                    for (acc, xv) in acc.iter_mut().zip(&xv) {
                        let a = i32x4_shuffle::<$j, $j, $j, $j>(*xv, *xv);
                        acc[0] = madd(acc[0], a, lo);
                        acc[1] = madd(acc[1], a, hi);
                    }
                }};
            }
            step!(0);
            step!(1);
            step!(2);
            step!(3);
            kk += 4;
        }
        while kk < k {
            let lo = v128_load(p.add(kk * 8) as *const v128);
            let hi = v128_load(p.add(kk * 8 + 4) as *const v128);
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = f32x4_splat(*xp.add(r * k + kk));
                acc[0] = madd(acc[0], a, lo);
                acc[1] = madd(acc[1], a, hi);
            }
            kk += 1;
        }
        let (s0, s1) = (
            v128_load(s.as_ptr() as *const v128),
            v128_load(s.as_ptr().add(4) as *const v128),
        );
        let (b0, b1) = (
            v128_load(e.bias.as_ptr() as *const v128),
            v128_load(e.bias.as_ptr().add(4) as *const v128),
        );
        for (r, acc) in acc.iter().enumerate() {
            let (mut lo, mut hi) = (madd(b0, acc[0], s0), madd(b1, acc[1], s1));
            if e.gelu {
                (lo, hi) = (gelu4(lo), gelu4(hi));
            }
            v128_store(yp.add(r * n + n0) as *mut v128, lo);
            v128_store(yp.add(r * n + n0 + 4) as *mut v128, hi);
        }
    }
}

/// The same without SIMD.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[allow(clippy::too_many_arguments)]
fn tile<const MR: usize>(
    panel: &[f32],
    x: &[f32],
    k: usize,
    y: &mut [f32],
    n: usize,
    n0: usize,
    s: &[f32],
    e: &Finish,
) {
    for r in 0..MR {
        for c in 0..8 {
            let sum: f32 = (0..k).map(|kk| x[r * k + kk] * panel[kk * 8 + c]).sum();
            let v = sum * s[c] + e.bias[c];
            y[r * n + n0 + c] = if e.gelu { gelu(v) } else { v };
        }
    }
}

/// [`tile`] for 1 or 2 rows: each sum split `P` ways over `k` (term `kk` into part `kk % P`),
/// so that `2 · MR · P` = 8 multiply-adds are in flight, as in a 4-row tile, rather than
/// `2 · MR` (one spare row cost as much as four).
/// It is [`tile`] with `P` partial sums; [`tile`] stays its own function because this one
/// with `P = 1` measured ≈ 10 % slower for 4-row tiles (12.6 against 14.0 GMAC/s).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn narrow<const MR: usize, const P: usize>(
    panel: &[f32],
    x: &[f32],
    k: usize,
    y: &mut [f32],
    n: usize,
    n0: usize,
    s: &[f32],
    e: &Finish,
) {
    use std::arch::wasm32::*;
    assert!(panel.len() >= k * 8 && x.len() >= MR * k && s.len() >= 8 && e.bias.len() >= 8);
    assert!(y.len() >= (MR - 1) * n + n0 + 8 && 4 % P == 0);
    let (p, xp, yp) = (panel.as_ptr(), x.as_ptr(), y.as_mut_ptr());
    // SAFETY: reads `panel[kk * 8 .. kk * 8 + 8]` (kk < k), `x[r * k + kk]` (r < MR, kk < k;
    // the 4-wide loads stop at `kk + 4 <= k`), `s[..8]`, `e.bias[..8]`; writes
    // `y[r * n + n0 .. r * n + n0 + 8]` (r < MR): within the lengths asserted above.
    unsafe {
        let mut acc = [[[f32x4_splat(0.0); 2]; MR]; P];
        let mut kk = 0;
        while kk + 4 <= k {
            let mut xv = [f32x4_splat(0.0); MR];
            for (r, xv) in xv.iter_mut().enumerate() {
                *xv = v128_load(xp.add(r * k + kk) as *const v128);
            }
            macro_rules! step {
                ($j:literal) => {{
                    let lo = v128_load(p.add((kk + $j) * 8) as *const v128);
                    let hi = v128_load(p.add((kk + $j) * 8 + 4) as *const v128);
                    for (acc, xv) in acc[$j % P].iter_mut().zip(&xv) {
                        let a = i32x4_shuffle::<$j, $j, $j, $j>(*xv, *xv);
                        acc[0] = madd(acc[0], a, lo);
                        acc[1] = madd(acc[1], a, hi);
                    }
                }};
            }
            step!(0);
            step!(1);
            step!(2);
            step!(3);
            kk += 4;
        }
        while kk < k {
            let lo = v128_load(p.add(kk * 8) as *const v128);
            let hi = v128_load(p.add(kk * 8 + 4) as *const v128);
            for (r, acc) in acc[0].iter_mut().enumerate() {
                let a = f32x4_splat(*xp.add(r * k + kk));
                acc[0] = madd(acc[0], a, lo);
                acc[1] = madd(acc[1], a, hi);
            }
            kk += 1;
        }
        let (s0, s1) = (
            v128_load(s.as_ptr() as *const v128),
            v128_load(s.as_ptr().add(4) as *const v128),
        );
        let (b0, b1) = (
            v128_load(e.bias.as_ptr() as *const v128),
            v128_load(e.bias.as_ptr().add(4) as *const v128),
        );
        for r in 0..MR {
            let (mut lo, mut hi) = (acc[0][r][0], acc[0][r][1]);
            for part in &acc[1..] {
                lo = f32x4_add(lo, part[r][0]);
                hi = f32x4_add(hi, part[r][1]);
            }
            let (mut lo, mut hi) = (madd(b0, lo, s0), madd(b1, hi, s1));
            if e.gelu {
                (lo, hi) = (gelu4(lo), gelu4(hi));
            }
            v128_store(yp.add(r * n + n0) as *mut v128, lo);
            v128_store(yp.add(r * n + n0 + 4) as *mut v128, hi);
        }
    }
}

/// The same without SIMD.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[allow(clippy::too_many_arguments)]
fn narrow<const MR: usize, const P: usize>(
    panel: &[f32],
    x: &[f32],
    k: usize,
    y: &mut [f32],
    n: usize,
    n0: usize,
    s: &[f32],
    e: &Finish,
) {
    tile::<MR>(panel, x, k, y, n, n0, s, e);
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
        // Rows: 1..=4 per tile, across a chunk boundary; columns: panels and a tail; inner
        // dimension: multiples of 4 and not.
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
