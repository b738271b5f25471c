//! `KvCache::append` writes keys and values in one dispatch (`util_copy_blocks_pair.wgsl`) when
//! both copies fit one launch and no operand shares a buffer with the cache, and one copy after
//! the other otherwise: the launches each append takes, the values bit for bit either way, and
//! the lineage of the fused launch (an error in either operand reaches both sides' views).

use bitnet_tests::gpu_engine_with;
use bitnet_wgpu::{Engine, EngineOptions, Error, KvCache, Tensor};

use super::common::{bits, gpu_error, values};

/// Kernel launches recorded on `e` (pipeline lookups: one per launch, nothing else here).
fn lookups(e: &Engine) -> u64 {
    e.pipeline_stats().compiled + e.pipeline_stats().hits
}

/// Appends `k`, `v` (already device tensors) and returns the launches the append took.
fn counted_append(e: &Engine, c: &mut KvCache, k: &Tensor, v: &Tensor) -> u64 {
    let before = lookups(e);
    c.append(k, v).expect("append");
    lookups(e) - before
}

/// `t` positions of `[h, d]` keys and values from `seed`, host values and device tensors.
fn operands(e: &Engine, seed: u64, t: usize, h: usize, d: usize) -> ([Vec<f32>; 2], [Tensor; 2]) {
    let (k, v) = (
        values(seed, t * h * d, -2.0, 2.0),
        values(seed + 500, t * h * d, -2.0, 2.0),
    );
    let up = |x: &[f32]| e.upload_f32(x, &[t, h, d]).unwrap();
    let tensors = [up(&k), up(&v)];
    ([k, v], tensors)
}

fn read_both(c: &KvCache) -> (Vec<u32>, Vec<u32>) {
    (
        bits(&c.keys().unwrap().read_f32().unwrap()),
        bits(&c.values().unwrap().read_f32().unwrap()),
    )
}

/// One launch per append while both sides fit a binding; over a 1 KiB binding limit an append
/// too long for one binding goes side by side in pieces. The cache holds the concatenation of
/// what was appended either way.
#[test]
fn an_append_is_one_launch_unless_split() {
    let (h, d) = (8, 9);
    for (limit, appends) in [
        (None, &[(1, 1), (3, 1), (7, 1)][..]),
        // 72-word rows, 256-word bindings: one position fits, seven (504 words) do not.
        (Some(1 << 10), &[(1, 1), (7, 0), (1, 1)][..]),
    ] {
        let e = gpu_engine_with(EngineOptions {
            max_binding_bytes: limit,
            ..EngineOptions::default()
        });
        let mut c = e.kv_cache(16, h, d).unwrap();
        let (mut want_k, mut want_v) = (Vec::new(), Vec::new());
        for (i, &(t, launches)) in appends.iter().enumerate() {
            let ([k, v], [gk, gv]) = operands(&e, 600 + i as u64, t, h, d);
            let took = counted_append(&e, &mut c, &gk, &gv);
            if launches == 1 {
                assert_eq!(took, 1, "{limit:?}: {t} positions in one launch");
            } else {
                assert!(took > 2, "{limit:?}: {t} positions split, {took} launches");
            }
            want_k.extend(k);
            want_v.extend(v);
            assert_eq!(read_both(&c), (bits(&want_k), bits(&want_v)), "{limit:?}");
        }
    }
}

/// The cache's own views appended the other way round (values as keys, keys as values): each
/// source is the other side's destination, so the copies cannot share a dispatch and run one
/// after the other — keys first, reading the values view, which the keys copy does not touch.
#[test]
fn crossed_views_run_one_copy_after_the_other() {
    let e = gpu_engine_with(EngineOptions::default());
    let (h, d) = (2, 5);
    let mut c = e.kv_cache(8, h, d).unwrap();
    let ([k, v], [gk, gv]) = operands(&e, 700, 2, h, d);
    c.append(&gk, &gv).unwrap();
    let (vk, vv) = (c.keys().unwrap(), c.values().unwrap());
    assert_eq!(counted_append(&e, &mut c, &vv, &vk), 2);
    let want = (
        bits(&[k.clone(), v.clone()].concat()),
        bits(&[v.clone(), k.clone()].concat()),
    );
    assert_eq!(read_both(&c), want);
    // The keys view on both sides: staged for the keys (it is their own buffer; no copy on
    // write, the view covers only what the cache holds), then two copies (the values copy
    // would read the buffer the keys copy writes): three launches.
    let vk = c.keys().unwrap();
    assert_eq!(counted_append(&e, &mut c, &vk, &vk), 3);
    let kv = [k.clone(), v.clone()].concat();
    let want = (
        bits(&[kv.clone(), kv.clone()].concat()),
        bits(&[v.clone(), k.clone(), kv].concat()),
    );
    assert_eq!(read_both(&c), want);
}

/// One launch writes both sides, so a NaN met in the values (by the checked op that produced
/// them) poisons the keys view too — as before the fusion, where an append's rows carried
/// both operands' lineage — and truncating the append away clears both.
#[test]
fn an_error_in_either_operand_reaches_both_views() {
    let e = gpu_engine_with(EngineOptions::default());
    let (h, d) = (2, 5);
    let mut c = e.kv_cache(4, h, d).unwrap();
    let ([k, v], [gk, gv]) = operands(&e, 800, 1, h, d);
    c.append(&gk, &gv).unwrap();
    let ([_, v2], [gk2, _]) = operands(&e, 801, 1, h, d);
    let mut bad = v2.clone();
    bad[7] = f32::INFINITY;
    let bad = e.copy(&e.upload_f32(&bad, &[1, h, d]).unwrap()).unwrap();
    assert_eq!(counted_append(&e, &mut c, &gk2, &bad), 1);
    for err in [gpu_error(c.keys()), gpu_error(c.values())] {
        assert!(
            matches!(
                err,
                Error::NonFinite {
                    op: "copy",
                    index: 7,
                    ..
                }
            ),
            "{err:?}"
        );
    }
    c.truncate(1);
    assert_eq!(read_both(&c), (bits(&k), bits(&v)));
}
