// The second dispatch of split-mode attention (flash-decoding, see attention.wgsl and
// attention_decode.wgsl): merges each (query, head) pair's records (m_c, l_c, o_c[0..D)), each
// covering `keys` consecutive keys (256 for attention.wgsl), in key order with cpu-ref's
// recurrence (`merge_factors`, attention_common.wgsl) and writes O[d] / L, correctly rounded.
// Invocation t handles d = t, t + 128, ...; every invocation walks the records' maxima and sums
// itself (the same values in every invocation, no workgroup memory, no barriers).
//
// Chunking: the launch covers the pairs of query rows row_base .. row_base + rows; the records are
// the launch's own (as attention.wgsl wrote them), the output is bound whole or from row_base
// (q_shift = row of the binding holding launch row 0). Flat indices reported are those of the
// full output.
//
// Non-finite status words: 3 = output (a chunk's weighted sum or the merged one overflowing f32,
// at its element); words 0..2 are attention.wgsl's (q, k, v), unused here. Dispatch: linear, one
// workgroup per pair (pair = i · Hq + h within the launch).

struct Params {
    pairs: u32,       // (query, head) pairs of this launch
    heads: u32,       // Hq
    dim: u32,         // D
    chunks: u32,      // records per pair (ceil(Tk / keys))
    attend0: u32,     // keys attended by launch row 0
    attend_step: u32, // 1 when causal, else 0
    row_base: u32,    // row of the full output holding launch row 0
    q_shift: u32,     // row of the output's binding holding launch row 0
    keys: u32,        // keys per record
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> parts: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

const COMBINE_WG: u32 = 128u;

@compute @workgroup_size(128, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let pair = wid.x + wid.y * nwg.x;
    if (pair >= params.pairs) {
        return;
    }
    let i = pair / params.heads;
    let h = pair % params.heads;
    let dim = params.dim;
    let n = params.attend0 + i * params.attend_step;
    let n_chunks = (n + params.keys - 1u) / params.keys;
    let stride = dim + 2u;
    let first = pair * params.chunks * stride;
    let out_row = ((params.q_shift + i) * params.heads + h) * dim;
    let flat_row = ((params.row_base + i) * params.heads + h) * dim;
    for (var d = t; d < dim; d += COMBINE_WG) {
        var m_run = parts[first];
        var l_run = parts[first + 1u];
        var o = parts[first + 2u + d];
        var bad = is_non_finite(o);
        // Four records' loads issued before any is merged: a pair's merge is a few memory round
        // trips, not one per record (the merge itself stays in record order).
        var c = 1u;
        for (; c + 4u <= n_chunks; c += 4u) {
            var mc: vec4<f32>;
            var lc: vec4<f32>;
            var oc: vec4<f32>;
            for (var u = 0u; u < 4u; u += 1u) {
                let r = first + (c + u) * stride;
                mc[u] = parts[r];
                lc[u] = parts[r + 1u];
                oc[u] = parts[r + 2u + d];
            }
            for (var u = 0u; u < 4u; u += 1u) {
                let f = merge_factors(m_run, mc[u]);
                l_run = l_run * f.x + lc[u] * f.y;
                o = o * f.x + oc[u] * f.y;
                m_run = f.z;
                bad = bad || is_non_finite(oc[u]) || is_non_finite(o);
            }
        }
        for (; c < n_chunks; c += 1u) {
            let r = first + c * stride;
            let oc = parts[r + 2u + d];
            let f = merge_factors(m_run, parts[r]);
            l_run = l_run * f.x + parts[r + 1u] * f.y;
            o = o * f.x + oc * f.y;
            m_run = f.z;
            bad = bad || is_non_finite(oc) || is_non_finite(o);
        }
        let y = div_rounded(o, l_run);
        if (bad || is_non_finite(y)) {
            atomicMin(&nonfinite[3], flat_row + d);
        }
        out[out_row + d] = y;
    }
}
