// BitLinear GEMV for f32 activation rows (decode: M = 1, or M <= 8 requests batched) with the
// activation quantization fused in; K % 64 == 0 and K <= GF_MAX_K. Subgroup reductions.
//
// The grid's x index is the activation row (y and z number the row blocks): each workgroup
// quantizes one row and runs its row blocks against it, exactly as for M = 1. The M workgroups
// of a row block are adjacent in dispatch order, so they read the same weights at about the same
// time (one DRAM read, L2 hits for the rest): M rows cost one weight stream and M times the
// (parallel) per-workgroup work, where a kernel that applied each weight load to all M rows had
// every workgroup quantize all M rows.
//
// Every workgroup quantizes the (small, cache-resident) row itself, exactly as act_quant.wgsl
// does — absmax of the sign-cleared bits, a = max(absmax, 1e-5), inv = 127 / a correctly
// rounded (exact_div_127: 1.347 vs 1.424 ms for the H200 decode stack against the 25-step
// exact_div), xq = clamp(round(x * inv), -128, 127) — into workgroup memory, then runs the row
// blocks of bitlinear_gemv_blocks.wgsl against it. So BitLinear on f32 activations is one
// dispatch instead of two, and the quantized row never goes through memory. The first DEPTH
// steps of weight loads are issued before the quantization, so they are in flight while it
// runs. The activation row sum (for the code-domain trick of bitlinear_common.wgsl) falls out of
// the quantization.
//
// Status words: 0 = the first non-finite x index (flat over [M, K]; cpu-ref checks x first),
// 1 = the first non-finite y index (flat over [M, out_stride]); the engine binds all M rows in one
// dispatch. Needs bitlinear_common.wgsl, bitlinear_gemv_blocks.wgsl, exact_div.wgsl,
// exact_div_127.wgsl.

// Largest K: 960 vec4 of packed activations (15360 bytes) + gv_red fill 16 KiB of workgroup memory.
const GF_MAX_K: u32 = 15360u;
const EXP_MASK: u32 = 0x7f800000u;
const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<storage, read> weights: array<vec4<u32>>;
// The weight tensor's scale s.
@group(0) @binding(1) var<storage, read> weight_scale: array<f32>;
// The activation rows, [M, K] floats.
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
// [out_stride] f32 bits of y, or i32 bits of acc (see `mode`).
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

const X_STATUS: u32 = 0u;
const Y_STATUS: u32 = 1u;

// The quantized row: vec4 i holds the 4 activation words that pair with weight word i.
var<workgroup> gf_x: array<vec4<u32>, 960>;

// Index of the first true component (the vector has one).
fn gf_first(v: vec4<bool>) -> u32 {
    return select(select(select(3u, 2u, v.z), 1u, v.y), 0u, v.x);
}

// Sign-cleared bits of x[i] (non-negative floats order like their bits); flags non-finite values.
fn gf_abs_bits(i: u32, bad: ptr<function, u32>) -> u32 {
    let b = bitcast<vec4<u32>>(x[i]) & vec4<u32>(0x7fffffffu);
    let inf = (b & vec4<u32>(EXP_MASK)) == vec4<u32>(EXP_MASK);
    if (any(inf)) {
        *bad = min(*bad, 4u * i + gf_first(inf));
    }
    return max(max(b.x, b.y), max(b.z, b.w));
}

// Groups 1 and 2 of a packed weight word masked in place (codes times 4 and 16).
const GF_MASK_1: u32 = 0x0c0c0c0cu;
const GF_MASK_2: u32 = 0x30303030u;

// A thread's exact partial sums for its 4-row block in three scales: groups 0 and 3 of every
// weight word (codes as they are), group 1 (codes masked in place: 4 c) and group 2 (16 c).
// Masking in place saves the shift of groups 1 and 2 (9 instead of 11 integer instructions per
// word); group 3 in place would be 64 c, which a signed byte reads as negative for c = 2, so it
// is shifted. s4 and s16 stay multiples of 4 and 16, so gf_total divides them exactly. (The
// other vec4 GEMVs apply each decoded word to all M rows, which amortizes the shifts; here every
// workgroup decodes for its one activation row.)
struct GfAcc {
    s1: vec4<i32>,
    s4: vec4<i32>,
    s16: vec4<i32>,
}

// One weight word against its 4 activation words: (scale-1, scale-4, scale-16) sums.
fn gf_word(w: u32, x: vec4<u32>) -> vec3<i32> {
    return vec3<i32>(
        dot4I8Packed(x.x, w & CODE_MASK) + dot4I8Packed(x.w, (w >> 6u) & CODE_MASK),
        dot4I8Packed(x.y, w & GF_MASK_1),
        dot4I8Packed(x.z, w & GF_MASK_2),
    );
}

// One row's weight vec4 (words 4 j .. 4 j + 3) against its 16 activation words.
fn gf_row(w: vec4<u32>, xa: vec4<u32>, xb: vec4<u32>, xc: vec4<u32>, xd: vec4<u32>) -> vec3<i32> {
    return gf_word(w.x, xa) + gf_word(w.y, xb) + gf_word(w.z, xc) + gf_word(w.w, xd);
}

