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
// A round walks its chunks in steps of STEP k, staged through workgroup memory: the workgroup
// loads the step's B values (COLS columns x LANES chunks x STEP k) and A values (4 rows x LANES
// chunks x STEP k) along each matrix's contiguous axis, so a subgroup's loads cover whole memory
// sectors, then each invocation sums its own STEP values. Read straight from memory, the
// invocations sharing a column of a B stored [N,K] each read a different chunk, 256 bytes apart:
// on an H100 that capped the kernel near 0.6 TB/s (the logits against a [128256, 2560]
// embedding took 2.5x the time of a kernel staging 8 k per column).
//
// A value that is not finite is remembered (its least flat index) and reported once, after the
// loop: a status word's atomic inside the loop would keep each load waiting on the one before it.
// Only the first column tile checks A (every workgroup loads the same rows).
//
// Dispatch: grid (x, ceil(m/4), z) with x * z >= ceil(N/COLS) column tiles.

const ROWS: u32 = 4u;             // rows per workgroup
const LANES: u32 = 16u;           // invocations per column: chunks per round
const COLS: u32 = 256u / LANES;   // columns per workgroup
const ROUND: u32 = LANES * MM_CHUNK;
const STEP: u32 = 8u;             // k per chunk and step
const SLOT: u32 = STEP + 1u;      // a slot's stride in words: odd, so slots fall in distinct banks
const NONE: u32 = 0xffffffffu;

// One step's B values: slot s (the invocation that sums them) holds STEP k of its chunk.
var<workgroup> b_stage: array<f32, 256u * SLOT>;
// One step's A values, [row][lane] slots of STEP k.
var<workgroup> a_stage: array<f32, ROWS * LANES * SLOT>;
// The chunk sums of one round, [lane][column].
var<workgroup> chunk_sums: array<vec4<f32>, 256>;

// The (column, lane) of slot s. Which invocations share a column follows B's layout, so that the
// loads below walk B's contiguous axis: with B stored [N,K] a column's chunks are neighbours;
// with B stored [K,N] a chunk's columns are.
fn slot_column_lane(s: u32) -> vec2<u32> {
    if (params.b_trans == 1u) {
        return vec2<u32>(s / LANES, s % LANES);
    }
    return vec2<u32>(s % COLS, s / COLS);
}

// Element e of a step's B tile as (slot, k within the step): consecutive elements are
// consecutive addresses of B (k with B stored [N,K], columns with B stored [K,N]).
fn b_stage_element(e: u32) -> vec2<u32> {
    if (params.b_trans == 1u) {
        return vec2<u32>(e / STEP, e % STEP);
    }
    let lane = e / (COLS * STEP);
    return vec2<u32>(lane * COLS + e % COLS, (e / COLS) % STEP);
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let row0 = wg.y * ROWS;
    // Column tiles are folded into grid x and z (wide N); tiles past N load zeros, store nothing.
    let col0 = (wg.x + wg.z * nwg.x) * COLS;
    let own = slot_column_lane(t);
    let lane = own.y;
    let checks_a = col0 == 0u;

    var total = vec4<f32>(0.0); // kept by the invocations t < COLS, for column col0 + t
    var bad_a = NONE;
    var bad_b = NONE;
    for (var round = 0u; round < params.k; round += ROUND) {
        var sum = vec4<f32>(0.0);
        for (var step = 0u; step < MM_CHUNK; step += STEP) {
            // All loads first; k past K and columns past N load zeros, whose products add nothing.
            var b_vals: array<f32, STEP>;
            var b_ks: array<u32, STEP>;
            var b_cols: array<u32, STEP>;
            for (var r = 0u; r < STEP; r++) {
                let at = b_stage_element(t + r * 256u);
                let cl = slot_column_lane(at.x);
                b_cols[r] = col0 + cl.x;
                b_ks[r] = round + cl.y * MM_CHUNK + step + at.y;
                b_vals[r] = mm_b_at(b_ks[r], b_cols[r]);
            }
            // A: ROWS x LANES x STEP values, two per invocation, k fastest.
            var a_vals: array<f32, 2>;
            for (var r = 0u; r < 2u; r++) {
                let e = t + r * 256u;
                let ak = round + ((e / STEP) % LANES) * MM_CHUNK + step + e % STEP;
                a_vals[r] = mm_a_at(row0 + e / (LANES * STEP), ak);
            }
            for (var r = 0u; r < STEP; r++) {
                if (is_non_finite(b_vals[r])) {
                    bad_b = min(bad_b, mm_b_index(b_ks[r], b_cols[r]));
                }
                let at = b_stage_element(t + r * 256u);
                b_stage[at.x * SLOT + at.y] = b_vals[r];
            }
            for (var r = 0u; r < 2u; r++) {
                let e = t + r * 256u;
                let row = e / (LANES * STEP);
                let ak = round + ((e / STEP) % LANES) * MM_CHUNK + step + e % STEP;
                if (checks_a && is_non_finite(a_vals[r])) {
                    bad_a = min(bad_a, (params.row_base + row0 + row) * params.k + ak);
                }
                a_stage[(e / STEP) * SLOT + e % STEP] = a_vals[r];
            }
            workgroupBarrier();
            for (var kk = 0u; kk < STEP; kk++) {
                let bv = vec4<f32>(b_stage[t * SLOT + kk]);
                var av: vec4<f32>;
                for (var i = 0u; i < ROWS; i++) {
                    av[i] = a_stage[(i * LANES + lane) * SLOT + kk];
                }
                // Product rounded, then the sum (no fma), k ascending (mm_pin4).
                sum = sum + mm_pin4(av * bv);
            }
            workgroupBarrier();
        }
        chunk_sums[lane * COLS + own.x] = sum;
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
