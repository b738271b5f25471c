// subgroup_layout_probe: checks, on the device itself, the subgroup layout every subgroup kernel
// assumes (bitlinear_gemv_blocks.wgsl): in a 1-D workgroup of 256 invocations, the numbers
// vt = subgroup_id * subgroup_size + lane are a bijection onto 0 .. 256, every member of a
// subgroup names the same subgroup_id, subgroups are full, their size is a power of two from 4
// to 128, and a shuffle addresses the lane that `subgroup_invocation_id` names. Vulkan and Metal
// report the driver's own ids; naga's HLSL derives subgroup_id as local_invocation_index /
// WaveGetLaneCount(), which holds only where waves are consecutive local indices in lane order.
// The engine runs this once per adapter and drops the subgroup kernels where it fails.
//
// Binding 0 (read_write): per workgroup 257 words, zeroed before the dispatch: a hit count per
// vt, then the OR of the violation bits found (1: vt out of range or lane >= size, 2: members
// disagree on subgroup_id, 4: a shuffle reached another lane, 8: a partial subgroup, 16: a size
// that is no power of two in 4 ..= 128, 32: num_subgroups × size is not the workgroup). The host expects every count 1 and the flags 0.
// Standalone: no engine params or status bindings.

// Tests only: 0 on devices. 1 numbers lanes one off from the shuffle's lane order, 2 gives the
// last invocation of each subgroup the next subgroup's id, 3 numbers lanes in reverse (mask 1
// alone cannot see it): the faults a driver could have, so a
// test proves the probe sees them on a device that has none.
override SKEW: u32 = 0u;

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read_write> words: array<atomic<u32>>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) size: u32,
    @builtin(num_subgroups) nsg: u32,
) {
    var lane = sg_lane;
    var sg = sg_id;
    if SKEW == 1u {
        lane = (sg_lane + 1u) % size;
    } else if SKEW == 2u && sg_lane == size - 1u {
        sg = sg_id + 1u;
    } else if SKEW == 3u {
        lane = size - 1u - sg_lane;
    }
    let base = wid.x * (WG + 1u);
    var bad = 0u;
    let vt = sg * size + lane;
    if vt < WG && lane < size {
        atomicAdd(&words[base + vt], 1u);
    } else {
        bad |= 1u;
    }
    if subgroupMin(sg) != subgroupMax(sg) {
        bad |= 2u;
    }
    // Every butterfly mask the reductions use, and shuffles by absolute lane (the lean GEMVs
    // broadcast row m's scale from lane m): a numbering reversed or rotated by an even offset
    // passes mask 1 alone.
    for (var o = 1u; o < size; o = o << 1u) {
        if subgroupShuffleXor(vt, o) != (vt ^ o) {
            bad |= 4u;
        }
    }
    let base_vt = sg * size;
    if subgroupShuffle(vt, 0u) != base_vt
        || subgroupShuffle(vt, (lane + 1u) % size) != base_vt + (lane + 1u) % size {
        bad |= 4u;
    }
    if subgroupAdd(1u) != size {
        bad |= 8u;
    }
    if size < 4u || size > 128u || (size & (size - 1u)) != 0u {
        bad |= 16u;
    }
    // The kernels size their per-subgroup slots by num_subgroups.
    if nsg * size != WG {
        bad |= 32u;
    }
    if bad != 0u {
        atomicOr(&words[base + WG], bad);
    }
}
