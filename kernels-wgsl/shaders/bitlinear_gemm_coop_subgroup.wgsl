enable f16;
enable wgpu_cooperative_matrix;

// BitLinear GEMM (M > 8) on cooperative matrices (tensor cores): f16 x f16 -> f32 16 x 16 x 16.
//
// Exact: activations are int8 and weights -1 / 0 / +1, both exact in f16, their products are
// exact, and an f32 accumulator sums such integers exactly while |sum| < 2^24 (127 * K < 2^24
// for K below 132,000; K < 2^24 / 128 is checked by the engine). So f32(acc) is the same integer
// as the i32 dot4 path, converted exactly back to i32 for the epilogue of bitlinear_common.wgsl.
//
// Tiles of 64 (M) x 128 (N), 256 threads = 8 subgroups of 32 (the engine runs this kernel only
// where the subgroup size is exactly 32), each subgroup owning a 32 x 32 block as 2 x 2
// accumulators. Per K step of 32 the workgroup stages the activations (int8 -> f16, [m][k]) and
// the weights (codes -> -1 / 0 / +1 f16, [n][k]) in workgroup memory; the next step's words are
// loaded into registers before the current step's matrix operations. Results go through workgroup
// memory (row-major 16 x 16 per accumulator, half of the subgroups at a time) to the exact
// epilogue. Out-of-range weight rows and words are zero weights; out-of-range activation rows
// read a clamped row and are never stored.
//
// The enable directives must come first, so this file is first in its kernel! list; needs
// bitlinear_common.wgsl.

const CM_THREADS: u32 = 256u;
// Tile edges and K step.
const CM_BM: u32 = 64u;
const CM_BN: u32 = 128u;
const CM_KS: u32 = 32u;

@group(0) @binding(0) var<storage, read> weights: array<u32>;
// The weight tensor's scale s.
@group(0) @binding(1) var<storage, read> weight_scale: array<f32>;
// [M, 4 * words_per_row] packed activation words.
@group(0) @binding(2) var<storage, read> act: array<u32>;
// Per activation row: the clamped absmax a_m.
@group(0) @binding(3) var<storage, read> act_absmax: array<f32>;
// [M, out_stride] row-major: f32 bits of y, or i32 bits of acc (see `mode`).
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

// Status word 0: the smallest flat index (into `out`) of a non-finite y.
const Y_STATUS: u32 = 0u;

// [CM_BM m][CM_KS k] activations of the step.
var<workgroup> cm_a: array<f16, 2048>;
// [CM_BN n][CM_KS k] weights of the step.
var<workgroup> cm_b: array<f16, 4096>;
// Four row-major 16 x 16 accumulators (one per storing subgroup).
var<workgroup> cm_c: array<f32, 1024>;

// A thread's share of a K step: two activation words (rows e / 8, words e % 8 for e = t,
// t + 256) and one weight word (row t / 2, word t % 2).
struct CmStage {
    x0: u32,
    x1: u32,
    w: u32,
}

fn cm_load(t: u32, m0: u32, n0: u32, s: u32) -> CmStage {
    let wpr = params.words_per_row;
    let xpr = 4u * wpr;
    let last_m = params.m - 1u;
    var st: CmStage;
    let e1 = t + CM_THREADS;
    st.x0 = act[min(m0 + t / 8u, last_m) * xpr + min(8u * s + t % 8u, xpr - 1u)];
    st.x1 = act[min(m0 + e1 / 8u, last_m) * xpr + min(8u * s + e1 % 8u, xpr - 1u)];
    let n = n0 + t / 2u;
    let j = 2u * s + t % 2u;
    // Out of range: code 1 everywhere, weight 0.
    st.w = 0x55555555u;
    if (n < params.n && j < wpr) {
        st.w = weights[n * wpr + j];
    }
    return st;
}

// Four activations of a packed word as f16.
fn cm_act4(v: u32, base: u32) {
    let q = unpack4xI8(v);
    cm_a[base] = f16(q.x);
    cm_a[base + 1u] = f16(q.y);
    cm_a[base + 2u] = f16(q.z);
    cm_a[base + 3u] = f16(q.w);
}

fn cm_store(t: u32, st: CmStage) {
    let e1 = t + CM_THREADS;
    cm_act4(st.x0, (t / 8u) * CM_KS + 4u * (t % 8u));
    cm_act4(st.x1, (e1 / 8u) * CM_KS + 4u * (e1 % 8u));
    // Weight k = 16 jj + 4 g + i sits at bits 8 i + 2 g (layout.rs); value code - 1.
    let base = (t / 2u) * CM_KS + 16u * (t % 2u);
    for (var g = 0u; g < 4u; g = g + 1u) {
        for (var i = 0u; i < 4u; i = i + 1u) {
            let code = (st.w >> (8u * i + 2u * g)) & 3u;
            cm_b[base + 4u * g + i] = f16(i32(code) - 1);
        }
    }
}

// Writes staged accumulator `slot` (row-major 16 x 16 in cm_c) for tile rows m, columns n.
fn cm_write(slot: u32, e: u32, m: u32, n: u32, s: f32) {
    if (m >= params.m || n >= params.n) {
        return;
    }
    let acc = i32(cm_c[slot * 256u + e]);
    let scale = bitlinear_scale(s, act_absmax[params.m_base + m]);
    bitlinear_write(m * params.out_stride + params.out_base + n, acc, scale);
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
    @builtin(subgroup_id) sg: u32,
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
    let sm = sg / 4u;
    let sn = sg % 4u;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();

    let steps = (params.words_per_row + 1u) / 2u;
    var st = cm_load(t, m0, n0, 0u);
    for (var s = 0u; s < steps; s = s + 1u) {
        cm_store(t, st);
        workgroupBarrier();
        if (s + 1u < steps) {
            st = cm_load(t, m0, n0, s + 1u);
        }
        for (var kk = 0u; kk < CM_KS; kk = kk + 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&cm_a[(32u * sm) * CM_KS + kk], CM_KS);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&cm_a[(32u * sm + 16u) * CM_KS + kk], CM_KS);
            let b0 = coopLoad<coop_mat16x16<f16, B>>(&cm_b[(32u * sn) * CM_KS + kk], CM_KS);
            let b1 = coopLoad<coop_mat16x16<f16, B>>(&cm_b[(32u * sn + 16u) * CM_KS + kk], CM_KS);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }

    // Epilogue: 2 halves (sm) x 4 accumulators; the storing subgroups of a half use slots sn.
    let sc = weight_scale[0];
    for (var h = 0u; h < 2u; h = h + 1u) {
        for (var q = 0u; q < 4u; q = q + 1u) {
            if (sm == h) {
                let slot = &cm_c[sn * 256u];
                if (q == 0u) {
                    coopStoreT(c00, slot, 16u);
                } else if (q == 1u) {
                    coopStoreT(c01, slot, 16u);
                } else if (q == 2u) {
                    coopStoreT(c10, slot, 16u);
                } else {
                    coopStoreT(c11, slot, 16u);
                }
            }
            workgroupBarrier();
            for (var r = 0u; r < 4u; r = r + 1u) {
                let idx = t + r * CM_THREADS;
                let slot = idx / 256u;
                let e = idx % 256u;
                let m = m0 + 32u * h + 16u * (q / 2u) + e / 16u;
                let n = n0 + 32u * slot + 16u * (q % 2u) + e % 16u;
                cm_write(slot, e, m, n, sc);
            }
            workgroupBarrier();
        }
    }
}
