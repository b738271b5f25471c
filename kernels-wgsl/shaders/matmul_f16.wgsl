// Tiled f16 matmul (requires SHADER_F16): C[M,N] = A[M,K] · B with f16 inputs and output and f32
// accumulation. Identical in structure to matmul_f32.wgsl (see there for the tiling and the B
// layouts); values are widened to f32 when loaded into workgroup memory and rounded to f16 once, at
// the store.
//
// Non-finite inputs always make an output non-finite, and an f32 result whose magnitude rounds past
// f16's largest finite value (65504; anything >= 65520 rounds to inf) would become inf, so the kernel
// checks the f32 accumulator before rounding and raises the status flag in both cases.

enable f16;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    // 1 when B is stored [N,K] (k is B's fastest axis), 0 when stored [K,N].
    b_trans: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f16>;
@group(0) @binding(2) var<storage, read> b: array<f16>;
@group(0) @binding(3) var<storage, read_write> c: array<f16>;
@group(0) @binding(4) var<storage, read_write> status: atomic<u32>;

const TILE: u32 = 64u;   // output tile edge (rows and columns)
const TK: u32 = 16u;     // depth of one k step
const WG: u32 = 16u;     // workgroup edge; TILE / WG = 4 outputs per invocation per axis

// Tiles are stored k-major ([TK][TILE]) so the inner product loop reads contiguous rows.
var<workgroup> a_tile: array<f32, 1024>; // TK * TILE
var<workgroup> b_tile: array<f32, 1024>; // TK * TILE

fn flag_if_non_finite(x: f32) {
    // Exponent all ones means inf or NaN; tested on bits so no fast-math can fold it away.
    // Also flags finite values that would round to inf in f16.
    if ((bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u || abs(x) >= 65520.0) {
        atomicOr(&status, 1u);
    }
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;

    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        acc[i] = vec4<f32>(0.0);
    }

    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        // A tile: 64 rows x 16 k; consecutive invocations walk k (A's contiguous axis).
        for (var r = 0u; r < 4u; r++) {
            let e = li + r * 256u;
            let mm = e / TK;
            let kk = e % TK;
            let gm = row0 + mm;
            let gk = k0 + kk;
            var v = 0.0;
            if (gm < p.m && gk < p.k) {
                v = f32(a[gm * p.k + gk]);
            }
            a_tile[kk * TILE + mm] = v;
        }
        // B tile: 16 k x 64 columns; consecutive invocations walk B's contiguous axis.
        for (var r = 0u; r < 4u; r++) {
            let e = li + r * 256u;
            var kk: u32;
            var nn: u32;
            if (p.b_trans == 1u) {
                nn = e / TK;
                kk = e % TK;
            } else {
                kk = e / TILE;
                nn = e % TILE;
            }
            let gk = k0 + kk;
            let gn = col0 + nn;
            var v = 0.0;
            if (gk < p.k && gn < p.n) {
                if (p.b_trans == 1u) {
                    v = f32(b[gn * p.k + gk]);
                } else {
                    v = f32(b[gk * p.n + gn]);
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
                acc[i] = fma(vec4<f32>(a_tile[base + lid.y + i * WG]), bv, acc[i]);
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let gm = row0 + lid.y + i * WG;
        if (gm >= p.m) {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let gn = col0 + lid.x + j * WG;
            if (gn < p.n) {
                let v = acc[i][j];
                flag_if_non_finite(v);
                c[gm * p.n + gn] = f16(v);
            }
        }
    }
}
