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
// 4-byte pieces of a row — converts them to f16 (codes to weights: w = code - 1) and stores them
// k-contiguous in workgroup memory, [row][k] with a padded row stride (CM_LD = 40 halves = 80
// bytes: the 8 rows of one 8 x 16-byte fragment phase fall in 8 different bank quads). The next
// step's global loads are issued before the current step's matrix operations.
//
// Edges: out-of-range weight rows and words are zero weights (code 1); out-of-range activation
// rows and words read a clamped in-range word (finite, and multiplied by zero weights or never
// stored). The epilogue stores each accumulator row-major into the subgroup's own 16 x 16 f32
// slot of workgroup memory, and every lane writes 8 of its elements through bitlinear_write.
//
// Workgroup memory: 2 x 10 KiB operands + 8 KiB epilogue = 28 KiB (above the WebGPU default of
// 16 KiB; devices with cooperative matrices offer at least 32 KiB — the engine's self-test rejects
// the kernel where pipeline creation fails).
//
// The enable directives must come first, so this file is first in its kernel! list; needs
// bitlinear_common.wgsl.

const CM_THREADS: u32 = 256u;
// Tile edges and K step.
const CM_BM: u32 = 128u;
const CM_BN: u32 = 128u;
const CM_KS: u32 = 32u;
// Row stride (halves) of the staged operands: CM_KS plus 8 halves of padding.
const CM_LD: u32 = 40u;

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

// [CM_BM m][CM_LD] activations of the step (k = 0 .. CM_KS used).
var<workgroup> cm_a: array<f16, 5120>;
// [CM_BN n][CM_LD] weights of the step.
var<workgroup> cm_b: array<f16, 5120>;
// One row-major 16 x 16 f32 slot per subgroup for the epilogue.
var<workgroup> cm_c: array<f32, 2048>;

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

// Four int8 activations of a packed word as f16, at cm_a[base ..].
fn cm_act4(v: u32, base: u32) {
    let q = vec4<f16>(unpack4xI8(v));
    cm_a[base] = q.x;
    cm_a[base + 1u] = q.y;
    cm_a[base + 2u] = q.z;
    cm_a[base + 3u] = q.w;
}

// Group g of a weight word (k = 4 g .. 4 g + 3 of the word, bits 8 i + 2 g, layout.rs) as f16
// weights code - 1, at cm_b[base ..].
fn cm_wgt4(w: u32, g: u32, base: u32) {
    let codes = vec4<i32>(unpack4xU8((w >> (2u * g)) & CODE_MASK));
    let q = vec4<f16>(codes - vec4<i32>(1));
    cm_b[base] = q.x;
    cm_b[base + 1u] = q.y;
    cm_b[base + 2u] = q.z;
    cm_b[base + 3u] = q.w;
}

fn cm_store(t: u32, st: CmStage) {
    let base = (t / 2u) * CM_LD + 16u * (t % 2u);
    cm_act4(st.x.x, base);
    cm_act4(st.x.y, base + 4u);
    cm_act4(st.x.z, base + 8u);
    cm_act4(st.x.w, base + 12u);
    cm_wgt4(st.w, 0u, base);
    cm_wgt4(st.w, 1u, base + 4u);
    cm_wgt4(st.w, 2u, base + 8u);
    cm_wgt4(st.w, 3u, base + 12u);
}

// Stores accumulator `c` into the subgroup's slot, then lane `lane` writes its 8 elements of the
// 16 x 16 block at tile rows m (first row), columns n (first column).
fn cm_epilogue(c: coop_mat16x16<f32, C>, sg: u32, lane: u32, m: u32, n: u32, s: f32) {
    coopStoreT(c, &cm_c[sg * 256u], 16u);
    workgroupBarrier();
    for (var r = 0u; r < 8u; r = r + 1u) {
        let e = lane + 32u * r;
        let row = m + e / 16u;
        let col = n + e % 16u;
        if (row < params.m && col < params.n) {
            let acc = i32(cm_c[sg * 256u + e]);
            let scale = bitlinear_scale(s, act_absmax[params.m_base + row]);
            bitlinear_write(row * params.out_stride + params.out_base + col, acc, scale);
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
    let am = 64u * (sg / 4u) * CM_LD;
    let bn = 32u * (sg % 4u) * CM_LD;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    var c20 = coop_mat16x16<f32, C>();
    var c21 = coop_mat16x16<f32, C>();
    var c30 = coop_mat16x16<f32, C>();
    var c31 = coop_mat16x16<f32, C>();

    let steps = (params.words_per_row + 1u) / 2u;
    var st = cm_load(t, m0, n0, 0u);
    for (var s = 0u; s < steps; s = s + 1u) {
        cm_store(t, st);
        workgroupBarrier();
        if (s + 1u < steps) {
            st = cm_load(t, m0, n0, s + 1u);
        }
        for (var kk = 0u; kk < CM_KS; kk = kk + 16u) {
            // A row-major [m][k] (coopLoadT), B column-major: element (k, n) at n * CM_LD + k.
            let b0 = coopLoad<coop_mat16x16<f16, B>>(&cm_b[bn + kk], CM_LD);
            let b1 = coopLoad<coop_mat16x16<f16, B>>(&cm_b[bn + 16u * CM_LD + kk], CM_LD);
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&cm_a[am + kk], CM_LD);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&cm_a[am + 16u * CM_LD + kk], CM_LD);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            let a2 = coopLoadT<coop_mat16x16<f16, A>>(&cm_a[am + 32u * CM_LD + kk], CM_LD);
            c20 = coopMultiplyAdd(a2, b0, c20);
            c21 = coopMultiplyAdd(a2, b1, c21);
            let a3 = coopLoadT<coop_mat16x16<f16, A>>(&cm_a[am + 48u * CM_LD + kk], CM_LD);
            c30 = coopMultiplyAdd(a3, b0, c30);
            c31 = coopMultiplyAdd(a3, b1, c31);
        }
        workgroupBarrier();
    }

    // Epilogue: one accumulator of every subgroup at a time.
    let sc = weight_scale[0];
    let m = m0 + 64u * (sg / 4u);
    let n = n0 + 32u * (sg % 4u);
    cm_epilogue(c00, sg, lane, m, n, sc);
    cm_epilogue(c01, sg, lane, m, n + 16u, sc);
    cm_epilogue(c10, sg, lane, m + 16u, n, sc);
    cm_epilogue(c11, sg, lane, m + 16u, n + 16u, sc);
    cm_epilogue(c20, sg, lane, m + 32u, n, sc);
    cm_epilogue(c21, sg, lane, m + 32u, n + 16u, sc);
    cm_epilogue(c30, sg, lane, m + 48u, n, sc);
    cm_epilogue(c31, sg, lane, m + 48u, n + 16u, sc);
}
