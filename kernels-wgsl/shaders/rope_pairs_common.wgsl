// Shared by rope_pair.wgsl and rope_append.wgsl (one invocation per rotated pair; each declares
// the bindings q, k, positions, freqs and yq, `params` with half_dim = D/2, heads_q and heads_k,
// and the `nonfinite` status words): where a pair lives, its non-finite flags, and the rotation
// of a q pair and of a k pair.

// Pair t of a [S, heads, D] tensor: (its position row s, the index of x[i], frequency index i).
fn pair_place(t: u32, heads: u32) -> vec3<u32> {
    let half = params.half_dim;
    let i = t % half;
    let sh = t / half;
    return vec3<u32>(sh / heads, sh * 2u * half + i, i);
}

// Flags a non-finite pair (x[lo], x[lo + D/2]) in status word `word`.
fn flag_pair(x: vec2<f32>, lo: u32, word: u32) {
    if (is_non_finite(x.x)) {
        atomicMin(&nonfinite[word], lo);
    }
    if (is_non_finite(x.y)) {
        atomicMin(&nonfinite[word], lo + params.half_dim);
    }
}

// q's pair t rotated into yq; its input and output flagged (status words 0 and 1).
fn rope_q_pair(t: u32) {
    let half = params.half_dim;
    let p = pair_place(t, params.heads_q);
    let x = vec2<f32>(q[p.y], q[p.y + half]);
    flag_pair(x, p.y, 0u);
    let r = rope_rotate(x.x, x.y, positions[p.x], freqs[p.z]);
    flag_pair(r, p.y, 1u);
    yq[p.y] = r.x;
    yq[p.y + half] = r.y;
}

// k's pair t rotated: where its first element lives in k (`at`; the second is D/2 later) and
// the rotated pair; its input and output flagged (status words 2 and 3).
struct KPair {
    at: u32,
    r: vec2<f32>,
}

fn rope_k_pair(t: u32) -> KPair {
    let half = params.half_dim;
    let p = pair_place(t, params.heads_k);
    let x = vec2<f32>(k[p.y], k[p.y + half]);
    flag_pair(x, p.y, 2u);
    let r = rope_rotate(x.x, x.y, positions[p.x], freqs[p.z]);
    flag_pair(r, p.y, 3u);
    return KPair(p.y, r);
}
