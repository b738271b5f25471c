// BitLinear GEMM (M > GEMV_MAX_M): 32 x 32 output tiles, 64 threads, 4 x 4 outputs per thread
// (register blocking). Per K step the workgroup stages GEMM_KW weight words of its 32 weight rows
// and the matching 4 * GEMM_KW activation words of its 32 activation rows in workgroup memory;
// every staged activation word is then used for 4 weight rows and every weight group for 4
// activation rows. Out-of-range rows and words are staged as zero (zero activations contribute
// nothing, and out-of-range outputs are never written).
//
// Activation row sums are accumulated while staging: thread t always stages words of the same 8
// rows (t / 16 + 4 i), so it keeps 8 partial row sums, reduced once after the K loop.
//
// Needs bitlinear_common.wgsl.

const GEMM_TILE: u32 = 32u;
const GEMM_THREADS: u32 = 64u;
// Weight words per K step (64 weights).
const GEMM_KW: u32 = 4u;
// Activation words per staged row: 4 per weight word.
const GEMM_XW: u32 = 16u;
// Activation words each thread stages per K step: GEMM_TILE * GEMM_XW / GEMM_THREADS.
const GEMM_X_LOADS: u32 = 8u;
// Weight words each thread stages per K step: GEMM_TILE * GEMM_KW / GEMM_THREADS.
const GEMM_W_LOADS: u32 = 2u;

// [GEMM_TILE m][GEMM_XW] activation words.
var<workgroup> gemm_x: array<u32, 512>;
// [GEMM_TILE n][GEMM_KW] weight words.
var<workgroup> gemm_w: array<u32, 128>;
// [GEMM_TILE m][16] partial row sums, then their totals in gemm_row_sum.
var<workgroup> gemm_rs: array<i32, 512>;
var<workgroup> gemm_row_sum: array<i32, 32>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // Linear grid (folded into 2D by the engine when large), unfolded into (tile_m, tile_n).
    let tile = wid.x + wid.y * nwg.x;
    let n0 = (tile % params.tiles_n) * GEMM_TILE;
    let m0 = (tile / params.tiles_n) * GEMM_TILE;
    if (m0 >= params.m) {
        // Uniform across the workgroup: a padding workgroup of the folded grid.
        return;
    }
    // Thread (tx, ty) owns outputs m = m0 + ty + 8 i, n = n0 + tx + 8 jn, for i, jn < 4.
    let tx = t % 8u;
    let ty = t / 8u;
    let wpr = params.words_per_row;
    let xpr = 4u * wpr;
    var acc: array<i32, 16>;
    var rs: array<i32, GEMM_X_LOADS>;

    for (var j0 = 0u; j0 < wpr; j0 = j0 + GEMM_KW) {
        for (var i = 0u; i < GEMM_X_LOADS; i = i + 1u) {
            let l = t + i * GEMM_THREADS;
            let m = m0 + l / GEMM_XW;
            let xw = 4u * j0 + l % GEMM_XW;
            var v = 0u;
            if (m < params.m && xw < xpr) {
                v = act[m * xpr + xw];
            }
            rs[i] += dot4I8Packed(v, ONES);
            gemm_x[l] = v;
        }
        for (var i = 0u; i < GEMM_W_LOADS; i = i + 1u) {
            let l = t + i * GEMM_THREADS;
            let n = n0 + l / GEMM_KW;
            let j = j0 + l % GEMM_KW;
            var v = 0u;
            if (n < params.n && j < wpr) {
                v = weights[n * wpr + j];
            }
            gemm_w[l] = v;
        }
        workgroupBarrier();

        for (var kw = 0u; kw < GEMM_KW; kw = kw + 1u) {
            var w: array<u32, 4>;
            for (var jn = 0u; jn < 4u; jn = jn + 1u) {
                w[jn] = gemm_w[(tx + 8u * jn) * GEMM_KW + kw];
            }
            for (var g = 0u; g < 4u; g = g + 1u) {
                for (var i = 0u; i < 4u; i = i + 1u) {
                    let x = gemm_x[(ty + 8u * i) * GEMM_XW + 4u * kw + g];
                    for (var jn = 0u; jn < 4u; jn = jn + 1u) {
                        acc[i * 4u + jn] += dot4I8Packed(x, (w[jn] >> (2u * g)) & CODE_MASK);
                    }
                }
            }
        }
        workgroupBarrier();
    }

    // Row sums: thread t's partial i belongs to tile row t / 16 + 4 i (see the staging loop).
    for (var i = 0u; i < GEMM_X_LOADS; i = i + 1u) {
        gemm_rs[(t / 16u + 4u * i) * 16u + t % 16u] = rs[i];
    }
    workgroupBarrier();
    if (t < GEMM_TILE) {
        var total = 0i;
        for (var l = 0u; l < 16u; l = l + 1u) {
            total += gemm_rs[t * 16u + l];
        }
        gemm_row_sum[t] = total;
    }
    workgroupBarrier();

    for (var i = 0u; i < 4u; i = i + 1u) {
        let m = m0 + ty + 8u * i;
        let row_sum = gemm_row_sum[ty + 8u * i];
        for (var jn = 0u; jn < 4u; jn = jn + 1u) {
            let n = n0 + tx + 8u * jn;
            if (m < params.m && n < params.n) {
                bitlinear_store(m, n, acc[i * 4u + jn] - row_sum);
            }
        }
    }
}
