// The tiled matmul shared by matmul_f32.wgsl and matmul_f16.wgsl: C[M,N] = A[M,K] · B, f32
// accumulation. The element-type file (concatenated before this one) declares the bindings a, b, c
// and the accessors load_a(i) -> f32, load_b(i) -> f32, store_c(i, v) and c_non_finite(v) (whether
// the f32 result v is flagged as a non-finite output); a tile file (matmul_tile_*.wgsl, also
// before this one) declares RM and RN4, the register block.
//
// One kernel serves `matmul` (B stored row-major [K,N], b_trans = 0) and `matmul_bt` (B stored
// row-major [N,K] and used transposed, b_trans = 1); the flag only changes how the B tile is
// addressed and which axis consecutive invocations load (always B's contiguous one). A is row-major
// [M,K], C is row-major [M,N].
//
// Each 16x16 workgroup computes a TM x TN tile of C (TM = 16 RM rows, TN = 64 RN4 columns); every
// invocation keeps an RM x 4 RN4 register block (rows ly + 16 i, columns lx + 16 j: strided so
// workgroup-memory reads are conflict-free and global stores coalesce). K is walked in steps of 16
// through two workgroup-memory tiles. Out-of-range rows, columns and k are loaded as zero, so any
// M, N, K >= 1 works. Every tile size sums each output in the same order (k ascending, each
// product rounded, then added): the tile only decides how many outputs a workgroup makes.
//
// Chunking: a launch computes rows row_base .. row_base + m of C. A and C are each bound whole or
// from the chunk's first row; a_shift / c_shift (0 when bound from the chunk, row_base when bound
// whole) turn a chunk row into a row of the binding. B is always bound whole. Indices reported for
// non-finite values are flat indices in the full tensors.
//
// Non-finite status words: 0 = a, 1 = b (checked as tiles are loaded), 2 = output (overflow of
// finite inputs). Dispatch: grid (x, ceil(m/TM), z) with x * z >= ceil(N/TN) column tiles.

struct Params {
    m: u32,         // rows of this chunk
    n: u32,
    k: u32,
    b_trans: u32,   // 1 when B is stored [N,K], 0 when stored [K,N]
    row_base: u32,  // first row of this chunk in the full A and C
    a_shift: u32,   // row of A's binding holding chunk row 0
    c_shift: u32,   // row of C's binding holding chunk row 0
    zero: u32,      // always 0: the runtime zero of mm_pin4
}

@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

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
    let m = params.m;
    let n = params.n;
    let k = params.k;
    let b_trans = params.b_trans == 1u;

    // acc[i * RN4 + g]: row ly + 16 i, columns lx + 16 (4 g + c) for c < 4.
    var acc: array<vec4<f32>, RM * RN4>;
    for (var i = 0u; i < RM * RN4; i++) {
        acc[i] = vec4<f32>(0.0);
    }

    for (var k0 = 0u; k0 < k; k0 += TK) {
        // A tile: TM rows x 16 k; consecutive invocations walk k (A's contiguous axis).
        for (var r = 0u; r < RM; r++) {
            let e = li + r * 256u;
            let mm = e / TK;
            let kk = e % TK;
            let gm = row0 + mm;
            let gk = k0 + kk;
            var v = 0.0;
            if (gm < m && gk < k) {
                v = load_a((params.a_shift + gm) * k + gk);
                if (is_non_finite(v)) {
                    atomicMin(&nonfinite[0], (params.row_base + gm) * k + gk);
                }
            }
            a_tile[kk * TM + mm] = v;
        }
        // B tile: 16 k x TN columns; consecutive invocations walk B's contiguous axis.
        for (var r = 0u; r < 4u * RN4; r++) {
            let e = li + r * 256u;
            let kk = select(e / TN, e % TK, b_trans);
            let nn = select(e % TN, e / TK, b_trans);
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
            b_tile[kk * TN + nn] = v;
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
                    // order. Pinned: Vulkan lets a driver contract a * b + c into an fma, and
                    // NVIDIA's did exactly that to the same pattern in the RMSNorm kernels
                    // (norm_rms_common.wgsl).
                    let av = vec4<f32>(a_tile[kk * TM + lid.y + i * WG]);
                    acc[i * RN4 + g] = acc[i * RN4 + g] + mm_pin4(av * bv);
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < RM; i++) {
        let gm = row0 + lid.y + i * WG;
        if (gm >= m) {
            continue;
        }
        for (var j = 0u; j < 4u * RN4; j++) {
            let gn = col0 + lid.x + (j / 4u) * 64u + (j % 4u) * WG;
            if (gn < n) {
                let v = acc[i * RN4 + j / 4u][j % 4u];
                if (c_non_finite(v)) {
                    atomicMin(&nonfinite[2], (params.row_base + gm) * n + gn);
                }
                store_c((params.c_shift + gm) * n + gn, v);
            }
        }
    }
}

// An optimization barrier for four floats (XOR with the runtime zero params.zero): each product
// is rounded where it is computed, as the CPU reference rounds it, before the sum.
fn mm_pin4(v: vec4<f32>) -> vec4<f32> {
    return bitcast<vec4<f32>>(bitcast<vec4<u32>>(v) ^ vec4<u32>(params.zero));
}
