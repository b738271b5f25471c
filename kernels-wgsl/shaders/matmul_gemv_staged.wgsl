// The few-row matmul staging B and A through workgroup memory (matmul_gemv_common.wgsl says what
// it computes and how it sums): for B stored [N,K]. A round walks its chunks in steps of STEP k:
// the workgroup loads the step's B values (COLS columns x LANES chunks x STEP k) and A values
// (4 rows x LANES chunks x STEP k) along each matrix's contiguous axis, so a subgroup's loads
// cover whole memory sectors, then each invocation sums its own STEP values. Read straight from
// memory (matmul_gemv_direct.wgsl), the 16 invocations sharing a column of a B stored [N,K] each
// read a different chunk, 256 bytes apart: on an H100 that capped the kernel near 0.6 TB/s. It
// stages a B stored [K,N] too, but reading that one directly was faster
// (docs/perf/float-matmul.md).

// STEP (k per chunk and step) comes with LANES from the header file.
const SLOT: u32 = STEP + 1u;      // a slot's stride in words: odd, so slots fall in distinct banks
const A_VALUES: u32 = ROWS * LANES * STEP; // A values of one step
const A_PER: u32 = (A_VALUES + 255u) / 256u; // A loads per invocation and step

// One step's B values: slot s (the invocation that sums them) holds STEP k of its chunk.
var<workgroup> b_stage: array<f32, 256u * SLOT>;
// One step's A values, [row][lane] slots of STEP k.
var<workgroup> a_stage: array<f32, ROWS * LANES * SLOT>;

// Element e of a step's B tile as (slot, k within the step): consecutive elements are
// consecutive addresses of B (k with B stored [N,K], columns with B stored [K,N]).
fn b_stage_element(e: u32) -> vec2<u32> {
    if (params.b_trans == 1u) {
        return vec2<u32>(e / STEP, e % STEP);
    }
    let lane = e / (COLS * STEP);
    return vec2<u32>(lane * COLS + e % COLS, (e / COLS) % STEP);
}

// The sum of invocation t's chunk in the round from k `round`. Called by the whole workgroup.
fn chunk_staged(
    t: u32,
    row0: u32,
    col0: u32,
    round: u32,
    checks_a: bool,
    bad_a: ptr<function, u32>,
    bad_b: ptr<function, u32>,
) -> vec4<f32> {
    let lane = slot_column_lane(t).y;
    var sum = vec4<f32>(0.0);
    for (var step = 0u; step < MM_CHUNK; step += STEP) {
        // All loads first; k past K and columns past N load zeros, whose products add nothing.
        var b_vals: array<f32, STEP>;
        for (var r = 0u; r < STEP; r++) {
            let at = b_stage_element(t + r * 256u);
            let cl = slot_column_lane(at.x);
            b_vals[r] = mm_b_at(round + cl.y * MM_CHUNK + step + at.y, col0 + cl.x);
        }
        // A: ROWS x LANES x STEP values, k fastest.
        var a_vals: array<f32, A_PER>;
        for (var r = 0u; r < A_PER; r++) {
            let e = t + r * 256u;
            let ak = round + ((e / STEP) % LANES) * MM_CHUNK + step + e % STEP;
            if (e < A_VALUES) {
                a_vals[r] = mm_a_at(row0 + e / (LANES * STEP), ak);
            }
        }
        for (var r = 0u; r < STEP; r++) {
            let at = b_stage_element(t + r * 256u);
            if (is_non_finite(b_vals[r])) {
                let cl = slot_column_lane(at.x);
                let bk = round + cl.y * MM_CHUNK + step + at.y;
                *bad_b = min(*bad_b, mm_b_index(bk, col0 + cl.x));
            }
            b_stage[at.x * SLOT + at.y] = b_vals[r];
        }
        for (var r = 0u; r < A_PER; r++) {
            let e = t + r * 256u;
            if (e >= A_VALUES) {
                break;
            }
            let row = e / (LANES * STEP);
            let ak = round + ((e / STEP) % LANES) * MM_CHUNK + step + e % STEP;
            if (checks_a && is_non_finite(a_vals[r])) {
                *bad_a = min(*bad_a, (params.row_base + row0 + row) * params.k + ak);
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
    return sum;
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let origin = gemv_origin(wg, nwg);
    let row0 = origin.x;
    let col0 = origin.y;
    let own = slot_column_lane(t);
    let checks_a = col0 == 0u;

    var total = vec4<f32>(0.0);
    var bad_a = NONE;
    var bad_b = NONE;
    for (var round = 0u; round < params.k; round += ROUND) {
        let sum = chunk_staged(t, row0, col0, round, checks_a, &bad_a, &bad_b);
        gemv_fold(t, own.x, own.y, round, sum, &total);
    }
    gemv_finish(t, row0, col0, total, bad_a, bad_b);
}
