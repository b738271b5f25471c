// The matmul of few rows (M <= 4 per workgroup: a decode step's logits against an embedding):
// C[M,N] = A[M,K] · B with matmul_common.wgsl's params, loads, stores and status words, for
// outputs whose rows are too few for a tiled matmul (matmul_tiled.wgsl), which would compute 16
// rows for each one kept and walk all of k in each workgroup.
//
// Here one output's k chunks (MM_CHUNK each) are summed side by side: each workgroup of 256
// invocations makes up to 4 rows of COLS columns, and LANES invocations share each column, one
// chunk each. A round covers LANES chunks: every invocation sums its chunk for its column (the
// products of up to 4 rows, each rounded, then added, k ascending), leaves the sums in workgroup
// memory, and one invocation per column adds them to its totals in chunk order: cpu-ref's order,
// so the same bits as every other tile.
//
// Which invocations share a column follows B's layout, so that consecutive invocations read
// consecutive addresses: with B stored [N,K] a column's chunks are contiguous, so consecutive
// invocations take consecutive chunks of one column; with B stored [K,N] they take consecutive
// columns of one chunk.
//
// A value that is not finite is remembered (its least index) and reported once, after the loop:
// a status word's atomic inside the loop would keep each load waiting on the one before it.
//
// Dispatch: grid (x, ceil(m/4), z) with x * z >= ceil(N/COLS) column tiles.

const ROWS: u32 = 4u;             // rows per workgroup
const LANES: u32 = 16u;           // invocations per column: chunks per round
const COLS: u32 = 256u / LANES;   // columns per workgroup
const ROUND: u32 = LANES * MM_CHUNK;
const NONE: u32 = 0xffffffffu;

// The chunk sums of one round, [lane][column].
var<workgroup> chunk_sums: array<vec4<f32>, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let row0 = wg.y * ROWS;
    // Column tiles are folded into grid x and z (wide N); tiles past N load zeros, store nothing.
    let col0 = (wg.x + wg.z * nwg.x) * COLS;
    var lane = t / COLS;
    var col = t % COLS;
    if (params.b_trans == 1u) {
        lane = t % LANES;
        col = t / LANES;
    }
    let gn = col0 + col;
    // Every workgroup reads the same rows of A; those of the first column tile check them.
    let checks_a = col0 == 0u && col == 0u;

    var total = vec4<f32>(0.0); // kept by the invocations t < COLS, for column col0 + t
    var bad_a = NONE;
    var bad_b = NONE;
    for (var round = 0u; round < params.k; round += ROUND) {
        let k_begin = round + lane * MM_CHUNK;
        var sum = vec4<f32>(0.0);
        if (k_begin < params.k && gn < params.n) {
            // Four k at a time, all loads first; k past K loads zeros, whose products add nothing.
            for (var kk = 0u; kk < MM_CHUNK; kk += 4u) {
                let k = k_begin + kk;
                var bv: vec4<f32>;
                var av: array<vec4<f32>, 4>; // av[j]: the 4 rows at k + j
                for (var j = 0u; j < 4u; j++) {
                    bv[j] = mm_b_at(k + j, gn);
                    for (var i = 0u; i < ROWS; i++) {
                        av[j][i] = mm_a_at(row0 + i, k + j);
                    }
                }
                for (var j = 0u; j < 4u; j++) {
                    if (is_non_finite(bv[j])) {
                        bad_b = min(bad_b, k + j);
                    }
                    if (checks_a) {
                        for (var i = 0u; i < ROWS; i++) {
                            if (is_non_finite(av[j][i])) {
                                bad_a = min(bad_a, (params.row_base + row0 + i) * params.k + k + j);
                            }
                        }
                    }
                    // Product rounded, then the sum (no fma), k ascending (mm_pin4).
                    sum = sum + mm_pin4(av[j] * bv[j]);
                }
            }
        }
        chunk_sums[lane * COLS + col] = sum;
        workgroupBarrier();
        if (t < COLS) {
            for (var l = 0u; l < LANES && round + l * MM_CHUNK < params.k; l++) {
                total = total + chunk_sums[l * COLS + t];
            }
        }
        workgroupBarrier();
    }

    if (bad_a != NONE) {
        atomicMin(&nonfinite[0], bad_a);
    }
    if (bad_b != NONE) {
        atomicMin(&nonfinite[1], mm_b_index(bad_b, gn));
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
