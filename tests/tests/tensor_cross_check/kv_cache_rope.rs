//! `KvCache::append_rope` is `Engine::rope_pair` then `KvCache::append` of the rotated keys, bit
//! for bit and error for error: the rotated queries and the cache's views after each step, on the
//! device (one launch per step) and on the CPU engine; shape, argument and capacity errors
//! leave the cache unchanged; a non-finite key fails the rotated queries and the cache's views
//! with the error the two calls give; a view alive across a truncate keeps its values; the
//! cache's own views as operands fall back to the two calls; a failed move of the cache reports
//! after `rope_pair`'s errors.

use bitnet_tests::{gpu_engine_with, lose_device};
use bitnet_wgpu::{Engine, EngineOptions, Error, KvCache, Tensor};

use super::common::{engine, gpu_error, up, values};

const HQ: usize = 4;
const HK: usize = 2;
const D: usize = 8;
const THETA: f32 = 10_000.0;

fn bits(t: &Tensor) -> Vec<u32> {
    t.read_f32().unwrap().iter().map(|x| x.to_bits()).collect()
}

/// One step's operands: `t` positions of q, k and v from `seed`, and positions `from..from + t`.
fn step(e: &Engine, seed: u64, from: u32, t: usize) -> [Tensor; 4] {
    let q = up(e, &values(seed, t * HQ * D, -2.0, 2.0), &[t, HQ, D]);
    let k = up(e, &values(seed + 1, t * HK * D, -2.0, 2.0), &[t, HK, D]);
    let v = up(e, &values(seed + 2, t * HK * D, -2.0, 2.0), &[t, HK, D]);
    let pos = e
        .upload_u32(&(from..from + t as u32).collect::<Vec<_>>(), &[t])
        .unwrap();
    [q, k, v, pos]
}

/// The two calls `append_rope` stands for.
fn two_calls(e: &Engine, c: &mut KvCache, [q, k, v, pos]: &[Tensor; 4]) -> Tensor {
    let (q, k) = e.rope_pair(q, k, pos, THETA).unwrap();
    c.append(&k, v).unwrap();
    q
}

/// Kernel launches recorded on `e` (one pipeline lookup per launch).
fn launches(e: &Engine) -> u64 {
    e.pipeline_stats().compiled + e.pipeline_stats().hits
}

fn same_steps(e: &Engine, fused_launches: Option<u64>) {
    let (mut fused, mut plain) = (
        e.kv_cache(16, HK, D).unwrap(),
        e.kv_cache(16, HK, D).unwrap(),
    );
    let mut from = 0;
    for (i, t) in [3usize, 1, 2, 1].into_iter().enumerate() {
        let ops = step(e, 40 + 10 * i as u64, from, t);
        let before = launches(e);
        let q = fused.append_rope(&ops[0], &ops[1], &ops[2], &ops[3], THETA);
        let took = launches(e) - before;
        if let Some(n) = fused_launches {
            assert_eq!(took, n, "launches of step {i}");
        }
        let want = two_calls(e, &mut plain, &ops);
        assert_eq!(bits(&q.unwrap()), bits(&want), "rotated q, step {i}");
        assert_eq!(fused.len(), plain.len());
        assert_eq!(bits(&fused.keys().unwrap()), bits(&plain.keys().unwrap()));
        assert_eq!(
            bits(&fused.values().unwrap()),
            bits(&plain.values().unwrap())
        );
        from += t as u32;
    }
}

#[test]
fn append_rope_is_rope_pair_then_append() {
    // An engine of its own: the launch count must not see other tests' launches.
    same_steps(&gpu_engine_with(EngineOptions::default()), Some(1));
    same_steps(&Engine::cpu(), None);
}

/// Queries of another head dimension than the keys' (q `[1, 4, 8]`, k and v `[1, 2, 4]`):
/// `rope_pair` rotates each by its own dimension's frequencies, so the one launch, which rotates
/// both with one half-dimension, does not apply and the two calls run — the same bits.
#[test]
fn append_rope_with_queries_of_another_head_dim() {
    for e in [engine(), &Engine::cpu()] {
        let (mut fused, mut plain) = (e.kv_cache(4, HK, 4).unwrap(), e.kv_cache(4, HK, 4).unwrap());
        let q = up(e, &values(170, HQ * D, -2.0, 2.0), &[1, HQ, D]);
        let k = up(e, &values(171, HK * 4, -2.0, 2.0), &[1, HK, 4]);
        let v = up(e, &values(172, HK * 4, -2.0, 2.0), &[1, HK, 4]);
        let pos = e.upload_u32(&[5], &[1]).unwrap();
        let got = fused.append_rope(&q, &k, &v, &pos, THETA).unwrap();
        let want = two_calls(e, &mut plain, &[q, k, v, pos]);
        assert_eq!(bits(&got), bits(&want), "rotated q");
        assert_eq!(bits(&fused.keys().unwrap()), bits(&plain.keys().unwrap()));
        assert_eq!(
            bits(&fused.values().unwrap()),
            bits(&plain.values().unwrap())
        );
    }
}

