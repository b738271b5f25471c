// Shared snippet of the vec4 BitLinear GEMV kernels (K % 64 == 0): row blocks and reductions.
//
// A workgroup of GV_WG threads owns 4 * GV_WG / TPR consecutive weight rows, in blocks of 4 rows.
// The TPR threads of a block (its lanes l = 0 .. TPR) walk the vec4 words j = l, l + TPR, ... of
// the block's rows: one vec4 is 4 packed words, 64 weights, and the TPR lanes read TPR
// consecutive vec4 of a row per step, so every load is wide and coalesced. Each thread keeps one
// exact i32 partial sum per row of its block (a vec4<i32>), the reduction combines the lanes.
//
// Threads are numbered vt = subgroup_id * subgroup_size + subgroup lane, so a block's lanes are
// consecutive lanes of one subgroup when TPR <= subgroup size (reduced with subgroupShuffleXor),
// and whole subgroups otherwise (then combined through workgroup memory). Any power-of-two
// subgroup size from 4 to 128 works; TPR is a power of two from 1 to GV_WG.
// On Vulkan and Metal subgroup_id is the driver's, so (sg, lane) pairs are distinct and vt is a
// bijection onto 0 .. GV_WG. On D3D12 naga derives subgroup_id as local_invocation_index /
// WaveGetLaneCount() while the lane is WaveGetLaneIndex(): vt is a bijection there only if waves
// are made of consecutive local indices in lane order, which every known D3D12 driver does for a
// 1-D workgroup but HLSL does not promise. The engine checks all of it on each device before it
// uses a subgroup kernel (subgroup_layout_probe.wgsl, engine/src/subgroup_probe.rs) and runs the
// workgroup-memory kernels where it fails (lavapipe at 1024-bit vectors reports 32 lanes and
// runs 16, and fails it).
//
// The kernel declares `weights: array<vec4<u32>>` (binding 0) and the Params of
// bitlinear_common.wgsl.

// Lanes per 4-row block (override constant, chosen by the engine per shape).
override TPR: u32 = 32u;
// Steps of weight loads each thread keeps in flight, 1..=4 (override constant): a thread loads
// its first DEPTH steps up front and reloads each step's registers right after using them, so
// a row block asks for DEPTH * TPR vec4 per row at once (the whole row when DEPTH * TPR covers
// it).
override DEPTH: u32 = 2u;
const GV_WG: u32 = 256u;
// GV_WG / 4: the most subgroups a workgroup can have (subgroups hold at least 4 invocations).
const GV_MAX_SUBGROUPS: u32 = 64u;

// One vec4 per subgroup for the cross-subgroup reduction (kernels may borrow its components for
// their own workgroup-wide reductions before the main loop; gv_reduce starts with a barrier).
var<workgroup> gv_red: array<vec4<i32>, GV_MAX_SUBGROUPS>;

// One vec4 step of the 4 rows of a block.
struct GvRows {
    r0: vec4<u32>,
    r1: vec4<u32>,
    r2: vec4<u32>,
    r3: vec4<u32>,
}

// Where a thread works.
struct GvIds {
    // Virtual thread index (see above).
    vt: u32,
    // Subgroup lane, subgroup index, subgroup size.
    lane: u32,
    sg: u32,
    sg_size: u32,
    // Lane within the row block.
    l: u32,
    // First weight row of the block (may be >= params.n for blocks past the end).
    n: u32,
}

fn gv_ids(wid: vec3<u32>, nwg: vec3<u32>, lane: u32, sg: u32, sg_size: u32) -> GvIds {
    let vt = sg * sg_size + lane;
    let rows_per_wg = 4u * (GV_WG / TPR);
    let n = (wid.x + wid.y * nwg.x) * rows_per_wg + 4u * (vt / TPR);
    return GvIds(vt, lane, sg, sg_size, vt % TPR, n);
}

// Vec4 word j of rows n .. n + 3 (rows past the end read the last row; they are never stored).
fn gv_load(n: u32, j: u32, vpr: u32) -> GvRows {
    let last = params.n - 1u;
    return GvRows(
        weights[min(n, last) * vpr + j],
        weights[min(n + 1u, last) * vpr + j],
        weights[min(n + 2u, last) * vpr + j],
        weights[min(n + 3u, last) * vpr + j],
    );
}

// gv_load for a step inside the row (j < vpr); zero words (never used) past its end.
fn gv_load_if(n: u32, j: u32, vpr: u32) -> GvRows {
    if (j >= vpr) {
        return GvRows();
    }
    return gv_load(n, j, vpr);
}

// Code-domain dot product of one weight vec4 (words 4 j .. 4 j + 3) with its 16 activation
// words (xa = the 4 words of weight word 4 j, xb of 4 j + 1, ...).
fn gv_dot_row(w: vec4<u32>, xa: vec4<u32>, xb: vec4<u32>, xc: vec4<u32>, xd: vec4<u32>) -> i32 {
    return bitlinear_dot_word4(w.x, xa) + bitlinear_dot_word4(w.y, xb)
        + bitlinear_dot_word4(w.z, xc) + bitlinear_dot_word4(w.w, xd);
}

// The same for the 4 rows of a block.
fn gv_dot(w: GvRows, xa: vec4<u32>, xb: vec4<u32>, xc: vec4<u32>, xd: vec4<u32>) -> vec4<i32> {
    return vec4<i32>(
        gv_dot_row(w.r0, xa, xb, xc, xd),
        gv_dot_row(w.r1, xa, xb, xc, xd),
        gv_dot_row(w.r2, xa, xb, xc, xd),
        gv_dot_row(w.r3, xa, xb, xc, xd),
    );
}

// Sums v over the TPR lanes of each block; the total is valid on lane l == 0 of the block.
// Exact in i32, so the order does not matter. Call from uniform control flow (two barriers).
fn gv_reduce(v_in: vec4<i32>, ids: GvIds) -> vec4<i32> {
    var v = v_in;
    let seg = min(TPR, ids.sg_size);
    for (var o = seg >> 1u; o > 0u; o = o >> 1u) {
        v += subgroupShuffleXor(v, o);
    }
    let wide = TPR > ids.sg_size;
    workgroupBarrier();
    if (wide && ids.lane == 0u) {
        gv_red[ids.sg] = v;
    }
    workgroupBarrier();
    if (wide && ids.l == 0u) {
        v = vec4<i32>();
        let first = ids.vt / ids.sg_size;
        for (var s = 0u; s < TPR / ids.sg_size; s = s + 1u) {
            v += gv_red[first + s];
        }
    }
    return v;
}
