// BitLinear GEMV on quantized activations for 1 <= M <= 8 and K % 64 == 0 (vec4 weight loads),
// with subgroup reductions.
//
// Row blocks, lanes, load depth and the reduction are those of bitlinear_gemv_blocks.wgsl.
// MR = M is an override constant: the up to 8 activation rows have one named vec4<i32>
// accumulator each (4 weight rows), updated under `MR > m` conditions that the driver folds
// away, so no runtime-indexed array exists (those end up in slow local memory on some drivers).
// Activations are read straight from the (small, cache-resident) activation buffer as vec4 words;
// each step also subtracts the partial row sum of the activations it used from its partial
// accumulators (exact: integer sums distribute), which turns the code-domain sums into
// sum(x * w).
//
// Needs bitlinear_common.wgsl and bitlinear_gemv_blocks.wgsl.

// Activation rows of this dispatch (override constant; the engine sets it to params.m).
override MR: u32 = 1u;

@group(0) @binding(0) var<storage, read> weights: array<vec4<u32>>;
// The weight tensor's scale s.
@group(0) @binding(1) var<storage, read> weight_scale: array<f32>;
// [M, words_per_row] vec4: the packed activation rows (4 * words_per_row words each).
@group(0) @binding(2) var<storage, read> act: array<vec4<u32>>;
// Per activation row: the clamped absmax a_m.
@group(0) @binding(3) var<storage, read> act_absmax: array<f32>;
// [M, out_stride] row-major: f32 bits of y, or i32 bits of acc (see `mode`).
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

// Status word 0: the smallest flat index (into `out`) of a non-finite y.
const Y_STATUS: u32 = 0u;

// One partial accumulator (4 weight rows) per activation row.
struct GvAcc {
    a0: vec4<i32>,
    a1: vec4<i32>,
    a2: vec4<i32>,
    a3: vec4<i32>,
    a4: vec4<i32>,
    a5: vec4<i32>,
    a6: vec4<i32>,
    a7: vec4<i32>,
}

// One activation row m against weight step j: code-domain dot minus the row-sum share.
fn gv_row_step(acc: vec4<i32>, w: GvRows, m: u32, j: u32) -> vec4<i32> {
    let b = m * params.words_per_row + 4u * j;
    let xa = act[b];
    let xb = act[b + 1u];
    let xc = act[b + 2u];
    let xd = act[b + 3u];
    let rs = bitlinear_sum_words(xa.x, xa.y, xa.z, xa.w) + bitlinear_sum_words(xb.x, xb.y, xb.z, xb.w)
        + bitlinear_sum_words(xc.x, xc.y, xc.z, xc.w) + bitlinear_sum_words(xd.x, xd.y, xd.z, xd.w);
    return acc + gv_dot(w, xa, xb, xc, xd) - vec4<i32>(rs);
}

// Every activation row against weight step j (nothing past the row's end).
fn gv_step(a: GvAcc, w: GvRows, j: u32, vpr: u32) -> GvAcc {
    if (j >= vpr) {
        return a;
    }
    var r = a;
    r.a0 = gv_row_step(r.a0, w, 0u, j);
    if (MR > 1u) {
        r.a1 = gv_row_step(r.a1, w, 1u, j);
    }
    if (MR > 2u) {
        r.a2 = gv_row_step(r.a2, w, 2u, j);
    }
    if (MR > 3u) {
        r.a3 = gv_row_step(r.a3, w, 3u, j);
    }
    if (MR > 4u) {
        r.a4 = gv_row_step(r.a4, w, 4u, j);
    }
    if (MR > 5u) {
        r.a5 = gv_row_step(r.a5, w, 5u, j);
    }
    if (MR > 6u) {
        r.a6 = gv_row_step(r.a6, w, 6u, j);
    }
    if (MR > 7u) {
        r.a7 = gv_row_step(r.a7, w, 7u, j);
    }
    return r;
}

// Reduces activation row m's partials over the block's lanes and stores its 4 outputs.
// Uniform control flow (gv_reduce has barriers).
fn gv_finish(acc: vec4<i32>, m: u32, ids: GvIds, s: f32) {
    let total = gv_reduce(acc, ids);
    if (ids.l != 0u) {
        return;
    }
    let scale = bitlinear_scale(s, act_absmax[params.m_base + m]);
    let base = m * params.out_stride + params.out_base + ids.n;
    if (ids.n < params.n) {
        bitlinear_write(base, total.x, scale);
    }
    if (ids.n + 1u < params.n) {
        bitlinear_write(base + 1u, total.y, scale);
    }
    if (ids.n + 2u < params.n) {
        bitlinear_write(base + 2u, total.z, scale);
    }
    if (ids.n + 3u < params.n) {
        bitlinear_write(base + 3u, total.w, scale);
    }
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_size) sg_size: u32,
) {
    let ids = gv_ids(wid, nwg, lane, sg, sg_size);
    let vpr = params.words_per_row / 4u;

    // The first DEPTH steps up front; each step's registers are reloaded DEPTH steps ahead.
    var j = ids.l;
    var w0 = gv_load_if(ids.n, j, vpr);
    var w1 = GvRows();
    var w2 = GvRows();
    var w3 = GvRows();
    if (DEPTH > 1u) {
        w1 = gv_load_if(ids.n, j + TPR, vpr);
    }
    if (DEPTH > 2u) {
        w2 = gv_load_if(ids.n, j + 2u * TPR, vpr);
    }
    if (DEPTH > 3u) {
        w3 = gv_load_if(ids.n, j + 3u * TPR, vpr);
    }
    var acc = GvAcc();
    loop {
        if (j >= vpr) {
            break;
        }
        let jn = j + DEPTH * TPR;
        acc = gv_step(acc, w0, j, vpr);
        w0 = gv_load_if(ids.n, jn, vpr);
        if (DEPTH > 1u) {
            acc = gv_step(acc, w1, j + TPR, vpr);
            w1 = gv_load_if(ids.n, jn + TPR, vpr);
        }
        if (DEPTH > 2u) {
            acc = gv_step(acc, w2, j + 2u * TPR, vpr);
            w2 = gv_load_if(ids.n, jn + 2u * TPR, vpr);
        }
        if (DEPTH > 3u) {
            acc = gv_step(acc, w3, j + 3u * TPR, vpr);
            w3 = gv_load_if(ids.n, jn + 3u * TPR, vpr);
        }
        j = jn;
    }

    let s = weight_scale[0];
    gv_finish(acc.a0, 0u, ids, s);
    if (MR > 1u) {
        gv_finish(acc.a1, 1u, ids, s);
    }
    if (MR > 2u) {
        gv_finish(acc.a2, 2u, ids, s);
    }
    if (MR > 3u) {
        gv_finish(acc.a3, 3u, ids, s);
    }
    if (MR > 4u) {
        gv_finish(acc.a4, 4u, ids, s);
    }
    if (MR > 5u) {
        gv_finish(acc.a5, 5u, ids, s);
    }
    if (MR > 6u) {
        gv_finish(acc.a6, 6u, ids, s);
    }
    if (MR > 7u) {
        gv_finish(acc.a7, 7u, ids, s);
    }
}
