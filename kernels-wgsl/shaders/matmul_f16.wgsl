// Tiled f16 matmul (requires SHADER_F16): C[M,N] = A[M,K] · B with f16 inputs and output and f32
// accumulation. Identical in structure to matmul_f32.wgsl (see there for the tiling, the B layouts,
// chunking and the dispatch grid); values are widened to f32 when loaded into workgroup memory and
// rounded to f16 once, at the store.
//
// Non-finite status words: 0 = a, 1 = b, 2 = output. An f32 result whose magnitude rounds past
// f16's largest finite value (65504; anything >= 65520 rounds to inf) is flagged as a non-finite
// output before it is rounded, since the rounding would produce inf.

enable f16;

struct Params {
    m: u32,         // rows of this chunk
    n: u32,
    k: u32,
    b_trans: u32,   // 1 when B is stored [N,K], 0 when stored [K,N]
    row_base: u32,  // first row of this chunk in the full A and C
    a_shift: u32,   // row of A's binding holding chunk row 0
    c_shift: u32,   // row of C's binding holding chunk row 0
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f16>;
@group(0) @binding(1) var<storage, read> b: array<f16>;
@group(0) @binding(2) var<storage, read_write> c: array<f16>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

const TILE: u32 = 64u;   // output tile edge (rows and columns)
const TK: u32 = 16u;     // depth of one k step
const WG: u32 = 16u;     // workgroup edge; TILE / WG = 4 outputs per invocation per axis

// Tiles are stored k-major ([TK][TILE]) so the inner product loop reads contiguous rows.
var<workgroup> a_tile: array<f32, 1024>; // TK * TILE
var<workgroup> b_tile: array<f32, 1024>; // TK * TILE

// Exponent bits all ones <=> NaN or Inf. Bit test, because `x != x` may be optimised away.
fn is_non_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u;
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    let m = params.m;
    let n = params.n;
    let k = params.k;
    let b_trans = params.b_trans == 1u;

    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        acc[i] = vec4<f32>(0.0);
    }

    for (var k0 = 0u; k0 < k; k0 += TK) {
        // A tile: 64 rows x 16 k; consecutive invocations walk k (A's contiguous axis).
        for (var r = 0u; r < 4u; r++) {
            let e = li + r * 256u;
            let mm = e / TK;
            let kk = e % TK;
            let gm = row0 + mm;
            let gk = k0 + kk;
            var v = 0.0;
            if (gm < m && gk < k) {
                v = f32(a[(params.a_shift + gm) * k + gk]);
                if (is_non_finite(v)) {
                    atomicMin(&nonfinite[0], (params.row_base + gm) * k + gk);
                }
            }
            a_tile[kk * TILE + mm] = v;
        }
        // B tile: 16 k x 64 columns; consecutive invocations walk B's contiguous axis.
        for (var r = 0u; r < 4u; r++) {
            let e = li + r * 256u;
            let kk = select(e / TILE, e % TK, b_trans);
            let nn = select(e % TILE, e / TK, b_trans);
            let gk = k0 + kk;
            let gn = col0 + nn;
            var v = 0.0;
            if (gk < k && gn < n) {
                let idx = select(gk * n + gn, gn * k + gk, b_trans);
                v = f32(b[idx]);
                if (is_non_finite(v)) {
                    atomicMin(&nonfinite[1], idx);
                }
            }
            b_tile[kk * TILE + nn] = v;
        }
        workgroupBarrier();

        for (var kk = 0u; kk < TK; kk++) {
            let base = kk * TILE;
            let bv = vec4<f32>(
                b_tile[base + lid.x],
                b_tile[base + lid.x + 16u],
                b_tile[base + lid.x + 32u],
                b_tile[base + lid.x + 48u],
            );
            for (var i = 0u; i < 4u; i++) {
                // Product rounded, then the sum (no fma), k ascending: the CPU reference's order.
                acc[i] = acc[i] + vec4<f32>(a_tile[base + lid.y + i * WG]) * bv;
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let gm = row0 + lid.y + i * WG;
        if (gm >= m) {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let gn = col0 + lid.x + j * WG;
            if (gn < n) {
                let v = acc[i][j];
                if (is_non_finite(v) || abs(v) >= 65520.0) {
                    atomicMin(&nonfinite[2], (params.row_base + gm) * n + gn);
                }
                c[(params.c_shift + gm) * n + gn] = f16(clamp(v, -65504.0, 65504.0));
            }
        }
    }
}
