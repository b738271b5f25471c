// The matmul of few rows (M <= 4 per workgroup: a decode step's logits against an embedding):
// C[M,N] = A[M,K] · B with the tiled matmul's conventions (matmul_tiled.wgsl: the element-type
// file before this one, b_trans, chunking, status words, params), for outputs whose rows are too
// few for a 16-row tile, which computed 16 rows for each one it kept.
//
// Each workgroup of 256 invocations makes up to 4 rows of 256 columns: invocation t owns column
// col0 + t and keeps one sum per row. K is walked in steps of 8 through workgroup memory: the B
// tile (8 k x 256 columns, loaded along B's contiguous axis) and the A rows (4 x 8). Every output
// is summed as in the tiled matmul — k ascending, each product rounded, then added — so the same
// bits. Dispatch: grid (x, ceil(m/4), z) with x * z >= ceil(N/256) column tiles.

struct Params {
    m: u32,         // rows of this chunk
    n: u32,
    k: u32,
    b_trans: u32,   // 1 when B is stored [N,K], 0 when stored [K,N]
    row_base: u32,  // first row of this chunk in the full A and C
    a_shift: u32,   // row of A's binding holding chunk row 0
    c_shift: u32,   // row of C's binding holding chunk row 0
    zero: u32,      // always 0: the runtime zero of mm_pin
}

@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

const ROWS: u32 = 4u;    // rows per workgroup
const COLS: u32 = 256u;  // columns per workgroup (one per invocation)
const TK: u32 = 8u;      // depth of one k step

var<workgroup> b_tile: array<f32, 2048>; // TK * COLS, k-major
var<workgroup> a_tile: array<f32, 32>;   // ROWS * TK

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let row0 = wg.y * ROWS;
    // Column tiles are folded into grid x and z (wide N); tiles past N load zeros, store nothing.
    let col0 = (wg.x + wg.z * nwg.x) * COLS;
    let m = params.m;
    let n = params.n;
    let k = params.k;
    let b_trans = params.b_trans == 1u;

    var acc = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < k; k0 += TK) {
        // A rows: 4 x 8 values, by the first 32 invocations (k fastest: A's contiguous axis).
        if (t < ROWS * TK) {
            let mm = t / TK;
            let gm = row0 + mm;
            let gk = k0 + t % TK;
            var v = 0.0;
            if (gm < m && gk < k) {
                v = load_a((params.a_shift + gm) * k + gk);
                if (is_non_finite(v)) {
                    atomicMin(&nonfinite[0], (params.row_base + gm) * k + gk);
                }
            }
            a_tile[t] = v;
        }
        // B tile: 8 k x 256 columns; consecutive invocations walk B's contiguous axis.
        for (var r = 0u; r < TK; r++) {
            let e = t + r * COLS;
            let kk = select(e / COLS, e % TK, b_trans);
            let nn = select(e % COLS, e / TK, b_trans);
            let gk = k0 + kk;
            let gn = col0 + nn;
            var v = 0.0;
            if (gk < k && gn < n) {
                let idx = select(gk * n + gn, gn * k + gk, b_trans);
                v = load_b(idx);
                if (is_non_finite(v)) {
                    atomicMin(&nonfinite[1], idx);
                }
            }
            b_tile[kk * COLS + nn] = v;
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
            // Product rounded, then the sum (no fma), k ascending: the CPU reference's order,
            // pinned against contraction as in matmul_tiled.wgsl.
            acc = acc + mm_pin(av * bv);
        }
        workgroupBarrier();
    }

    let gn = col0 + t;
    if (gn >= n) {
        return;
    }
    for (var i = 0u; i < ROWS; i++) {
        let gm = row0 + i;
        if (gm < m) {
            let v = acc[i];
            if (c_non_finite(v)) {
                atomicMin(&nonfinite[2], (params.row_base + gm) * n + gn);
            }
            store_c((params.c_shift + gm) * n + gn, v);
        }
    }
}

// An optimization barrier for four floats (XOR with the runtime zero params.zero): each product
// is rounded where it is computed, as the CPU reference rounds it, before the sum.
fn mm_pin(v: vec4<f32>) -> vec4<f32> {
    return bitcast<vec4<f32>>(bitcast<vec4<u32>>(v) ^ vec4<u32>(params.zero));
}
