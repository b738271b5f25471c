enable f16;
enable wgpu_cooperative_matrix;

// BitLinear GEMM (M > 8) on cooperative matrices (tensor cores): f16 x f16 -> f32 16 x 16 x 16.
//
// Exact: activations are int8 and weights -1 / 0 / +1, both exact in f16, their products are
// exact, and an f32 accumulator sums such integers exactly while |sum| < 2^24 (127 * K < 2^24
// for K below 132,000; K < 2^24 / 128 is checked by the engine). So f32(acc) is the same integer
// as the i32 dot4 path, converted exactly back to i32 for the epilogue of bitlinear_common.wgsl.
//
// Tiles of CM_BM (M) x CM_BN (N) = 128 x 128 outputs, 256 threads = 8 subgroups of 32 (the engine
// runs this kernel only where the subgroup size is exactly 32) in a 2 (M) x 4 (N) grid; each
// subgroup owns a 64 x 32 block as 4 x 2 accumulators of 16 x 16, so per 16 k it loads 4 A and 2 B
// fragments for 8 matrix operations.
//
// Per K step of CM_KS = 32 every thread loads one vec4 of activations (16 int8 of one tile row)
// and one weight word (16 codes of one tile row) — consecutive threads read consecutive 16-byte /
// 4-byte pieces of a row — converts them to f16 (weights: code - 1) and stores them k-contiguous
// in workgroup memory as vec4<f16> (8-byte stores), [row][k] with a padded row stride (40 halves
// = 80 bytes: the 8 rows of one 8 x 16-byte fragment phase fall in 8 different bank quads; the
// fragment loads take a vec4<f16> pointer, so offsets and strides count vec4<f16>). Operands are
// double-buffered (one barrier per step: step s multiplies buffer s % 2 while its threads store
// step s + 1 into the other), and global loads run two steps ahead of their matrix operations.
//
// Edges: out-of-range weight rows and words are zero weights (code 1); out-of-range activation
// rows and words read a clamped in-range word (finite, and multiplied by zero weights or never
// stored). The epilogue stores each accumulator row-major into a 16 x 16 f32 slot of workgroup
// memory (half of the subgroups at a time), and every lane writes 8 elements through
// bitlinear_write.
//
// Workgroup memory: 2 x 2 x 10 KiB operands + 4 KiB epilogue = 44 KiB (above the WebGPU default
// of 16 KiB; the engine's self-test rejects the kernel where pipeline creation fails).
//
// The enable directives must come first, so this file is first in its kernel! list; needs
// bitlinear_common.wgsl.

// Tile edges and K step.
const CM_BM: u32 = 128u;
const CM_BN: u32 = 128u;
const CM_KS: u32 = 32u;
// Row stride of the staged operands in vec4<f16> units: CM_KS plus 8 halves of padding.
const CM_LDQ: u32 = 10u;
// vec4<f16> per staged operand buffer (128 rows).
const CM_BUF: u32 = 1280u;

@group(0) @binding(0) var<storage, read> weights: array<u32>;
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

// Two buffers of [CM_BM m][CM_LDQ] activations (k = 0 .. CM_KS used).
var<workgroup> cm_a: array<vec4<f16>, 2560>;
// Two buffers of [CM_BN n][CM_LDQ] weights.
var<workgroup> cm_b: array<vec4<f16>, 2560>;
// Four row-major 16 x 16 f32 slots for the epilogue.
var<workgroup> cm_c: array<f32, 1024>;

// A thread's share of a K step: tile row t / 2, half t % 2 of the step (16 k each): one
// activation vec4 and one weight word.
struct CmStage {
    x: vec4<u32>,
    w: u32,
}

fn cm_load(t: u32, m0: u32, n0: u32, s: u32) -> CmStage {
    let wpr = params.words_per_row;
    // Weight word j pairs with activation vec4 j (16 k each).
    let j = 2u * s + t % 2u;
    let r = t / 2u;
    var st: CmStage;
    st.x = act[min(m0 + r, params.m - 1u) * wpr + min(j, wpr - 1u)];
    // Out of range: code 1 everywhere, weight 0.
    st.w = 0x55555555u;
    let n = n0 + r;
    if (n < params.n && j < wpr) {
        st.w = weights[n * wpr + j];
    }
    return st;
}

// The four signed bytes of an activation word as f16.
fn cm_act4(v: u32) -> vec4<f16> {
    return vec4<f16>(unpack4xI8(v));
}

// Group g of a weight word (k = 4 g .. 4 g + 3 of the word, bits 8 i + 2 g, layout.rs) as f16
// weights code - 1.
fn cm_wgt4(w: u32, g: u32) -> vec4<f16> {
    return vec4<f16>(unpack4xU8((w >> (2u * g)) & CODE_MASK)) - vec4<f16>(1.0h);
}

// Stores a staged share into buffer `buf`: activation word c is k 4 c .. 4 c + 3 of the half,
// weight group g is k 4 g .. 4 g + 3 (bits 8 i + 2 g, layout.rs).
fn cm_store(t: u32, st: CmStage, buf: u32) {
    let base = buf * CM_BUF + (t / 2u) * CM_LDQ + 4u * (t % 2u);
    cm_a[base] = cm_act4(st.x.x);
    cm_a[base + 1u] = cm_act4(st.x.y);
    cm_a[base + 2u] = cm_act4(st.x.z);
    cm_a[base + 3u] = cm_act4(st.x.w);
    cm_b[base] = cm_wgt4(st.w, 0u);
    cm_b[base + 1u] = cm_wgt4(st.w, 1u);
    cm_b[base + 2u] = cm_wgt4(st.w, 2u);
    cm_b[base + 3u] = cm_wgt4(st.w, 3u);
}

