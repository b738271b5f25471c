//! Cross-check of every float tensor op of the GPU engine against `bitnet_cpu_ref::ops`, through
//! the public API: values within the tolerances of `bitnet_tests::TOLERANCES`, identical errors
//! (non-finite inputs and outputs, bad shapes and arguments), chunking over a small binding limit,
//! chaining on the device, and the CPU backend; and the shape ops `slice` and `concat`, which must
//! match cpu-ref bit for bit. Runs on any adapter (lavapipe in CI) and fails
//! loudly without one.

mod tensor_cross_check {
    mod auto_limits;
    mod chaining;
    mod chunking;
    pub mod common;
    mod errors;
    mod errors_attention;
    mod errors_shape;
    mod gated;
    mod kv_cache;
    mod kv_cache_faults;
    mod kv_cache_fused;
    mod kv_cache_placement;
    mod kv_cache_rope;
    mod kv_cache_views;
    mod long_loops;
    mod norm_add;
    mod rope_pair;
    mod shape_paths;
    mod softmax_masks;
    mod values_attention;
    mod values_attention_decode;
    mod values_elementwise;
    mod values_matmul;
    mod values_rows;
    mod values_shape;
    mod views_and_ranks;
}

/// The subgroup reduction (`reduce_last_subgroup.wgsl`) again on 4-lane subgroups (lavapipe, see
/// `bitnet_tests::rerun_on_4_lane_subgroups`): 64 subgroups per workgroup there.
#[test]
fn subgroup_reductions_on_4_lane_subgroups() {
    bitnet_tests::rerun_on_4_lane_subgroups(
        "subgroup_reductions_on_4_lane_subgroups",
        &[
            "values_rows::reduce_last_matches_cpu_ref",
            "values_rows::reduce_max_keeps_the_sign_of_zero",
        ],
    );
}
