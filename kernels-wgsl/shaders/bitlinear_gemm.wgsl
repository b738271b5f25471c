// BitLinear GEMM (M > 8): register-blocked tiles of (16 T) x (16 T) outputs, 256 threads in a
// 16 x 16 grid, T x T outputs per thread (T = 4 or 8: an override constant chosen per shape).
//
// Per K step (4 weight words = 64 k = 16 activation words per row) the workgroup stages, in
// workgroup memory, the activation words of its 16 T rows and the *signed* weights of its 16 T
// weight rows (bitlinear_signed_group: bytes -1 / 0 / +1, decoded once per step and shared by all
// activation rows, so no row-sum correction is needed). Both are stored k-major as vec4 of 4
// consecutive tile rows, so per k word a thread loads T / 4 activation vec4 and T / 4 weight
// vec4 and does T * T dot4I8Packed on registers. Staging threads own 4 consecutive rows and
// transpose their 4 x 4 words in registers, so every workgroup-memory access is a whole vec4 at
// a static index (no runtime-indexed arrays or vector components anywhere: they end up in slow
// local memory on some drivers). The next step's global loads are issued before the current
// step's arithmetic.
//
// Thread (tx, ty) owns rows m = m0 + 64 i + 4 ty + ii and n = n0 + 64 j + 4 tx + jj
// (i, j < T / 4, ii, jj < 4). Out-of-range weight rows and words are staged as zero weights;
// out-of-range activation rows read a clamped row and are never stored.
//
// Needs bitlinear_common.wgsl.

// Outputs per thread and dimension: 4 (64 x 64 tiles) or 8 (128 x 128 tiles).
override T: u32 = 8u;
const GM_THREADS: u32 = 256u;
// Activation words per staged row and K step.
const GM_XW: u32 = 16u;

// [GM_XW kk][tile rows / 4]: activation word kk of tile rows 4 v .. 4 v + 3.
var<workgroup> gm_x: array<vec4<u32>, 512>;
// [GM_XW kk][tile rows / 4]: signed weight word kk (weight word kk / 4, group kk % 4).
var<workgroup> gm_w: array<vec4<u32>, 512>;

// One staging thread's loads for a K step: 4 activation rows x one vec4 (4 words), and 4 weight
// rows x one word.
struct GmStage {
    x0: vec4<u32>,
    x1: vec4<u32>,
    x2: vec4<u32>,
    x3: vec4<u32>,
    w: vec4<u32>,
}

// Staging item of thread t: row group r4 = t / 4 (tile rows 4 r4 .. 4 r4 + 3), column c = t % 4
// (activation vec4 c of the step = weight word c of the step). Items t < 16 T.
fn gm_load(t: u32, m0: u32, n0: u32, j0: u32) -> GmStage {
    let wpr = params.words_per_row;
    let r = 4u * (t / 4u);
    let c = j0 + t % 4u;
    let cx = min(c, wpr - 1u);
    let last_m = params.m - 1u;
    var s: GmStage;
    s.x0 = act[min(m0 + r, last_m) * wpr + cx];
    s.x1 = act[min(m0 + r + 1u, last_m) * wpr + cx];
    s.x2 = act[min(m0 + r + 2u, last_m) * wpr + cx];
    s.x3 = act[min(m0 + r + 3u, last_m) * wpr + cx];
    // Out of range: code 1 everywhere, i.e. weight 0 in all four groups.
    let zero_w = 0x55555555u;
    let n = n0 + r;
    var w = vec4<u32>(zero_w);
    if (c < wpr) {
        if (n < params.n) {
            w.x = weights[n * wpr + c];
        }
        if (n + 1u < params.n) {
            w.y = weights[(n + 1u) * wpr + c];
        }
        if (n + 2u < params.n) {
            w.z = weights[(n + 2u) * wpr + c];
        }
        if (n + 3u < params.n) {
            w.w = weights[(n + 3u) * wpr + c];
        }
    }
    s.w = w;
    return s;
}

// Signed group g of the four weight words of a staging item, one per tile row.
fn gm_signed4(w: vec4<u32>, g: u32) -> vec4<u32> {
    return vec4<u32>(
        bitlinear_signed_group(w.x, g),
        bitlinear_signed_group(w.y, g),
        bitlinear_signed_group(w.z, g),
        bitlinear_signed_group(w.w, g),
    );
}

// Writes a staging item into workgroup memory, transposed to k-major.
fn gm_store(t: u32, s: GmStage) {
    let rows4 = 4u * T;
    let v = t / 4u;
    let kk = 4u * (t % 4u);
    gm_x[kk * rows4 + v] = vec4<u32>(s.x0.x, s.x1.x, s.x2.x, s.x3.x);
    gm_x[(kk + 1u) * rows4 + v] = vec4<u32>(s.x0.y, s.x1.y, s.x2.y, s.x3.y);
    gm_x[(kk + 2u) * rows4 + v] = vec4<u32>(s.x0.z, s.x1.z, s.x2.z, s.x3.z);
    gm_x[(kk + 3u) * rows4 + v] = vec4<u32>(s.x0.w, s.x1.w, s.x2.w, s.x3.w);
    gm_w[kk * rows4 + v] = gm_signed4(s.w, 0u);
    gm_w[(kk + 1u) * rows4 + v] = gm_signed4(s.w, 1u);
    gm_w[(kk + 2u) * rows4 + v] = gm_signed4(s.w, 2u);
    gm_w[(kk + 3u) * rows4 + v] = gm_signed4(s.w, 3u);
}