// Subgroups of half h (sg / 4 == h) store accumulator `c` into slot sg % 4, then each of their
// lanes writes 8 elements of the 16 x 16 block at tile rows m (first row), columns n.
fn cm_epilogue(c: coop_mat16x16<f32, C>, h: u32, sg: u32, lane: u32, m: u32, n: u32, s: f32) {
    let slot = (sg % 4u) * 256u;
    if (sg / 4u == h) {
        coopStoreT(c, &cm_c[slot], 16u);
    }
    workgroupBarrier();
    if (sg / 4u == h) {
        for (var r = 0u; r < 8u; r = r + 1u) {
            let e = lane + 32u * r;
            let row = m + e / 16u;
            let col = n + e % 16u;
            if (row < params.m && col < params.n) {
                let acc = i32(cm_c[slot + e]);
                let scale = bitlinear_scale(s, act_absmax[params.m_base + row]);
                bitlinear_write(row * params.out_stride + params.out_base + col, acc, scale);
            }
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    // Linear grid (folded into 2D by the engine when large), unfolded into (tile_m, tile_n).
    let tile = wid.x + wid.y * nwg.x;
    let n0 = (tile % params.tiles_n) * CM_BN;
    let m0 = (tile / params.tiles_n) * CM_BM;
    if (m0 >= params.m) {
        // Uniform across the workgroup: a padding workgroup of the folded grid.
        return;
    }
    // Subgroup sg owns tile rows 64 (sg / 4) .. + 64 and columns 32 (sg % 4) .. + 32.
    let am = 64u * (sg / 4u) * CM_LDQ;
    let bn = 32u * (sg % 4u) * CM_LDQ;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    var c20 = coop_mat16x16<f32, C>();
    var c21 = coop_mat16x16<f32, C>();
    var c30 = coop_mat16x16<f32, C>();
    var c31 = coop_mat16x16<f32, C>();

    // This workgroup's K slice (all of K unless the GEMM is split): steps s0 .. s0 + steps.
    let slice = bitlinear_k_slice(wid.z, 2u);
    let s0 = slice.x;
    let steps = slice.y;
    cm_store(t, cm_load(t, m0, n0, s0), 0u);
    // `next`: the share of step s + 1, loaded one step ahead of its store.
    var next = CmStage();
    if (steps > 1u) {
        next = cm_load(t, m0, n0, s0 + 1u);
    }
    workgroupBarrier();
    for (var s = 0u; s < steps; s = s + 1u) {
        let buf = s % 2u;
        var after = CmStage();
        if (s + 2u < steps) {
            after = cm_load(t, m0, n0, s0 + s + 2u);
        }
        let a_buf = buf * CM_BUF + am;
        let b_buf = buf * CM_BUF + bn;
        for (var kq = 0u; kq < CM_KS / 4u; kq = kq + 4u) {
            // A row-major [m][k] (coopLoadT), B column-major: element (k, n) at n * CM_LDQ + k.
            let b0 = coopLoad<coop_mat16x16<f16, B>>(&cm_b[b_buf + kq], CM_LDQ);
            let b1 = coopLoad<coop_mat16x16<f16, B>>(&cm_b[b_buf + 16u * CM_LDQ + kq], CM_LDQ);
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&cm_a[a_buf + kq], CM_LDQ);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&cm_a[a_buf + 16u * CM_LDQ + kq], CM_LDQ);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            let a2 = coopLoadT<coop_mat16x16<f16, A>>(&cm_a[a_buf + 32u * CM_LDQ + kq], CM_LDQ);
            c20 = coopMultiplyAdd(a2, b0, c20);
            c21 = coopMultiplyAdd(a2, b1, c21);
            let a3 = coopLoadT<coop_mat16x16<f16, A>>(&cm_a[a_buf + 48u * CM_LDQ + kq], CM_LDQ);
            c30 = coopMultiplyAdd(a3, b0, c30);
            c31 = coopMultiplyAdd(a3, b1, c31);
        }
        // Buffer 1 - buf was last read in step s - 1, before the barrier that ended it.
        if (s + 1u < steps) {
            cm_store(t, next, 1u - buf);
        }
        next = after;
        workgroupBarrier();
    }

    // Epilogue: one accumulator of one half of the subgroups at a time.
    let sc = weight_scale[0];
    let m = m0 + 64u * (sg / 4u);
    let n = n0 + 32u * (sg % 4u);
    for (var h = 0u; h < 2u; h = h + 1u) {
        cm_epilogue(c00, h, sg, lane, m, n, sc);
        cm_epilogue(c01, h, sg, lane, m, n + 16u, sc);
        cm_epilogue(c10, h, sg, lane, m + 16u, n, sc);
        cm_epilogue(c11, h, sg, lane, m + 16u, n + 16u, sc);
        cm_epilogue(c20, h, sg, lane, m + 32u, n, sc);
        cm_epilogue(c21, h, sg, lane, m + 32u, n + 16u, sc);
        cm_epilogue(c30, h, sg, lane, m + 48u, n, sc);
        cm_epilogue(c31, h, sg, lane, m + 48u, n + 16u, sc);
    }
}
