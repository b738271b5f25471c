// Shared by elementwise_unary.wgsl and elementwise_gated.wgsl (concatenated with them, after
// exact_div.wgsl and float_common.wgsl): the unary activations, so the fused gated op computes
// exactly what `unary` computes.
//
// Shader exp is only specified to 3 + 2|x| ulp, so `exp_reduced` (float_common.wgsl) range-reduces
// first (x = n·ln2 + r, |r| <= ln2/2, Cody–Waite split of ln2) and scales by 2^n exactly: the error
// no longer grows with |x|. Divisions are correctly rounded (exact_div.wgsl), so exp is the only
// inexact step; the formulas are those of `bitnet_cpu_ref::ops` (math.rs) operation for operation.

// erf(x) exactly as `bitnet_cpu_ref::ops::erf` (after N. Juffa's `erff`; at most 1e-7 absolute
// error): two minimax polynomials in plain multiply-adds and one exp, split at |x| = 0.927734375.
fn erf_approx(x: f32) -> f32 {
    let t = abs(x);
    let s = x * x;
    if (t > 0.927734375) {
        var r = -1.72853470e-5 * t + 3.83197126e-4;
        let u = -3.88396438e-3 * t + 2.42546219e-2;
        r = r * s + u;
        r = r * t + -1.06777877e-1;
        r = r * t + -6.34846687e-1;
        r = r * t + -1.28717512e-1;
        r = r * t + -t;
        let y = 1.0 - exp_reduced(r);
        return select(y, -y, x < 0.0);
    }
    var r = -5.96761703e-4;
    r = r * s + 4.99119423e-3;
    r = r * s + -2.67681349e-2;
    r = r * s + 1.12819925e-1;
    r = r * s + -3.76125336e-1;
    r = r * s + 1.28379166e-1;
    return r * x + x;
}

// Logistic sigmoid without overflow: exp is only ever taken of a non-positive argument.
fn sigmoid(x: f32) -> f32 {
    if (x >= 0.0) {
        return exact_div(1.0, 1.0 + exp_reduced(-x));
    }
    let e = exp_reduced(x);
    return exact_div(e, 1.0 + e);
}

// max(x, 0) with +0 for every x <= 0, -0 included, as cpu-ref (WGSL leaves a zero result's sign
// of `max` to the device).
fn relu(x: f32) -> f32 {
    return select(0.0, x, x > 0.0);
}

// One activation, as `UnaryOp::apply` in the CPU reference. op: 0 = relu, 1 = relu²
// (relu(x)·relu(x)), 2 = silu (x·sigmoid(x)), 3 = gelu (exact erf form, 0.5·x·(1 + erf(x/√2)), with
// cpu-ref's erf approximation above), 4 = exp.
fn activation(op: u32, x: f32) -> f32 {
    switch op {
        case 0u: { return relu(x); }
        case 1u: {
            let r = relu(x);
            return r * r;
        }
        case 2u: { return x * sigmoid(x); }
        case 3u: { return 0.5 * x * (1.0 + erf_approx(x * 0.70710678118654752)); }
        default: { return exp_reduced(x); }
    }
}
