// BitLinear GEMM (M > 8) on int8 cooperative matrices: i8 x i8 -> i32 16 x 16 x 32, exact in i32
// like the dot4 path, at twice the tensor-core rate of f16 and with half the staged bytes per k.
//
// WGSL has no 8-bit type, so this file is the skeleton of the kernel: it is written with f16
// A / B and f32 C matrices, and the engine (engine/src/spirv.rs) compiles it to SPIR-V with naga
// and retypes the three matrix types before it reaches the driver through passthrough:
// A `coop_mat16x16<f16, A>` -> 16 x 32 int8, B `coop_mat16x16<f16, B>` -> 32 x 16 int8,
// C `coop_mat16x16<f32, C>` -> 16 x 16 int32, and the multiply-adds become signed. Loads and
// stores go through vec4<f32> pointers into workgroup memory holding raw bytes (a
// cooperative-matrix load or store may use any scalar or vector pointer, strides count its
// elements; the bytes only pass through bitcasts, never float arithmetic), so nothing else in the
// module changes. Run unretyped (naga's f16 reading) it computes nonsense: the engine never does.
//
// Tiles of CI_BM (M) x CI_BN (N) = 128 x 32 CI_SGN outputs, CI_THREADS = 128 CI_SGN threads =
// 4 CI_SGN subgroups of 32 in a 4 (M) x CI_SGN (N) grid; each subgroup owns a 32 x 32 block as
// 2 x 2 accumulators, so per 32 k it loads 2 A and 2 B fragments for 4 matrix operations. The
// header file before this one sets CI_SGN: 4 (128 x 128 tiles, 512 threads) or 3 (128 x 96, 384
// threads: 2560 columns are 27 tiles instead of 20, so an M = 512 GEMM of that width has 108
// workgroups instead of 80 for a 132-SM GPU, each with three quarters of the work). Autotune
// picks per shape; on the H200 (M = 512) the two tie on 2560 x 2560 (39.8-40.1 µs) and 128-wide
// tiles win on the wider and deeper shapes (6912 x 2560: 73.4 against 102.6 µs).
//
// Per K step of CI_KS = 64 every thread copies one (CI_SGN = 3: some two) vec4 of activations
// (16 int8 of one tile row, as they are in memory) and expands one weight word (16 codes) to 16
// signed bytes: four consecutive threads cover one row's 64 bytes of each operand, and the step's
// work is even over the warps (the barrier waits for the slowest: a quarter of the threads
// expanding a weight row each was 13 % slower than this on 2560 x 2560, M = 512). Rows are
// stored k-contiguous in workgroup memory, [row][k] with a padded row stride of 80 bytes
// (CI_LDQ = 5 vec4: the 8 rows of one 8 x 16-byte fragment phase fall in 8 different bank
// quads). Operands are double-buffered (one
// barrier per step): step s loads the share of step s + 1 first, multiplies its own buffer, then
// stores the share into the other. (Two steps ahead, as in the f16 kernel, kept one more share in
// registers and was 4 % slower on the H200: 2560 x 2560 48.5 against 46.7 µs.)
//
// Edges: out-of-range weight rows and words are zero weights (code 1); out-of-range activation
// rows and words read a clamped in-range word (multiplied by zero weights or never stored).
//
// Epilogue: the operand buffers are free after the K loop, so every subgroup stores two of its
// accumulators at once, row-major, into its own 2 KiB of them (i32 bits), and each lane writes 16
// elements through bitlinear_write; twice. Four barriers in all (a quarter of the subgroups at a
// time through a 4 KiB slot took 32).
//
// Workgroup memory: 2 x 2 x 10 KiB operands + 512 B row scales = 40.5 KiB
// (GEMM_COOP_I8_WORKGROUP_BYTES).
//
// Needs a header that enables f16 and wgpu_cooperative_matrix and sets CI_SGN
// (bitlinear_gemm_coop_i8_subgroup.wgsl, bitlinear_gemm_coop_i8_n96_subgroup.wgsl), and
// bitlinear_common.wgsl.

