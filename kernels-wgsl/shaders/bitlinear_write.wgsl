// The output store of the BitLinear kernels (concatenated after bitlinear_common.wgsl; the
// kernel declares `out: array<u32>`). The chain kernel, whose `out` other workgroups read while
// it runs (declared coherent, or atomic), has its own (bitlinear_chain_subgroup.wgsl, ch_value).

// Writes flat output word `idx` from its exact accumulator: y = f32(acc) * scale (mode 0, with
// the non-finite check on status word Y_STATUS) or the accumulator's bits (mode 1).
fn bitlinear_write(idx: u32, acc: i32, scale: f32) {
    if (params.mode != 0u) {
        out[bl_plane + idx] = bitcast<u32>(acc);
        return;
    }
    let bits = bitcast<u32>(i32_to_f32(acc) * scale);
    if ((bits & 0x7f800000u) == 0x7f800000u) {
        atomicMin(&nonfinite[Y_STATUS], idx);
    }
    out[idx] = bits;
}
