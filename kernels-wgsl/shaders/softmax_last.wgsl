// Numerically stable softmax over the last axis, one workgroup per row:
//   m = max_i x[r, i],  e_i = exp(x[r, i] - m),  y[r, i] = e_i / Σ_j e_j.
//
// Three passes over the row (max, sum of exponentials, normalize), each folding elements
// t, t + 256, ... per invocation and combining the 256 partials with a tree in workgroup memory.
// Since every exponent is <= 0 and the maximum's term is exactly 1, the sum lies in [1, len] and
// nothing overflows. `exp_reduced` (float_common.wgsl) keeps exp accurate for large |x - m|.
// The sum uses the CPU reference's order (lane t folds t, t + 256, ...; then the tree) and the
// division is correctly rounded (exact_div.wgsl is prepended), so exp is the only inexact step.
//
// Masking: -inf is a mask (bitnet_cpu_ref::ops::softmax_last). A masked entry is skipped by the
// max and the sum and its output is exactly 0, tested by its bits rather than left to arithmetic
// on infinities (which WGSL lets an implementation assume away). The max is then over the
// unmasked entries, so with at least one of them the sum is >= 1 as above; a row masked entirely
// sums to exactly 0, which is how it is detected (flagged, its output left unwritten: the status
// word poisons the whole output).
//
// Chunking: the launch covers rows row_base .. row_base + rows, bound from row_base; flat indices
// reported are those of the full tensors.
//
// Non-finite status words: 0 = x (NaN or +inf, at its flat index), 1 = a row entirely -inf (at the
// flat index of its first element); the output is always finite. Word 0 outranks word 1 in every
// chunk, as cpu-ref checks the whole input before any row. Dispatch: linear, one workgroup per row
// (row = wid.x + wid.y · nwg.x).

struct Params {
    rows: u32,
    len: u32,
    row_base: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

const WG: u32 = 256u;
var<workgroup> partial: array<f32, 256>;

// The bits of -inf, the mask value.
const NEG_INF_BITS: u32 = 0xff800000u;

fn is_masked(v: f32) -> bool {
    return bitcast<u32>(v) == NEG_INF_BITS;
}

// Tree over the 256 partials: max when `is_max`, sum otherwise. Ends with a barrier, so the
// caller may read partial[0] and then overwrite partial[t].
fn tree(t: u32, is_max: bool) -> f32 {
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (t < stride) {
            let u = partial[t];
            let v = partial[t + stride];
            partial[t] = select(u + v, max(u, v), is_max);
        }
        workgroupBarrier();
    }
    let r = partial[0];
    workgroupBarrier();
    return r;
}

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

    // Starts at f32::MIN, not -inf: any unmasked entry is >= it, so the max over unmasked
    // entries is unchanged, and a lane with none of them leaves a finite value to the tree.
    var m = -3.4028235e38;
    for (var i = t; i < len; i += WG) {
        let v = x[base + i];
        if (is_masked(v)) {
            continue;
        }
        if (is_non_finite(v)) {
            atomicMin(&nonfinite[0], (params.row_base + row) * len + i);
        }
        m = max(m, v);
    }
    partial[t] = m;
    workgroupBarrier();
    let row_max = tree(t, true);

    // A masked entry adds nothing, as its 0.0 term adds nothing to cpu-ref's lane.
    var s = 0.0;
    for (var i = t; i < len; i += WG) {
        let v = x[base + i];
        if (!is_masked(v)) {
            s += exp_reduced(v - row_max);
        }
    }
    partial[t] = s;
    workgroupBarrier();
    let sum = tree(t, false);

    // Every entry masked: no distribution. `sum` is uniform, so the whole workgroup leaves.
    if (sum == 0.0) {
        if (t == 0u) {
            atomicMin(&nonfinite[1], (params.row_base + row) * len);
        }
        return;
    }

    for (var i = t; i < len; i += WG) {
        let v = x[base + i];
        var e = 0.0;
        if (!is_masked(v)) {
            e = exact_div(exp_reduced(v - row_max), sum);
        }
        y[base + i] = e;
    }
}
