// Shared by rope_pair.wgsl and rope_append.wgsl (one invocation per rotated pair; each declares
// `params` with `half_dim` = D/2, and the `nonfinite` status words): where a pair lives and its
// non-finite flags.

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
