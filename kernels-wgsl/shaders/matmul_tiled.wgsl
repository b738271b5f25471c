// The tiled matmul shared by matmul_f32.wgsl and matmul_f16.wgsl: C[M,N] = A[M,K] · B, f32
// accumulation, with matmul_common.wgsl's params, loads, stores and status words. A tile file
// (matmul_tile_*.wgsl) declares RM and RN4, the register block.
//
// One kernel serves `matmul` (B stored row-major [K,N], b_trans = 0) and `matmul_bt` (B stored
// row-major [N,K] and used transposed, b_trans = 1); the flag only changes how the B tile is
// addressed and which axis consecutive invocations load (always B's contiguous one). A is row-major
// [M,K], C is row-major [M,N].
//
// Each 16x16 workgroup computes a TM x TN tile of C (TM = 16 RM rows, TN = 64 RN4 columns); every
// invocation keeps an RM x 4 RN4 register block (rows ly + 16 i, columns lx + 16 j: strided so
// workgroup-memory reads are conflict-free and global stores coalesce). K is walked in steps of 16
// through two workgroup-memory tiles; every fourth step ends a k chunk (MM_CHUNK), whose sums join
// the totals. Out-of-range rows, columns and k are loaded as zero, so any M, N, K >= 1 works.
//
// Dispatch: grid (x, ceil(m/TM), z) with x * z >= ceil(N/TN) column tiles.

const TM: u32 = 16u * RM;  // output tile rows
const TN: u32 = 64u * RN4; // output tile columns
const TK: u32 = 16u;       // depth of one k step
const WG: u32 = 16u;       // workgroup edge

// Tiles are stored k-major ([TK][TM], [TK][TN]) so the inner product loop reads contiguous rows.
var<workgroup> a_tile: array<f32, TK * TM>;
var<workgroup> b_tile: array<f32, TK * TN>;

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * TM;
    // Column tiles are folded into grid x and z (wide N); tiles past N load zeros, store nothing.
    let col0 = (wg.x + wg.z * nwg.x) * TN;

    // acc[i * RN4 + g]: row ly + 16 i, columns lx + 16 (4 g + c) for c < 4; the sum of the
    // current k chunk (MM_CHUNK, a multiple of TK), added to total at the chunk's end.
    var acc: array<vec4<f32>, RM * RN4>;
    var total: array<vec4<f32>, RM * RN4>;
    for (var i = 0u; i < RM * RN4; i++) {
        acc[i] = vec4<f32>(0.0);
        total[i] = vec4<f32>(0.0);
    }

    for (var k0 = 0u; k0 < params.k; k0 += TK) {
        // This invocation's share of the A tile (TM rows x 16 k; consecutive invocations walk
        // k, A's contiguous axis) and of the B tile (16 k x TN columns), all loads first.
        var a_vals: array<f32, RM>;
        var b_vals: array<f32, 4u * RN4>;
        for (var r = 0u; r < RM; r++) {
            let e = li + r * 256u;
            a_vals[r] = mm_a_at(row0 + e / TK, k0 + e % TK);
        }
        for (var r = 0u; r < 4u * RN4; r++) {
            let at = mm_b_tile_at(li + r * 256u, TK, TN);
            b_vals[r] = mm_b_at(k0 + at.x, col0 + at.y);
        }
        for (var r = 0u; r < RM; r++) {
            let e = li + r * 256u;
            let mm = e / TK;
            let kk = e % TK;
            mm_check_a(row0 + mm, k0 + kk, a_vals[r]);
            a_tile[kk * TM + mm] = a_vals[r];
        }
        for (var r = 0u; r < 4u * RN4; r++) {
            let at = mm_b_tile_at(li + r * 256u, TK, TN);
            mm_check_b(k0 + at.x, col0 + at.y, b_vals[r]);
            b_tile[at.x * TN + at.y] = b_vals[r];
        }
        workgroupBarrier();

        for (var kk = 0u; kk < TK; kk++) {
            for (var g = 0u; g < RN4; g++) {
                let base = kk * TN + lid.x + 64u * g;
                let bv = vec4<f32>(
                    b_tile[base],
                    b_tile[base + 16u],
                    b_tile[base + 32u],
                    b_tile[base + 48u],
                );
                for (var i = 0u; i < RM; i++) {
                    // Product rounded, then the sum (no fma), k ascending: the CPU reference's
                    // order (mm_pin4).
                    let av = vec4<f32>(a_tile[kk * TM + lid.y + i * WG]);
                    acc[i * RN4 + g] = acc[i * RN4 + g] + mm_pin4(av * bv);
                }
            }
        }
        // A chunk ends here (or k does): its sums join the totals, in chunk order.
        if ((k0 + TK) % MM_CHUNK == 0u || k0 + TK >= params.k) {
            for (var i = 0u; i < RM * RN4; i++) {
                total[i] = total[i] + acc[i];
                acc[i] = vec4<f32>(0.0);
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < RM; i++) {
        let gm = row0 + lid.y + i * WG;
        if (gm >= params.m) {
            continue;
        }
        for (var j = 0u; j < 4u * RN4; j++) {
            let gn = col0 + lid.x + (j / 4u) * 64u + (j % 4u) * WG;
            if (gn < params.n) {
                mm_store_c(gm, gn, total[i * RN4 + j / 4u][j % 4u]);
            }
        }
    }
}
