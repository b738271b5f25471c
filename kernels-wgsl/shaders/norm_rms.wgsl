// RMS norm over the last axis, one workgroup per row:
//   y[r, i] = x[r, i] · inv · w[i],  inv = 1 / sqrt(Σ_i x[r, i]² / len + eps).
//
// The sum of squares and the divisions: norm_rms_common.wgsl (the CPU reference's order, bit for
// bit); then every invocation scales its own elements.
//
// Chunking: the launch covers rows row_base .. row_base + rows of x and y, bound from row_base; w
// is bound whole. Flat indices reported are those of the full tensors.
//
// Non-finite status words: 0 = x, 1 = weight, 2 = the sum of squares of a row overflowed (index =
// the row), 3 = output. eps is checked on the host. Dispatch: linear, one workgroup per row
// (row = wid.x + wid.y · nwg.x).

struct Params {
    rows: u32,
    len: u32,
    eps: f32,
    row_base: u32,
    // Always 0: the runtime zero of rms_pin4.
    zero: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
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
        let v = vec4<f32>(x[base + k.x], x[base + k.y], x[base + k.z], x[base + k.w]);
        // Clamped lanes repeat the last element: its own index, so flagging it again is harmless.
        for (var c = 0u; c < 4u; c++) {
            if (is_non_finite(v[c])) {
                atomicMin(&nonfinite[0], flat_base + k[c]);
            }
            // Only the first row's invocations check the weights: once is enough.
            if (row == 0u && is_non_finite(w[k[c]])) {
                atomicMin(&nonfinite[1], k[c]);
            }
        }
        acc = rms_fold(acc, v, rms_valid(i, len));
    }
    let sum_sq = rms_sum_sq(acc, t);
    if (t == 0u && is_non_finite(sum_sq)) {
        atomicMin(&nonfinite[2], params.row_base + row);
    }
    let inv = rms_inv(sum_sq, len, params.eps);
    for (var i = t; i < len; i += 4u * WG) {
        let k = rms_lanes(i, len);
        let valid = rms_valid(i, len);
        let v = vec4<f32>(x[base + k.x], x[base + k.y], x[base + k.z], x[base + k.w]);
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
