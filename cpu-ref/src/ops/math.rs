//! Scalar special functions shared by the unary ops, written with operations a GPU shader has
//! (`exp`, `+`, `*`, `/`), so the WGSL kernels compute the same formulas.

/// `erf(x)` in f32 with at most 1e-7 absolute error (6.2e-8 measured over `[-6, 6]` against an
/// f64 reference; see the tests), from two minimax polynomials after N. Juffa's `erff`, using only
/// `*`, `+`, `abs` and one `exp` — every step a plain (unfused) f32 operation, so a shader can
/// evaluate it the same way. With `t = |x|`, `s = x²`:
///
/// * `t <= 0.927734375`: `p = -5.96761703e-4`, then `p = p·s + c` for
///   `c = 4.99119423e-3, -2.67681349e-2, 1.12819925e-1, -3.76125336e-1, 1.28379166e-1`;
///   `erf = p·x + x`.
/// * otherwise: `r = -1.72853470e-5·t + 3.83197126e-4`, `u = -3.88396438e-3·t + 2.42546219e-2`,
///   `r = r·s + u`, then `r = r·t + c` for `c = -1.06777877e-1, -6.34846687e-1, -1.28717512e-1`,
///   `r = r·t + (-t)`, `erf = ±(1 - e^r)` with the sign of `x`.
///
/// (Abramowitz & Stegun 7.1.26, a common alternative, has 1.5e-7 error in exact arithmetic but
/// about 4.6e-7 when evaluated in f32, beyond this crate's 2e-7 budget.)
// The constants are the f32 values of the decimal literals; every backend parses them alike.
#[allow(clippy::excessive_precision)]
pub fn erf(x: f32) -> f32 {
    let t = x.abs();
    let s = x * x;
    if t > 0.927_734_375 {
        let mut r = -1.72853470e-5 * t + 3.83197126e-4;
        let u = -3.88396438e-3 * t + 2.42546219e-2;
        r = r * s + u;
        r = r * t + -1.06777877e-1;
        r = r * t + -6.34846687e-1;
        r = r * t + -1.28717512e-1;
        r = r * t + -t;
        let y = 1.0 - r.exp();
        if x < 0.0 { -y } else { y }
    } else {
        let mut r = -5.96761703e-4;
        r = r * s + 4.99119423e-3;
        r = r * s + -2.67681349e-2;
        r = r * s + 1.12819925e-1;
        r = r * s + -3.76125336e-1;
        r = r * s + 1.28379166e-1;
        r * x + x
    }
}

/// The logistic function `1 / (1 + e^{-x})`, evaluated without overflow: `1 / (1 + e^{-x})` for
/// `x >= 0`, `e^x / (1 + e^x)` for `x < 0` (exp only ever sees a non-positive argument).
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// SiLU (swish): `x · sigmoid(x)`.
// Not inlined into the elementwise loops: there LLVM evaluated both of sigmoid's branches (two
// `exp` calls a value) to vectorize the loop, 20 % slower than the call.
#[inline(never)]
pub fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// GELU, erf form: `(0.5 · x) · (1 + erf(x · (1/√2)))`, with [`erf`] above.
///
/// This is the exact GELU (PyTorch's `nn.GELU()` / `F.gelu` default, `approximate = "none"`),
/// not the tanh approximation `0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 x³)))`
/// (`approximate = "tanh"`, GPT-2's `gelu_new`), which differs from it by up to 4.7e-4.
// Not inlined into the elementwise loops, for the reason given at `silu`.
#[inline(never)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}