/// At WebGPU's default limits (8 storage buffers per stage) the one-launch form, 9 bindings with
/// its status slot, gives way to the two calls: it failed to build on every call there.
#[test]
fn append_rope_at_webgpu_default_limits() {
    let e = bitnet_tests::engine_on_own_device("append_rope: WebGPU default limits", |a| {
        (a.features(), bitnet_wgpu::wgpu::Limits::default())
    });
    same_steps(&e, Some(2));
}

#[test]
fn bad_operands_fail_as_the_two_calls_and_change_nothing() {
    let e = engine();
    let (mut c, mut plain) = (e.kv_cache(4, HK, D).unwrap(), e.kv_cache(4, HK, D).unwrap());
    let first = step(e, 70, 0, 2);
    c.append_rope(&first[0], &first[1], &first[2], &first[3], THETA)
        .unwrap();
    two_calls(e, &mut plain, &first);
    let (keys, vals) = (bits(&c.keys().unwrap()), bits(&c.values().unwrap()));
    let [q, k, v, pos] = step(e, 80, 2, 3);
    let flat_k = k.reshape(&[3, HK * D]).unwrap();
    let cases: [(&Tensor, &Tensor, f32); 4] = [
        (&flat_k, &v, THETA), // rope_pair: k not rank 3
        (&k, &v, -1.0),       // rope_pair: theta <= 0
        (&k, &v, THETA),      // append: 2 + 3 positions over a capacity of 4
        (&k, &q, THETA),      // append: v's heads are not the cache's
    ];
    for (i, (k, v, theta)) in cases.into_iter().enumerate() {
        let got = c.append_rope(&q, k, v, &pos, theta).unwrap_err();
        let want = e
            .rope_pair(&q, k, &pos, theta)
            .and_then(|(_, k)| plain.append(&k, v))
            .unwrap_err();
        assert_eq!(got, want, "case {i}");
        assert_eq!(c.len(), 2, "case {i}: the cache is unchanged");
        assert_eq!(bits(&c.keys().unwrap()), keys);
        assert_eq!(bits(&c.values().unwrap()), vals);
    }
}

/// A non-finite query with an append that fails its own checks (capacity, v's heads): on the CPU
/// engine `rope_pair` reports the query at once, before the append is checked, so `append_rope`
/// must too (it reported the append's error first); on the device `rope_pair`'s value errors
/// travel with its outputs, and both report the append's. The cache is unchanged either way.
#[test]
fn rope_value_errors_come_before_the_appends_checks() {
    for e in [&Engine::cpu(), engine()] {
        let (mut c, mut plain) = (e.kv_cache(4, HK, D).unwrap(), e.kv_cache(4, HK, D).unwrap());
        let first = step(e, 90, 0, 2);
        c.append_rope(&first[0], &first[1], &first[2], &first[3], THETA)
            .unwrap();
        two_calls(e, &mut plain, &first);
        let [_, k, v, pos] = step(e, 91, 2, 3);
        let mut qh = values(92, 3 * HQ * D, -2.0, 2.0);
        qh[5] = f32::NAN;
        let q = up(e, &qh, &[3, HQ, D]);
        for (i, v) in [&v, &q].into_iter().enumerate() {
            let got = c.append_rope(&q, &k, v, &pos, THETA).unwrap_err();
            let want = e
                .rope_pair(&q, &k, &pos, THETA)
                .and_then(|(_, k)| plain.append(&k, v))
                .unwrap_err();
            assert_eq!(got, want, "{}: case {i}", e.info().adapter_name);
            assert_eq!(c.len(), 2);
        }
    }
}

/// A NaN key: the rotated queries and the cache's views fail with the error the two calls give
/// (the same launch flags it), and the cache keeps its length as `append` does.
#[test]
fn a_non_finite_key_fails_queries_and_views_as_the_two_calls() {
    let e = engine();
    let (mut fused, mut plain) = (e.kv_cache(8, HK, D).unwrap(), e.kv_cache(8, HK, D).unwrap());
    let [q, _, v, pos] = step(e, 100, 0, 2);
    let mut kh = values(101, 2 * HK * D, -2.0, 2.0);
    kh[HK * D + 3] = f32::NAN;
    let k = up(e, &kh, &[2, HK, D]);
    let got = fused.append_rope(&q, &k, &v, &pos, THETA);
    let want = two_calls(
        e,
        &mut plain,
        &[q.clone(), k.clone(), v.clone(), pos.clone()],
    );
    let want_err = gpu_error(Ok(want));
    assert!(
        matches!(want_err, Error::NonFinite { tensor: "k", .. }),
        "{want_err:?}"
    );
    assert_eq!(gpu_error(got), want_err);
    assert_eq!(fused.len(), 2);
    assert_eq!(gpu_error(fused.keys()), gpu_error(plain.keys()));
    assert_eq!(gpu_error(fused.values()), gpu_error(plain.values()));
}