// Adds the block's products for weight step j against the staged row (nothing past its end).
fn gf_step(w: GvRows, j: u32, vpr: u32, acc: ptr<function, GfAcc>) {
    if (j >= vpr) {
        return;
    }
    let xa = gf_x[4u * j];
    let xb = gf_x[4u * j + 1u];
    let xc = gf_x[4u * j + 2u];
    let xd = gf_x[4u * j + 3u];
    let r0 = gf_row(w.r0, xa, xb, xc, xd);
    let r1 = gf_row(w.r1, xa, xb, xc, xd);
    let r2 = gf_row(w.r2, xa, xb, xc, xd);
    let r3 = gf_row(w.r3, xa, xb, xc, xd);
    (*acc).s1 += vec4<i32>(r0.x, r1.x, r2.x, r3.x);
    (*acc).s4 += vec4<i32>(r0.y, r1.y, r2.y, r3.y);
    (*acc).s16 += vec4<i32>(r0.z, r1.z, r2.z, r3.z);
}

// The code-domain sums of the block: s1 + s4 / 4 + s16 / 16, exact.
fn gf_total(acc: GfAcc) -> vec4<i32> {
    return acc.s1 + (acc.s4 >> vec4<u32>(2u)) + (acc.s16 >> vec4<u32>(4u));
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(num_subgroups) nsg: u32,
) {
    let ids = gv_ids(vec3<u32>(wid.y, wid.z, 0u), vec3<u32>(nwg.y, nwg.z, 1u), lane, sg, sg_size);
    let vpr = params.words_per_row / 4u;
    // K / 4 float vec4 (K % 64 == 0, so no padding words).
    let kv = params.words_per_row * 4u;
    // This workgroup's activation row, and the offset of its first vec4.
    let m = wid.x;
    let x0 = m * kv;

    // 1. The first DEPTH weight steps, in flight during the quantization.
    let j0 = ids.l;
    var w0 = gv_load_if(ids.n, j0, vpr);
    var w1 = GvRows();
    var w2 = GvRows();
    var w3 = GvRows();
    if (DEPTH > 1u) {
        w1 = gv_load_if(ids.n, j0 + TPR, vpr);
    }
    if (DEPTH > 2u) {
        w2 = gv_load_if(ids.n, j0 + 2u * TPR, vpr);
    }
    if (DEPTH > 3u) {
        w3 = gv_load_if(ids.n, j0 + 3u * TPR, vpr);
    }

    // 2. absmax, four independent loads per iteration (clamped duplicates change no maximum).
    var top = 0u;
    var bad = NONE;
    for (var i = ids.vt; i < kv; i = i + 4u * GV_WG) {
        let t0 = gf_abs_bits(x0 + i, &bad);
        let t1 = gf_abs_bits(x0 + min(i + GV_WG, kv - 1u), &bad);
        let t2 = gf_abs_bits(x0 + min(i + 2u * GV_WG, kv - 1u), &bad);
        let t3 = gf_abs_bits(x0 + min(i + 3u * GV_WG, kv - 1u), &bad);
        top = max(top, max(max(t0, t1), max(t2, t3)));
    }
    if (bad != NONE) {
        atomicMin(&nonfinite[X_STATUS], bad);
    }
    top = subgroupMax(top);
    if (lane == 0u) {
        gv_red[sg].x = bitcast<i32>(top);
    }
    workgroupBarrier();
    for (var s = 0u; s < nsg; s = s + 1u) {
        top = max(top, bitcast<u32>(gv_red[s].x));
    }
    let a = max(bitcast<f32>(top), 1e-5f);
    let inv = exact_div_127(a);

    // 3. Quantize and pack into workgroup memory; the row sum on the way.
    var rs = 0i;
    for (var i = ids.vt; i < kv; i = i + GV_WG) {
        let q = vec4<i32>(clamp(round(x[x0 + i] * inv), vec4<f32>(-128.0), vec4<f32>(127.0)));
        rs += q.x + q.y + q.z + q.w;
        let word = (u32(q.x) & 0xffu) | ((u32(q.y) & 0xffu) << 8u) | ((u32(q.z) & 0xffu) << 16u)
            | (u32(q.w) << 24u);
        gf_x[i >> 2u][i & 3u] = word;
    }
    rs = subgroupAdd(rs);
    if (lane == 0u) {
        gv_red[sg].y = rs;
    }
    workgroupBarrier();
    var row_sum = 0i;
    for (var s = 0u; s < nsg; s = s + 1u) {
        row_sum += gv_red[s].y;
    }

    // 4. The row blocks: use each step's registers, then reload them DEPTH steps ahead.
    var acc = GfAcc();
    var j = j0;
    loop {
        if (j >= vpr) {
            break;
        }
        let jn = j + DEPTH * TPR;
        gf_step(w0, j, vpr, &acc);
        w0 = gv_load_if(ids.n, jn, vpr);
        if (DEPTH > 1u) {
            gf_step(w1, j + TPR, vpr, &acc);
            w1 = gv_load_if(ids.n, jn + TPR, vpr);
        }
        if (DEPTH > 2u) {
            gf_step(w2, j + 2u * TPR, vpr, &acc);
            w2 = gv_load_if(ids.n, jn + 2u * TPR, vpr);
        }
        if (DEPTH > 3u) {
            gf_step(w3, j + 3u * TPR, vpr, &acc);
            w3 = gv_load_if(ids.n, jn + 3u * TPR, vpr);
        }
        j = jn;
    }

    // 5. Reduce over the lanes, rescale, store.
    let total = gv_reduce(gf_total(acc), ids);
    if (ids.l == 0u) {
        let scale = bitlinear_scale(weight_scale[0], a);
        let base = m * params.out_stride + params.out_base + ids.n;
        for (var r = 0u; r < 4u; r = r + 1u) {
            if (ids.n + r < params.n) {
                bitlinear_write(base + r, total[r] - row_sum, scale);
            }
        }
    }
}
