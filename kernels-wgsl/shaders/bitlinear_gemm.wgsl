// BitLinear GEMM (M > 8): register-blocked tiles of (16 TM) x (16 TN) outputs, 256 threads in a
// 16 x 16 grid, TM x TN outputs per thread (TM, TN in {4, 8}: override constants chosen per shape).
//
// Per K step (4 weight words = 64 k = 16 activation words per row) the workgroup stages, in
// workgroup memory, the activation words of its 16 TM rows and the *signed* weights of its 16 TN
// weight rows (bitlinear_signed_group: bytes -1 / 0 / +1, decoded once per step and shared by all
// activation rows, so no row-sum correction is needed). Both are stored k-major and vec4-wide
// along the tile rows: a thread's 4 consecutive rows (m or n) are one vec4 load, and per k word it
// does (TM / 4 + TN / 4) vec4 loads for TM * TN dot4I8Packed. The next step's global loads are
// issued before the current step's arithmetic (register prefetch).
//
// Thread (tx, ty) owns rows m = m0 + 64 i4 + 4 ty + ii and n = n0 + 64 j4 + 4 tx + jj
// (i4 < TM / 4, j4 < TN / 4, ii, jj < 4), so neighbouring threads read neighbouring vec4.
// Out-of-range weight rows and words are staged as zero weights; out-of-range activation rows
// read a clamped row and are never stored.
//
// Needs bitlinear_common.wgsl.

override TM: u32 = 8u;
override TN: u32 = 8u;
const GM_THREADS: u32 = 256u;
// Activation words per staged row and K step.
const GM_XW: u32 = 16u;
// Largest tile edge (16 * 8).
const GM_MAX_TILE: u32 = 128u;

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

// [GM_XW kk][tile m / 4]: activation word kk of rows 4 v .. 4 v + 3.
var<workgroup> gm_x: array<vec4<u32>, 512>;
// [GM_XW kk][tile n / 4]: signed weight word kk (weight word kk / 4, group kk % 4) of 4 rows.
var<workgroup> gm_w: array<vec4<u32>, 512>;

// One thread's share of a K step, loaded from memory (at most 2 activation vec4 and 2 words).
struct GmStage {
    x0: vec4<u32>,
    x1: vec4<u32>,
    w0: u32,
    w1: u32,
}

// Loads the thread's share of the step starting at weight word j0. Activation load e < 4 BM:
// row e / 4, vec4 e % 4 of the step; weight load e < 4 BN: row e / 4, word e % 4.
fn gm_load(t: u32, m0: u32, n0: u32, j0: u32) -> GmStage {
    let wpr = params.words_per_row;
    var s = GmStage();
    for (var i = 0u; i < TM / 4u; i = i + 1u) {
        let e = t + i * GM_THREADS;
        let m = min(m0 + e / 4u, params.m - 1u);
        let v = act[m * wpr + min(j0 + e % 4u, wpr - 1u)];
        if (i == 0u) {
            s.x0 = v;
        } else {
            s.x1 = v;
        }
    }
    for (var i = 0u; i < TN / 4u; i = i + 1u) {
        let e = t + i * GM_THREADS;
        let n = n0 + e / 4u;
        let j = j0 + e % 4u;
        // Out of range: all four groups decode to weight 0 (code 1 everywhere).
        var w = 0x55555555u;
        if (n < params.n && j < wpr) {
            w = weights[n * wpr + j];
        }
        if (i == 0u) {
            s.w0 = w;
        } else {
            s.w1 = w;
        }
    }
    return s;
}

