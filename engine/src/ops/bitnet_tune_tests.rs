//! Tests of `bitnet_tune.rs`: what is persisted, calibration tags, the state's lifetime, and
//! plans chosen while the settings change.

/// Only plans measured among all candidates go to the shared plan cache (a winner among
/// restricted candidates was served to default engines before).
#[test]
fn only_unrestricted_measurements_are_persisted() {
    use super::{BitnetTuning, unrestricted};
    assert!(unrestricted(BitnetTuning::default()));
    assert!(unrestricted(BitnetTuning {
        autotune: Some(true),
        ..Default::default()
    }));
    assert!(!unrestricted(BitnetTuning {
        autotune: Some(true),
        gemm_block: Some(4),
        ..Default::default()
    }));
    assert!(!unrestricted(BitnetTuning {
        gemm_coop: Some(false),
        ..Default::default()
    }));
}

/// The calibration key names a forced tuning and a `BITNET_AUTOTUNE` value (autotuned GEMVs
/// made the H200 decode stack 5.75 against 1.78 ms): a model measured under either is never
/// served to default engines.
#[test]
fn calibration_tags_name_tuning_and_the_autotune_variable() {
    use super::{BitnetTuning, tag_of};
    assert_eq!(tag_of(BitnetTuning::default(), None), "");
    let on = tag_of(BitnetTuning::default(), Some(true));
    let off = tag_of(BitnetTuning::default(), Some(false));
    assert!(
        !on.is_empty() && !off.is_empty() && on != off,
        "{on} / {off}"
    );
    let forced = BitnetTuning {
        generic_gemv: true,
        ..Default::default()
    };
    assert!(tag_of(forced, None).contains("generic_gemv: true"));
}

use super::{BitnetTuning, state};

/// A dropped engine's tuning state goes with it (a server making engines must not grow).
#[test]
fn dropping_an_engine_forgets_its_tuning() {
    let e = crate::test_gpu::gpu();
    let id = e.gpu_id().unwrap();
    e.set_bitnet_tuning(BitnetTuning::default());
    let known = || state().lock().unwrap().contains_key(&id);
    assert!(known());
    drop(e);
    assert!(!known());
}

/// A plan chosen under settings that `set_bitnet_tuning` replaced meanwhile (an autotune takes
/// seconds) is not cached: the next call of that shape plans under the new settings. Cached, a
/// forced block size set during the measurement was ignored for good (a reviewer's probe: a
/// 4-wide GEMM stayed after 8 was forced).
#[test]
fn a_plan_chosen_under_replaced_settings_is_not_cached() {
    use super::{BitnetTuning, Key, cache_plan, with_state};
    use crate::ops::LinearPlan;
    let e = crate::test_gpu::gpu();
    let g = e.gpu_raw().expect("a GPU engine");
    let (m, n, k) = (16, 64, 64);
    let key = Key {
        m,
        n,
        k,
        f32_input: false,
    };
    // A call starts planning under the default settings...
    let generation = with_state(g.id, |s| s.generation);
    // ...another thread forces 8-wide GEMM tiles...
    let forced = BitnetTuning {
        autotune: Some(false),
        gemm_block: Some(8),
        gemm_splits: Some(1),
        ..Default::default()
    };
    e.set_bitnet_tuning(forced);
    // ...and the first call's choice arrives.
    cache_plan(g, generation, key, LinearPlan::Gemm { t: 4, splits: 1 });
    assert_eq!(e.bitlinear_plan(m, n, k, false), None);
    let chosen = e.linear_plan(g, (m, n, k), false).unwrap();
    assert_eq!(chosen, LinearPlan::Gemm { t: 8, splits: 1 });
    assert_eq!(e.bitlinear_plan(m, n, k, false), Some(chosen));
    // Under unchanged settings a choice is cached.
    let generation = with_state(g.id, |s| s.generation);
    let other = Key { m: 24, ..key };
    cache_plan(g, generation, other, LinearPlan::Gemm { t: 8, splits: 1 });
    assert_eq!(
        e.bitlinear_plan(24, n, k, false),
        Some(LinearPlan::Gemm { t: 8, splits: 1 })
    );
}
