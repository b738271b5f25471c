//! Scalar special functions shared by the unary ops, written with operations a GPU shader has
//! (`exp`, `+`, `*`, `/`), so the WGSL kernels compute the same formulas.

/// `erf(x)` by Abramowitz & Stegun 7.1.26, odd-extended:
/// `z = |x|`, `t = 1 / (1 + 0.3275911 z)`,
/// `erf(z) = 1 - t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) e^{-z²}` with
/// `a1..a5 = 0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429`.
/// The formula's own error is at most 1.5e-7; evaluated in f32 (as here and on the GPU) the
/// measured maximum absolute error is below 2e-7 (see the tests).
// The published decimal constants, verbatim, so every backend rounds them to the same f32.
#[allow(clippy::excessive_precision)]
pub fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let poly = t
        * (0.254829592
            + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let y = 1.0 - poly * (-z * z).exp();
    if x < 0.0 { -y } else { y }
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
pub fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// GELU, erf form: `(0.5 · x) · (1 + erf(x · (1/√2)))`, with [`erf`] above.
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}