// Tile edges and K step (int8 k per step = 4 weight words).
const CI_BM: u32 = 128u;
const CI_BN: u32 = 32u * CI_SGN;
const CI_KS: u32 = 64u;
// Threads per workgroup (GEMM_COOP_THREADS / GEMM_COOP_I8_N96_THREADS in kernels-wgsl).
const CI_THREADS: u32 = 128u * CI_SGN;
// Row stride of the staged operands in vec4<u32> (16-byte) units: 64 bytes plus 16 of padding.
const CI_LDQ: u32 = 5u;
// vec4<u32> per staged operand buffer (up to 128 rows).
const CI_BUF: u32 = 640u;

// Staged operands as raw bytes: two buffers of [CI_BM m][CI_LDQ] signed activation bytes (at 0),
// two of [CI_BN n][CI_LDQ] signed weight bytes (at CI_B); the epilogue's slots afterwards.
var<workgroup> ci_ops: array<vec4<f32>, 2560>;
// Where the weight buffers start in ci_ops.
const CI_B: u32 = 1280u;
// vec4 per subgroup slot of the epilogue: two row-major 16 x 16 i32 blocks.
const CI_SLOT: u32 = 128u;
// The absmax a_m of each tile row, loaded before the K loop.
var<workgroup> ci_rows: array<f32, 128>;

// Activation vec4 per K step: 128 tile rows of 4 (64 bytes each).
const CI_A_UNITS: u32 = 512u;

// A thread's share of a K step, spread evenly (the step waits for its slowest warp): activation
// vec4 t (tile row t / 4, unit t % 4) and, where CI_THREADS < 512, also vec4 t + CI_THREADS
// (t < 512 - CI_THREADS); and weight word t % 4 of tile row t / 4 (4 CI_BN = CI_THREADS words).
struct CiStage {
    x0: vec4<u32>,
    x1: vec4<u32>,
    w: u32,
}

// Activation vec4 `i` of step s: tile row i / 4, clamped to the last row and word (finite, and
// multiplied by zero weights or never stored).
fn ci_act(i: u32, m0: u32, s: u32) -> vec4<u32> {
    let wpr = params.words_per_row;
    let row = min(m0 + i / 4u, params.m - 1u);
    return act[row * wpr + min(4u * s + i % 4u, wpr - 1u)];
}

fn ci_load(t: u32, m0: u32, n0: u32, s: u32) -> CiStage {
    let wpr = params.words_per_row;
    var st: CiStage;
    st.x0 = ci_act(t, m0, s);
    if (t + CI_THREADS < CI_A_UNITS) {
        st.x1 = ci_act(t + CI_THREADS, m0, s);
    }
    // Zero weights (code 1) past the last row or word.
    st.w = 0x55555555u;
    let n = n0 + t / 4u;
    let j = 4u * s + t % 4u;
    if (n < params.n && j < wpr) {
        st.w = weights[n * wpr + j];
    }
    return st;
}

// The 16 signed weight bytes of one packed word in k order: byte i of group g is weight
// 4 g + i (bits 8 i + 2 g, layout.rs), through bitlinear_signed_group.
fn ci_wgt16(w: u32) -> vec4<u32> {
    return vec4<u32>(
        bitlinear_signed_group(w, 0u),
        bitlinear_signed_group(w, 1u),
        bitlinear_signed_group(w, 2u),
        bitlinear_signed_group(w, 3u),
    );
}

// Stores a staged share into buffer `buf` (unit i of a row at row * CI_LDQ + i).
fn ci_store(t: u32, st: CiStage, buf: u32) {
    let unit = (t / 4u) * CI_LDQ + t % 4u;
    ci_ops[buf * CI_BUF + unit] = bitcast<vec4<f32>>(st.x0);
    if (t + CI_THREADS < CI_A_UNITS) {
        let u = t + CI_THREADS;
        ci_ops[buf * CI_BUF + (u / 4u) * CI_LDQ + u % 4u] = bitcast<vec4<f32>>(st.x1);
    }
    ci_ops[CI_B + buf * CI_BUF + unit] = bitcast<vec4<f32>>(ci_wgt16(st.w));
}

