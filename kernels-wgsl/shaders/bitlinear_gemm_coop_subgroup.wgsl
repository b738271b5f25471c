enable f16;
enable wgpu_cooperative_matrix;

// BitLinear GEMM (M > 8) on cooperative matrices (tensor cores): f16 x f16 -> f32 16 x 16 x 16.
//
// Exact: activations are int8 and weights -1 / 0 / +1, both exact in f16, their products are
// exact, and an f32 accumulator sums such integers exactly while |sum| < 2^24 (127 * K < 2^24
// for K below 132,000; K < 2^24 / 128 is checked by the engine). So f32(acc) is the same integer
// as the i32 dot4 path, converted exactly back to i32 for the epilogue of bitlinear_common.wgsl.
//
// Tiles of CM_BM (M) x CM_BN (N) = 128 x 128 outputs, CM_THREADS = 512 threads = 16 subgroups of
// 32 (the engine runs this kernel only where the subgroup size is exactly 32 and a workgroup may
// have 512 invocations) in a 4 (M) x 4 (N) grid; each subgroup owns a 32 x 32 block as 2 x 2
// accumulators of 16 x 16, so per 16 k it loads 2 A and 2 B fragments for 4 matrix operations.
// 512 rather than 256 threads with twice the accumulators each: one workgroup fills an SM, and
// twice the subgroups hide the latencies of the staging and of the barrier (H200: 10-12 % faster).
//
// Per K step of CM_KS = 32 the first 256 threads each load one vec4 of activations (16 int8 of one
// tile row) and the other 256 one weight word (16 codes of one tile row) — consecutive threads
// read consecutive 16-byte / 4-byte pieces of a row — convert them to f16 (weights: code - 1)
// without int-to-float instructions (the f32 mantissa trick of cm_act4) and store them
// k-contiguous in workgroup memory as vec4<f16> (8-byte stores), [row][k] with a padded row stride
// (40 halves = 80 bytes: the 8 rows of one 8 x 16-byte fragment phase fall in 8 different bank
// quads; the fragment loads take a vec4<f16> pointer, so offsets and strides count vec4<f16>).
// Operands are double-buffered (one barrier per step: step s multiplies buffer s % 2 while its
// threads store step s + 1 into the other), and global loads run two steps ahead of their matrix
// operations.
//
// Edges: out-of-range weight rows and words are zero weights (code 1); out-of-range activation
// rows and words read a clamped in-range word (finite, and multiplied by zero weights or never
// stored). The epilogue stores each accumulator row-major into a 16 x 16 f32 slot of workgroup
// memory (a quarter of the subgroups at a time), and every lane writes 8 elements through
// bitlinear_write with its row's scale from workgroup memory (loaded before the K loop, so the
// epilogue waits on no global load).
//
// Workgroup memory: 2 x 2 x 10 KiB operands + 4 KiB epilogue + 512 B row scales = 44.5 KiB
// (GEMM_COOP_WORKGROUP_BYTES in kernels-wgsl, checked against the device limit by the engine;
// above the WebGPU default of 16 KiB).
//
// The enable directives must come first, so this file is first in its kernel! list; needs
// bitlinear_common.wgsl.

// Tile edges and K step.
const CM_BM: u32 = 128u;
const CM_BN: u32 = 128u;
const CM_KS: u32 = 32u;
// Threads per workgroup (GEMM_COOP_THREADS in kernels-wgsl).
const CM_THREADS: u32 = 512u;
// Row stride of the staged operands in vec4<f16> units: CM_KS plus 8 halves of padding.
const CM_LDQ: u32 = 10u;
// vec4<f16> per staged operand buffer (128 rows).
const CM_BUF: u32 = 1280u;

// Two buffers of [CM_BM m][CM_LDQ] activations (k = 0 .. CM_KS used).
var<workgroup> cm_a: array<vec4<f16>, 2560>;
// Two buffers of [CM_BN n][CM_LDQ] weights.
var<workgroup> cm_b: array<vec4<f16>, 2560>;
// Four row-major 16 x 16 f32 slots for the epilogue.
var<workgroup> cm_c: array<f32, 1024>;
// The absmax a_m of each tile row, loaded before the K loop so that the epilogue has no global
// load (16 rounds of dependent global loads cost more than the stores they feed).
var<workgroup> cm_rows: array<f32, 128>;

// Threads that stage activations (the rest stage weights): two per tile row, a half step each.
const CM_HALF: u32 = 256u;

// A thread's share of a K step: tile row u / 2, half u % 2 of the step (16 k each), with
// u = t % CM_HALF: an activation vec4 (t < CM_HALF) or a weight word (the others).
struct CmStage {
    x: vec4<u32>,
    w: u32,
}