/// A view alive across a truncate keeps its values when `append_rope` writes the truncated
/// positions (copy on write), and the cache's own views as operands (bound for reading while the
/// launch would write their buffer) take the two calls, with the same result.
#[test]
fn views_keep_their_values_and_own_views_fall_back() {
    let e = engine();
    let (mut fused, mut plain) = (e.kv_cache(8, HK, D).unwrap(), e.kv_cache(8, HK, D).unwrap());
    let first = step(e, 120, 0, 3);
    fused
        .append_rope(&first[0], &first[1], &first[2], &first[3], THETA)
        .unwrap();
    two_calls(e, &mut plain, &first);
    let early = fused.keys().unwrap();
    let early_bits = bits(&early);
    fused.truncate(1);
    plain.truncate(1);
    let next = step(e, 130, 1, 2);
    let q = fused
        .append_rope(&next[0], &next[1], &next[2], &next[3], THETA)
        .unwrap();
    assert_eq!(bits(&q), bits(&two_calls(e, &mut plain, &next)));
    assert_eq!(bits(&early), early_bits, "the old view kept");
    assert_eq!(bits(&fused.keys().unwrap()), bits(&plain.keys().unwrap()));

    // v is the cache's own values view (3 positions): appended after rotation like any operand.
    let own = fused.values().unwrap();
    let (own_plain, pos) = (plain.values().unwrap(), step(e, 140, 3, 3)[3].clone());
    let (q, k) = (step(e, 141, 3, 3)[0].clone(), step(e, 141, 3, 3)[1].clone());
    let got = fused.append_rope(&q, &k, &own, &pos, THETA).unwrap();
    let want = two_calls(e, &mut plain, &[q, k, own_plain, pos]);
    assert_eq!(bits(&got), bits(&want));
    assert_eq!(fused.len(), 6);
    assert_eq!(bits(&fused.keys().unwrap()), bits(&plain.keys().unwrap()));
    assert_eq!(
        bits(&fused.values().unwrap()),
        bits(&plain.values().unwrap())
    );
}

/// A lost device fails the step (its rotated queries or the call itself) and the cache's views
/// with `DeviceLost`: never stale or partial rows.
#[test]
fn a_lost_device_fails_append_rope() {
    let e = gpu_engine_with(EngineOptions::default());
    let mut c = e.kv_cache(4, HK, D).unwrap();
    let first = step(&e, 150, 0, 1);
    c.append_rope(&first[0], &first[1], &first[2], &first[3], THETA)
        .unwrap();
    let next = step(&e, 151, 1, 1);
    lose_device(&e);
    let lost = |r: bitnet_wgpu::Result<Vec<f32>>| matches!(r, Err(Error::DeviceLost(_)));
    match c.append_rope(&next[0], &next[1], &next[2], &next[3], THETA) {
        Ok(q) => assert!(lost(q.read_f32()), "the rotated queries"),
        Err(err) => {
            assert!(matches!(err, Error::DeviceLost(_)), "{err:?}");
            assert_eq!(c.len(), 1, "the cache is unchanged");
        }
    }
    assert!(lost(c.keys().and_then(|k| k.read_f32())), "the keys");
    assert!(lost(c.values().and_then(|v| v.read_f32())), "the values");
}

/// A step whose queries hold a NaN, on host operands, while the cache cannot move to the device
/// (an injected out-of-memory on the move back from the `Cpu` policy): the two calls report
/// `rope_pair`'s `NonFinite` first, and so does `append_rope`, not the move's error; the cache
/// is unchanged and moves once memory allows.
#[test]
fn rope_errors_come_before_a_failed_cache_move() {
    use bitnet_wgpu::{DispatchPolicy, InjectedFault};
    let e = gpu_engine_with(EngineOptions::default());
    e.set_dispatch_policy(DispatchPolicy::Cpu).unwrap();
    let mut c = e.kv_cache(4, HK, D).unwrap();
    let mut ops = step(&e, 160, 0, 1);
    let mut q = values(161, HQ * D, -2.0, 2.0);
    q[5] = f32::NAN;
    ops[0] = up(&e, &q, &[1, HQ, D]);
    e.set_dispatch_policy(DispatchPolicy::Auto).unwrap();
    let want = e.rope_pair(&ops[0], &ops[1], &ops[3], THETA).unwrap_err();
    assert!(matches!(want, Error::NonFinite { .. }), "{want:?}");
    e.inject_fault(InjectedFault::OutOfMemory);
    let got = c
        .append_rope(&ops[0], &ops[1], &ops[2], &ops[3], THETA)
        .unwrap_err();
    assert_eq!(got, want);
    assert_eq!(c.len(), 0, "the cache is unchanged");
}
