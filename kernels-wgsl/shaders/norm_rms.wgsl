// RMS norm over the last axis, one workgroup per row:
//   y[r, i] = x[r, i] · inv · w[i],  inv = 1 / sqrt(Σ_i x[r, i]² / len + eps).
//
// Invocation t folds x², for elements t, t + 256, ..., sequentially; a tree in workgroup memory
// (strides 128, ..., 1) sums the 256 partials; then every invocation scales its own elements.
// Non-finite x or weight values raise status bit 1; a non-finite sum of squares (overflow) or a
// non-finite output raises status bit 2. Dispatch: one workgroup per row, row = wg.x + wg.y·nwg.x.

struct Params {
    rows: u32,
    len: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> status: atomic<u32>;

const WG: u32 = 256u;
var<workgroup> partial: array<f32, 256>;

fn is_finite(v: f32) -> bool {
    // Exponent all ones means inf or NaN; tested on bits so no fast-math can fold it away.
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // `row` is uniform across the workgroup, so this early exit keeps barriers in uniform control flow.
    let row = wg.x + wg.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.len;
    var acc = 0.0;
    var bad = false;
    for (var i = t; i < p.len; i += WG) {
        let v = x[base + i];
        bad = bad || !is_finite(v) || !is_finite(w[i]);
        acc = fma(v, v, acc);
    }
    if (bad) {
        atomicOr(&status, 1u);
    }
    partial[t] = acc;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (t < stride) {
            partial[t] = partial[t] + partial[t + stride];
        }
        workgroupBarrier();
    }
    let sum_sq = partial[0];
    let inv = 1.0 / sqrt(sum_sq / f32(p.len) + p.eps);
    var out_bad = !is_finite(sum_sq);
    for (var i = t; i < p.len; i += WG) {
        let r = x[base + i] * inv * w[i];
        out_bad = out_bad || !is_finite(r);
        y[base + i] = r;
    }
    if (out_bad) {
        atomicOr(&status, 2u);
    }
}
