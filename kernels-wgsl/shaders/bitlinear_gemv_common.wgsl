// Shared snippet of the BitLinear GEMV kernels (M <= GEMV_MAX_M): the accumulation loop.
//
// A workgroup owns GEMV_ROWS consecutive weight rows and all M activation rows. Thread t walks the
// weight words j = t, t + GEMV_WORKGROUP, ... of those rows (coalesced across threads), loads the
// four activation words of each of the M rows once and reuses them for every weight row, and keeps
// GEMV_ROWS x GEMV_MAX_M exact i32 partial sums, from which it subtracts its partial activation
// row sums (exact: integer sums distribute). The variant files reduce the partials across the
// workgroup (subgroupAdd or workgroup memory) and call bitlinear_store.
//
// Needs bitlinear_common.wgsl.

const GEMV_WORKGROUP: u32 = 128u;
const GEMV_ROWS: u32 = 4u;
const GEMV_MAX_M: u32 = 8u;
// GEMV_ROWS * GEMV_MAX_M partial sums per thread, index r * GEMV_MAX_M + m.
const GEMV_ACCS: u32 = 32u;

// The first weight row of this workgroup (the engine folds large grids into 2D).
fn gemv_first_row(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wid.x + wid.y * nwg.x) * GEMV_ROWS;
}

// Thread t's partial accumulators for rows n0 .. n0 + GEMV_ROWS and every m < M.
fn gemv_accumulate(n0: u32, t: u32) -> array<i32, GEMV_ACCS> {
    var acc: array<i32, GEMV_ACCS>;
    var row_sum: array<i32, GEMV_MAX_M>;
    let wpr = params.words_per_row;
    for (var j = t; j < wpr; j = j + GEMV_WORKGROUP) {
        var w: array<u32, GEMV_ROWS>;
        for (var r = 0u; r < GEMV_ROWS; r = r + 1u) {
            if (n0 + r < params.n) {
                w[r] = weights[(n0 + r) * wpr + j];
            }
        }
        for (var m = 0u; m < params.m; m = m + 1u) {
            let xb = m * 4u * wpr + 4u * j;
            let x0 = act[xb];
            let x1 = act[xb + 1u];
            let x2 = act[xb + 2u];
            let x3 = act[xb + 3u];
            row_sum[m] += bitlinear_sum_words(x0, x1, x2, x3);
            for (var r = 0u; r < GEMV_ROWS; r = r + 1u) {
                acc[r * GEMV_MAX_M + m] += bitlinear_dot_word(w[r], x0, x1, x2, x3);
            }
        }
    }
    for (var r = 0u; r < GEMV_ROWS; r = r + 1u) {
        for (var m = 0u; m < params.m; m = m + 1u) {
            acc[r * GEMV_MAX_M + m] -= row_sum[m];
        }
    }
    return acc;
}
