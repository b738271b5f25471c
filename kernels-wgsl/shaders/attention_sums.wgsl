// The weighted sums of attention.wgsl (concatenated after it; it declares `v`, `weights`,
// `sums`, `params`, `nonfinite` and CHUNK): o_c[d] = Σ_j weights[j] · v[start + j][d] over one
// chunk's keys, by all 256 invocations at once for D <= 256 (`chunk_sums`), by one invocation
// per d beyond (`weighted_sum`).

// o_c[d] = Σ_j weights[j] · v[start + j][d] over the chunk's `len` keys for one d, serially: the
// path for D > 256 (one invocation per d). Flags non-finite v.
fn weighted_sum(start: u32, len: u32, g: u32, d: u32) -> f32 {
    let dim = head_dim();
    var acc = 0.0;
    for (var j = 0u; j < len; j += 1u) {
        let vi = ((start + j) * params.kv_heads + g) * dim + d;
        let x = v[vi];
        if (is_non_finite(x)) {
            atomicMin(&nonfinite[2], vi);
        }
        acc = acc + weights[j] * x;
    }
    return acc;
}

// o_c[d] of the current chunk: from chunk_sums' result for D <= 256, summed here beyond.
fn chunk_sum(small: bool, start: u32, len: u32, g: u32, d: u32) -> f32 {
    if (small) {
        return sums[d];
    }
    return weighted_sum(start, len, g, d);
}

// For D <= 256, every invocation works: the chunk's keys are dealt to G = 256 / D groups
// (group i takes keys i, i + G, ...), invocation t = i·D + d sums its group's keys for
// dimension d with four independent accumulators, and the groups' sums are added in group order.
// Leaves o_c[d] in sums[d]. Every invocation must call it (barriers). Flags non-finite v.
fn chunk_sums(start: u32, len: u32, g: u32, t: u32) {
    let dim = head_dim();
    let groups = CHUNK / dim;
    let gi = t / dim;
    let d = t - gi * dim;
    var acc = vec4<f32>(0.0);
    if (gi < groups) {
        let row = params.kv_heads * dim;
        let base = (start * params.kv_heads + g) * dim + d;
        var j = gi;
        // Thirty-two keys per step, loaded before any is used (one round trip per step: D = 128
        // takes four steps per chunk).
        for (; j + 31u * groups < len; j += 32u * groups) {
            var x: array<vec4<f32>, 8>;
            for (var u = 0u; u < 8u; u += 1u) {
                let i0 = base + (j + 4u * u * groups) * row;
                let step = groups * row;
                x[u] = vec4<f32>(v[i0], v[i0 + step], v[i0 + 2u * step], v[i0 + 3u * step]);
            }
            for (var u = 0u; u < 8u; u += 1u) {
                let ju = j + 4u * u * groups;
                if (any_non_finite4(x[u])) {
                    flag_v4(x[u], base + ju * row, groups * row);
                }
                let w = vec4<f32>(weights[ju], weights[ju + groups], weights[ju + 2u * groups], weights[ju + 3u * groups]);
                acc = acc + w * x[u];
            }
        }
        for (; j + 3u * groups < len; j += 4u * groups) {
            let i0 = base + j * row;
            let i1 = i0 + groups * row;
            let i2 = i1 + groups * row;
            let i3 = i2 + groups * row;
            let x = vec4<f32>(v[i0], v[i1], v[i2], v[i3]);
            if (any_non_finite4(x)) {
                let at = vec4<u32>(i0, i1, i2, i3);
                for (var i = 0u; i < 4u; i += 1u) {
                    if (is_non_finite(x[i])) {
                        atomicMin(&nonfinite[2], at[i]);
                    }
                }
            }
            let w = vec4<f32>(weights[j], weights[j + groups], weights[j + 2u * groups], weights[j + 3u * groups]);
            acc = acc + w * x;
        }
        for (; j < len; j += groups) {
            let vi = base + j * row;
            let x = v[vi];
            if (is_non_finite(x)) {
                atomicMin(&nonfinite[2], vi);
            }
            acc.x = acc.x + weights[j] * x;
        }
    }
    sums[t] = (acc.x + acc.y) + (acc.z + acc.w);
    workgroupBarrier();
    var o = 0.0;
    if (t < dim) {
        o = sums[t];
        for (var i = 1u; i < groups; i += 1u) {
            o = o + sums[i * dim + t];
        }
    }
    workgroupBarrier();
    sums[t] = o;
    workgroupBarrier();
}