// Every subgroup stores accumulators `c0` (columns n ..) and `c1` (columns n + 16 ..) of rows
// m .. m + 16 (the tile's first row is m0) into its slot, then each lane writes 16 of their
// elements; barriers before (the slot may still be read) and after the stores.
fn ci_epilogue(
    c0: coop_mat16x16<f32, C>,
    c1: coop_mat16x16<f32, C>,
    sg: u32,
    lane: u32,
    m0: u32,
    m: u32,
    n: u32,
    s: f32,
) {
    let slot = sg * CI_SLOT;
    workgroupBarrier();
    coopStoreT(c0, &ci_ops[slot], 4u);
    coopStoreT(c1, &ci_ops[slot + 64u], 4u);
    workgroupBarrier();
    for (var r = 0u; r < 16u; r = r + 1u) {
        // Element e of the 16 x 32 pair: block e / 256, then row-major 16 x 16.
        let e = lane + 32u * r;
        let i = e % 256u;
        let row = m + i / 16u;
        let col = n + 16u * (e / 256u) + i % 16u;
        if (row < params.m && col < params.n) {
            let acc = bitcast<i32>(ci_ops[slot + e / 4u][e % 4u]);
            let scale = bitlinear_scale(s, ci_rows[row - m0]);
            bitlinear_write(row * params.out_stride + params.out_base + col, acc, scale);
        }
    }
}

@compute @workgroup_size(CI_THREADS)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    // Linear grid (folded into 2D by the engine when large), unfolded into (tile_m, tile_n).
    let tile = wid.x + wid.y * nwg.x;
    let n0 = (tile % params.tiles_n) * CI_BN;
    let m0 = (tile / params.tiles_n) * CI_BM;
    if (m0 >= params.m) {
        // Uniform across the workgroup: a padding workgroup of the folded grid.
        return;
    }
    // Subgroup sg owns tile rows 32 (sg / CI_SGN) .. + 32 and columns 32 (sg % CI_SGN) .. + 32.
    let am = 32u * (sg / CI_SGN) * CI_LDQ;
    let bn = 32u * (sg % CI_SGN) * CI_LDQ;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();

    // This workgroup's K slice (all of K unless the GEMM is split): steps s0 .. s0 + steps.
    let slice = bitlinear_k_slice(wid.z, 4u);
    let s0 = slice.x;
    let steps = slice.y;
    if (t < CI_BM) {
        ci_rows[t] = act_absmax[params.m_base + min(m0 + t, params.m - 1u)];
    }
    ci_store(t, ci_load(t, m0, n0, s0), 0u);
    workgroupBarrier();
    for (var s = 0u; s < steps; s = s + 1u) {
        let buf = s % 2u;
        var next = CiStage();
        if (s + 1u < steps) {
            next = ci_load(t, m0, n0, s0 + s + 1u);
        }
        let a_buf = buf * CI_BUF + am;
        let b_buf = CI_B + buf * CI_BUF + bn;
        // Two 32-k halves of the step: 2 vec4<u32> units each.
        for (var kq = 0u; kq < 4u; kq = kq + 2u) {
            // A row-major [m][k] (coopLoadT), B column-major: element (k, n) at n * CI_LDQ + k.
            let b0 = coopLoad<coop_mat16x16<f16, B>>(&ci_ops[b_buf + kq], CI_LDQ);
            let b1 = coopLoad<coop_mat16x16<f16, B>>(&ci_ops[b_buf + 16u * CI_LDQ + kq], CI_LDQ);
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&ci_ops[a_buf + kq], CI_LDQ);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&ci_ops[a_buf + 16u * CI_LDQ + kq], CI_LDQ);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        // Buffer 1 - buf was last read in step s - 1, before the barrier that ended it.
        if (s + 1u < steps) {
            ci_store(t, next, 1u - buf);
        }
        workgroupBarrier();
    }

    // Epilogue: the upper accumulator pair of every subgroup, then the lower one.
    let sc = weight_scale[0];
    let m = m0 + 32u * (sg / CI_SGN);
    let n = n0 + 32u * (sg % CI_SGN);
    ci_epilogue(c00, c01, sg, lane, m0, m, n, sc);
    ci_epilogue(c10, c11, sg, lane, m0, m + 16u, n, sc);
}