// Writes a loaded step into workgroup memory (transposed to k-major; weights decoded).
fn gm_store(t: u32, s: GmStage) {
    let bm4 = 4u * TM;
    let bn4 = 4u * TN;
    for (var i = 0u; i < TM / 4u; i = i + 1u) {
        let e = t + i * GM_THREADS;
        let m = e / 4u;
        let kk = 4u * (e % 4u);
        let v = select(s.x1, s.x0, i == 0u);
        gm_x[kk * bm4 + m / 4u][m % 4u] = v.x;
        gm_x[(kk + 1u) * bm4 + m / 4u][m % 4u] = v.y;
        gm_x[(kk + 2u) * bm4 + m / 4u][m % 4u] = v.z;
        gm_x[(kk + 3u) * bm4 + m / 4u][m % 4u] = v.w;
    }
    for (var i = 0u; i < TN / 4u; i = i + 1u) {
        let e = t + i * GM_THREADS;
        let n = e / 4u;
        let kk = 4u * (e % 4u);
        let w = select(s.w1, s.w0, i == 0u);
        for (var g = 0u; g < 4u; g = g + 1u) {
            gm_w[(kk + g) * bn4 + n / 4u][n % 4u] = bitlinear_signed_group(w, g);
        }
    }
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // Linear grid (folded into 2D by the engine when large), unfolded into (tile_m, tile_n).
    let tile = wid.x + wid.y * nwg.x;
    let n0 = (tile % params.tiles_n) * 16u * TN;
    let m0 = (tile / params.tiles_n) * 16u * TM;
    if (m0 >= params.m) {
        // Uniform across the workgroup: a padding workgroup of the folded grid.
        return;
    }
    let tx = t % 16u;
    let ty = t / 16u;
    let bm4 = 4u * TM;
    let bn4 = 4u * TN;
    let wpr = params.words_per_row;
    // acc[i4 * 4 + ii][j4 * 4 + jj] as vec4 along jj: index (i4 * 4 + ii) * (TN / 4) + j4.
    var acc: array<vec4<i32>, 16>;

    var stage = gm_load(t, m0, n0, 0u);
    for (var j0 = 0u; j0 < wpr; j0 = j0 + 4u) {
        gm_store(t, stage);
        workgroupBarrier();
        if (j0 + 4u < wpr) {
            stage = gm_load(t, m0, n0, j0 + 4u);
        }
        for (var kk = 0u; kk < GM_XW; kk = kk + 1u) {
            var wv: array<vec4<u32>, 2>;
            for (var j4 = 0u; j4 < TN / 4u; j4 = j4 + 1u) {
                wv[j4] = gm_w[kk * bn4 + 16u * j4 + tx];
            }
            for (var i4 = 0u; i4 < TM / 4u; i4 = i4 + 1u) {
                let xv = gm_x[kk * bm4 + 16u * i4 + ty];
                for (var ii = 0u; ii < 4u; ii = ii + 1u) {
                    let xw = xv[ii];
                    for (var j4 = 0u; j4 < TN / 4u; j4 = j4 + 1u) {
                        let w = wv[j4];
                        let a = (i4 * 4u + ii) * (TN / 4u) + j4;
                        acc[a] += vec4<i32>(
                            dot4I8Packed(xw, w.x),
                            dot4I8Packed(xw, w.y),
                            dot4I8Packed(xw, w.z),
                            dot4I8Packed(xw, w.w),
                        );
                    }
                }
            }
        }
        workgroupBarrier();
    }

    let s = weight_scale[0];
    for (var i4 = 0u; i4 < TM / 4u; i4 = i4 + 1u) {
        for (var ii = 0u; ii < 4u; ii = ii + 1u) {
            let m = m0 + 64u * i4 + 4u * ty + ii;
            if (m >= params.m) {
                continue;
            }
            let scale = bitlinear_scale(s, act_absmax[params.m_base + m]);
            for (var j4 = 0u; j4 < TN / 4u; j4 = j4 + 1u) {
                let v = acc[(i4 * 4u + ii) * (TN / 4u) + j4];
                for (var jj = 0u; jj < 4u; jj = jj + 1u) {
                    let n = n0 + 64u * j4 + 4u * tx + jj;
                    if (n < params.n) {
                        bitlinear_write(m * params.out_stride + params.out_base + n, v[jj], scale);
                    }
                }
            }
        }
    }
}
