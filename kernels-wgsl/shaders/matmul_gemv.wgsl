// The matmul of few rows (M <= 4 per workgroup: a decode step's logits against an embedding):
// C[M,N] = A[M,K] · B with matmul_common.wgsl's params, loads, stores and status words, for
// outputs whose rows are too few for a 16-row tile (matmul_tiled.wgsl), which computed 16 rows for
// each one it kept.
//
// Each workgroup of 256 invocations makes up to 4 rows of 256 columns: invocation t owns column
// col0 + t and keeps one sum per row. K is walked in steps of 8 through workgroup memory: the B
// tile (8 k x 256 columns, loaded along B's contiguous axis) and the A rows (4 x 8). Every output
// is summed as in the tiled matmul — k ascending, each product rounded, then added — so the same
// bits. Dispatch: grid (x, ceil(m/4), z) with x * z >= ceil(N/256) column tiles.

const ROWS: u32 = 4u;    // rows per workgroup
const COLS: u32 = 256u;  // columns per workgroup (one per invocation)
const TK: u32 = 8u;      // depth of one k step

var<workgroup> b_tile: array<f32, TK * COLS>; // k-major
var<workgroup> a_tile: array<f32, ROWS * TK>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let row0 = wg.y * ROWS;
    // Column tiles are folded into grid x and z (wide N); tiles past N load zeros, store nothing.
    let col0 = (wg.x + wg.z * nwg.x) * COLS;

    var acc = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < params.k; k0 += TK) {
        // A rows (4 x TK values, by the first 4 TK invocations, k fastest: A's contiguous axis)
        // and this invocation's TK values of the B tile (TK k x 256 columns), all loads first.
        let a_row = row0 + t / TK;
        let a_k = k0 + t % TK;
        var a_val = 0.0;
        if (t < ROWS * TK) {
            a_val = mm_a_at(a_row, a_k);
        }
        var b_vals: array<f32, TK>;
        for (var r = 0u; r < TK; r++) {
            let at = mm_b_tile_at(t + r * COLS, TK, COLS);
            b_vals[r] = mm_b_at(k0 + at.x, col0 + at.y);
        }
        if (t < ROWS * TK) {
            mm_check_a(a_row, a_k, a_val);
            a_tile[t] = a_val;
        }
        for (var r = 0u; r < TK; r++) {
            let at = mm_b_tile_at(t + r * COLS, TK, COLS);
            mm_check_b(k0 + at.x, col0 + at.y, b_vals[r]);
            b_tile[at.x * COLS + at.y] = b_vals[r];
        }
        workgroupBarrier();

        for (var kk = 0u; kk < TK; kk++) {
            let bv = vec4<f32>(b_tile[kk * COLS + t]);
            let av = vec4<f32>(
                a_tile[kk],
                a_tile[TK + kk],
                a_tile[2u * TK + kk],
                a_tile[3u * TK + kk],
            );
            // Product rounded, then the sum (no fma), k ascending: the CPU reference's order
            // (mm_pin4).
            acc = acc + mm_pin4(av * bv);
        }
        workgroupBarrier();
    }

    let gn = col0 + t;
    if (gn >= params.n) {
        return;
    }
    for (var i = 0u; i < ROWS; i++) {
        let gm = row0 + i;
        if (gm < params.m) {
            mm_store_c(gm, gn, acc[i]);
        }
    }
}
