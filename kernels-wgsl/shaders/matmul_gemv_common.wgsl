// What the few-row matmul kernels share (matmul_gemv_direct.wgsl, matmul_gemv_staged.wgsl): the
// matmul of few rows (M <= 4 per workgroup: a decode step's logits against an embedding),
// C[M,N] = A[M,K] · B with matmul_common.wgsl's params, loads, stores and status words, for
// outputs whose rows are too few for a tiled matmul (matmul_tiled.wgsl), which would compute 16
// rows for each one kept and walk all of k in each workgroup.
//
// One output's k chunks (MM_CHUNK each) may be summed side by side: each workgroup of 256
// invocations makes up to 4 rows of COLS columns, and LANES invocations (from a header file:
// matmul_gemv_lanes_16.wgsl or matmul_gemv_wide_*.wgsl) share each column, one chunk each. A
// round covers LANES chunks: every invocation sums its chunk for its column (the products of up
// to 4 rows, each rounded, then added, k ascending), leaves the sums in workgroup memory, and one
// invocation per column adds them to its totals in chunk order: cpu-ref's order, so the same bits
// as every other tile. With one lane, each invocation adds its own chunk sums.
//
// A value that is not finite is remembered (its least flat index) and reported once, after the
// loop: a status word's atomic inside the loop would keep each load waiting on the one before it.
// Only the first column tile checks A (every workgroup loads the same rows).
//
// Dispatch: grid (x, ceil(m/4), z) with x * z >= ceil(N/COLS) column tiles.

const ROWS: u32 = 4u;             // rows per workgroup
const COLS: u32 = 256u / LANES;   // columns per workgroup
const ROUND: u32 = LANES * MM_CHUNK;
const NONE: u32 = 0xffffffffu;

// The chunk sums of one round, [lane][column].
var<workgroup> chunk_sums: array<vec4<f32>, 256>;

// The first row and column of workgroup wg's outputs. Column tiles are folded into grid x and z
// (wide N); tiles past N load zeros and store nothing.
fn gemv_origin(wg: vec3<u32>, nwg: vec3<u32>) -> vec2<u32> {
    return vec2<u32>(wg.y * ROWS, (wg.x + wg.z * nwg.x) * COLS);
}

// The (column, lane) of invocation (or staging slot) s. Which invocations share a column follows
// B's layout, so that loads walk B's contiguous axis: with B stored [N,K] a column's chunks are
// neighbours; with B stored [K,N] a chunk's columns are.
fn slot_column_lane(s: u32) -> vec2<u32> {
    if (params.b_trans == 1u) {
        return vec2<u32>(s / LANES, s % LANES);
    }
    return vec2<u32>(s % COLS, s / COLS);
}

// Adds the round's chunk sums (sum: invocation t's, for column col of the tile) to the totals
// of the invocations t < COLS, in chunk order. Called by the whole workgroup.
fn gemv_fold(t: u32, col: u32, lane: u32, round: u32, sum: vec4<f32>, total: ptr<function, vec4<f32>>) {
    if (LANES == 1u) {
        *total = *total + sum;
        return;
    }
    chunk_sums[lane * COLS + col] = sum;
    workgroupBarrier();
    if (t < COLS) {
        for (var l = 0u; l < LANES && round + l * MM_CHUNK < params.k; l++) {
            *total = *total + chunk_sums[l * COLS + t];
        }
    }
    workgroupBarrier();
}

// Reports the least non-finite A and B indices seen, and stores the totals of invocation t
// (t < COLS) as column col0 + t of rows row0.. .
fn gemv_finish(t: u32, row0: u32, col0: u32, total: vec4<f32>, bad_a: u32, bad_b: u32) {
    if (bad_a != NONE) {
        atomicMin(&nonfinite[0], bad_a);
    }
    if (bad_b != NONE) {
        atomicMin(&nonfinite[1], bad_b);
    }
    let out_col = col0 + t;
    if (t >= COLS || out_col >= params.n) {
        return;
    }
    for (var i = 0u; i < ROWS; i++) {
        let gm = row0 + i;
        if (gm < params.m) {
            mm_store_c(gm, out_col, total[i]);
        }
    }
}
