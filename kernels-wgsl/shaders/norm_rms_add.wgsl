// Residual add fused with RMS norm over the last axis, one workgroup per row:
//   h[r, i] = x[r, i] + res[r, i],  y[r, i] = h[r, i] · inv · w[i],
//   inv = 1 / sqrt(Σ_i h[r, i]² / len + eps)
// (bitnet_cpu_ref::ops::add_rms_norm): the step between a pre-norm transformer block's
// sublayers, one dispatch where an add and a norm took two, each behind a barrier.
//
// Invocation t adds its elements t, t + 256, ..., stores h and folds h² as norm_rms.wgsl folds
// x² (four elements per iteration: norm_rms_common.wgsl); the tree and the divisions are
// norm_rms_common.wgsl's (bit for bit the CPU's order); then each invocation scales the h it
// stored itself (same invocation: no barrier needed).
//
// Chunking: the launch covers rows row_base .. row_base + rows of x, res, h and y, bound from
// row_base; w is bound whole. Flat indices reported are those of the full tensors.
//
// Non-finite status words: 0 = x, 1 = res, 2 = weight, 3 = output: the first element of a row
// whose h or sum of squares overflowed, or a non-finite y element (lowest flat index wins, as
// cpu-ref reports it). eps is checked on the host. Dispatch: linear, one workgroup per row.

struct Params {
    rows: u32,
    len: u32,
    eps: f32,
    row_base: u32,
    // Always 0: the runtime zero of rms_pin4.
    zero: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> res: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> h: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // `row` is uniform across the workgroup, so this early exit keeps barriers in uniform control flow.
    let row = wid.x + wid.y * nwg.x;
    if (row >= params.rows) {
        return;
    }
    let len = params.len;
    let base = row * len;
    let flat_base = (params.row_base + row) * len;
    var acc = 0.0;
    for (var i = t; i < len; i += 4u * WG) {
        let k = rms_lanes(i, len);
        let valid = rms_valid(i, len);
        let a = vec4<f32>(x[base + k.x], x[base + k.y], x[base + k.z], x[base + k.w]);
        let b = vec4<f32>(res[base + k.x], res[base + k.y], res[base + k.z], res[base + k.w]);
        let v = a + b;
        // Clamped lanes repeat the last element: its own index, so flagging it again is harmless.
        for (var c = 0u; c < 4u; c++) {
            if (is_non_finite(a[c])) {
                atomicMin(&nonfinite[0], flat_base + k[c]);
            }
            if (is_non_finite(b[c])) {
                atomicMin(&nonfinite[1], flat_base + k[c]);
            }
            // Only the first row's invocations check the weights: once is enough.
            if (row == 0u && is_non_finite(w[k[c]])) {
                atomicMin(&nonfinite[2], k[c]);
            }
            if (valid[c]) {
                h[base + k[c]] = v[c];
            }
        }
        acc = rms_fold(acc, v, valid);
    }
    let sum_sq = rms_sum_sq(acc, t);
    if (is_non_finite(sum_sq)) {
        // No finite norm for this row (its h or squares overflowed): reported at its first element.
        if (t == 0u) {
            atomicMin(&nonfinite[3], flat_base);
        }
        return;
    }
    let inv = rms_inv(sum_sq, len, params.eps);
    for (var i = t; i < len; i += 4u * WG) {
        let k = rms_lanes(i, len);
        let valid = rms_valid(i, len);
        let v = vec4<f32>(h[base + k.x], h[base + k.y], h[base + k.z], h[base + k.w]);
        let r = rms_scale(v, inv, vec4<f32>(w[k.x], w[k.y], w[k.z], w[k.w]));
        for (var c = 0u; c < 4u; c++) {
            if (valid[c]) {
                if (is_non_finite(r[c])) {
                    atomicMin(&nonfinite[3], flat_base + k[c]);
                }
                y[base + k[c]] = r[c];
            }
        }
    }
}