// acc + (x . w[0], x . w[1], x . w[2], x . w[3]) for one activation word and 4 weight words.
fn gm_mma(acc: vec4<i32>, x: u32, w: vec4<u32>) -> vec4<i32> {
    return acc + vec4<i32>(
        dot4I8Packed(x, w.x),
        dot4I8Packed(x, w.y),
        dot4I8Packed(x, w.z),
        dot4I8Packed(x, w.w),
    );
}

// The 4 x 4 outputs of activation rows x (one word each) and weight rows w.
struct Gm4 {
    r0: vec4<i32>,
    r1: vec4<i32>,
    r2: vec4<i32>,
    r3: vec4<i32>,
}

fn gm_block(a: Gm4, x: vec4<u32>, w: vec4<u32>) -> Gm4 {
    return Gm4(gm_mma(a.r0, x.x, w), gm_mma(a.r1, x.y, w), gm_mma(a.r2, x.z, w), gm_mma(a.r3, x.w, w));
}

// Writes the 4 x 4 outputs of tile rows m .. m + 3, n .. n + 3.
fn gm_write(a: Gm4, m: u32, n: u32, s: f32) {
    gm_write_row(a.r0, m, n, s);
    gm_write_row(a.r1, m + 1u, n, s);
    gm_write_row(a.r2, m + 2u, n, s);
    gm_write_row(a.r3, m + 3u, n, s);
}

fn gm_write_row(v: vec4<i32>, m: u32, n: u32, s: f32) {
    if (m >= params.m) {
        return;
    }
    let scale = bitlinear_scale(s, act_absmax[params.m_base + m]);
    let base = m * params.out_stride + params.out_base;
    if (n < params.n) {
        bitlinear_write(base + n, v.x, scale);
    }
    if (n + 1u < params.n) {
        bitlinear_write(base + n + 1u, v.y, scale);
    }
    if (n + 2u < params.n) {
        bitlinear_write(base + n + 2u, v.z, scale);
    }
    if (n + 3u < params.n) {
        bitlinear_write(base + n + 3u, v.w, scale);
    }
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // Linear grid (folded into 2D by the engine when large), unfolded into (tile_m, tile_n).
    let tile = wid.x + wid.y * nwg.x;
    let n0 = (tile % params.tiles_n) * 16u * T;
    let m0 = (tile / params.tiles_n) * 16u * T;
    if (m0 >= params.m) {
        // Uniform across the workgroup: a padding workgroup of the folded grid.
        return;
    }
    let tx = t % 16u;
    let ty = t / 16u;
    let rows4 = 4u * T;
    let wpr = params.words_per_row;
    // This workgroup's K slice (all of K unless the GEMM is split), in steps of 4 words.
    let slice = bitlinear_k_slice(wid.z, 4u);
    let j_first = 4u * slice.x;
    let j_end = min(4u * (slice.x + slice.y), wpr);
    // 16 T / 4 row groups x 4 columns of staging items.
    let stager = t < 16u * T;
    // a_ij: activation row block i (rows 64 i + 4 ty ..), weight row block j (64 j + 4 tx ..).
    var a00 = Gm4();
    var a01 = Gm4();
    var a10 = Gm4();
    var a11 = Gm4();

    var stage = GmStage();
    if (stager) {
        stage = gm_load(t, m0, n0, j_first);
    }
    for (var j0 = j_first; j0 < j_end; j0 = j0 + 4u) {
        if (stager) {
            gm_store(t, stage);
        }
        workgroupBarrier();
        if (stager && j0 + 4u < j_end) {
            stage = gm_load(t, m0, n0, j0 + 4u);
        }
        for (var kk = 0u; kk < GM_XW; kk = kk + 1u) {
            let x0 = gm_x[kk * rows4 + ty];
            let w0 = gm_w[kk * rows4 + tx];
            a00 = gm_block(a00, x0, w0);
            if (T == 8u) {
                let x1 = gm_x[kk * rows4 + 16u + ty];
                let w1 = gm_w[kk * rows4 + 16u + tx];
                a01 = gm_block(a01, x0, w1);
                a10 = gm_block(a10, x1, w0);
                a11 = gm_block(a11, x1, w1);
            }
        }
        workgroupBarrier();
    }

    let s = weight_scale[0];
    gm_write(a00, m0 + 4u * ty, n0 + 4u * tx, s);
    if (T == 8u) {
        gm_write(a01, m0 + 4u * ty, n0 + 64u + 4u * tx, s);
        gm_write(a10, m0 + 64u + 4u * ty, n0 + 4u * tx, s);
        gm_write(a11, m0 + 64u + 4u * ty, n0 + 64u + 4u * tx, s);
    }
}