fn cm_load(t: u32, m0: u32, n0: u32, s: u32) -> CmStage {
    let wpr = params.words_per_row;
    let u = t % CM_HALF;
    let j = 2u * s + u % 2u;
    let r = u / 2u;
    var st: CmStage;
    if (t < CM_HALF) {
        st.x = act[min(m0 + r, params.m - 1u) * wpr + min(j, wpr - 1u)];
    } else {
        st.w = 0x55555555u;
        let n = n0 + r;
        if (n < params.n && j < wpr) {
            st.w = weights[n * wpr + j];
        }
    }
    return st;
}

// The four signed bytes of an activation word as f16, without an int-to-float conversion: byte
// b + 128 (the xor) in the mantissa of the f32 2^23 is 2^23 + 128 + b exactly, and one subtraction
// leaves b, exact in f32 and in f16.
fn cm_act4(v: u32) -> vec4<f16> {
    let u = v ^ 0x80808080u;
    let bytes = vec4<u32>(u, u >> 8u, u >> 16u, u >> 24u) & vec4<u32>(0xFFu);
    return vec4<f16>(bitcast<vec4<f32>>(bytes | vec4<u32>(0x4B000000u)) - vec4<f32>(8388736.0));
}

// Group g of a weight word (k = 4 g .. 4 g + 3 of the word, bits 8 i + 2 g, layout.rs) as f16
// weights code - 1, through the same f32 mantissa trick.
fn cm_wgt4(w: u32, g: u32) -> vec4<f16> {
    let v = w >> (2u * g);
    let codes = vec4<u32>(v, v >> 8u, v >> 16u, v >> 24u) & vec4<u32>(3u);
    return vec4<f16>(bitcast<vec4<f32>>(codes | vec4<u32>(0x4B000000u)) - vec4<f32>(8388609.0));
}

// Stores a staged share into buffer `buf`: activation word c is k 4 c .. 4 c + 3 of the half,
// weight group g is k 4 g .. 4 g + 3 (bits 8 i + 2 g, layout.rs).
fn cm_store(t: u32, st: CmStage, buf: u32) {
    let u = t % CM_HALF;
    let base = buf * CM_BUF + (u / 2u) * CM_LDQ + 4u * (u % 2u);
    if (t < CM_HALF) {
        cm_a[base] = cm_act4(st.x.x);
        cm_a[base + 1u] = cm_act4(st.x.y);
        cm_a[base + 2u] = cm_act4(st.x.z);
        cm_a[base + 3u] = cm_act4(st.x.w);
    } else {
        cm_b[base] = cm_wgt4(st.w, 0u);
        cm_b[base + 1u] = cm_wgt4(st.w, 1u);
        cm_b[base + 2u] = cm_wgt4(st.w, 2u);
        cm_b[base + 3u] = cm_wgt4(st.w, 3u);
    }
}

// Subgroups of quarter h (sg / 4 == h) store accumulator `c` into slot sg % 4, then each of their
// lanes writes 8 elements of the 16 x 16 block at rows m (first row; the tile's first is m0),
// columns n.
fn cm_epilogue(
    c: coop_mat16x16<f32, C>,
    h: u32,
    sg: u32,
    lane: u32,
    m0: u32,
    m: u32,
    n: u32,
    s: f32,
) {
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
                let scale = bitlinear_scale(s, cm_rows[row - m0]);
                bitlinear_write(row * params.out_stride + params.out_base + col, acc, scale);
            }
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(CM_THREADS)
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
    // Subgroup sg owns tile rows 32 (sg / 4) .. + 32 and columns 32 (sg % 4) .. + 32.
    let am = 32u * (sg / 4u) * CM_LDQ;
    let bn = 32u * (sg % 4u) * CM_LDQ;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();

    // This workgroup's K slice (all of K unless the GEMM is split): steps s0 .. s0 + steps.
    let slice = bitlinear_k_slice(wid.z, 2u);
    let s0 = slice.x;
    let steps = slice.y;
    if (t < CM_BM) {
        cm_rows[t] = act_absmax[params.m_base + min(m0 + t, params.m - 1u)];
    }
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
        }
        // Buffer 1 - buf was last read in step s - 1, before the barrier that ended it.
        if (s + 1u < steps) {
            cm_store(t, next, 1u - buf);
        }
        next = after;
        workgroupBarrier();
    }

    // Epilogue: one accumulator of a quarter of the subgroups at a time.
    let sc = weight_scale[0];
    let m = m0 + 32u * (sg / 4u);
    let n = n0 + 32u * (sg % 4u);
    for (var h = 0u; h < 4u; h = h + 1u) {
        cm_epilogue(c00, h, sg, lane, m0, m, n, sc);
        cm_epilogue(c01, h, sg, lane, m0, m, n + 16u, sc);
        cm_epilogue(c10, h, sg, lane, m0, m + 16u, n, sc);
        cm_epilogue(c11, h, sg, lane, m0, m + 16u, n + 16u, sc);
    }
}
