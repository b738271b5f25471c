//! `KvCache` under transient GPU faults in its own copies: the copy on write after a truncate
//! (a view of the dropped positions alive) failing must not lose the positions it kept.

use bitnet_tests::gpu_engine_with;
use bitnet_wgpu::{Engine, EngineOptions, Error, InjectedFault, KvCache, Tensor};

use super::common::{bits, values};

/// An engine that flushes only when asked (reads, uploads), and a 16-position cache of
/// `[1, 4]` rows on it.
fn engine_and_cache() -> (Engine, KvCache) {
    let e = gpu_engine_with(EngineOptions {
        idle_flush: None,
        ..Default::default()
    });
    let c = e.kv_cache(16, 1, 4).unwrap();
    (e, c)
}

/// `v` as `[t, 1, 4]` rows on `e`.
fn rows(e: &Engine, v: &[f32]) -> Tensor {
    e.upload_f32(v, &[v.len() / 4, 1, 4]).unwrap()
}

/// [`engine_and_cache`] holding 4 positions (keys, values), and a live view of their keys.
fn four_positions_and_a_view() -> (Engine, KvCache, Vec<f32>, Vec<f32>, Tensor) {
    let (e, mut c) = engine_and_cache();
    let (k, v) = (values(1, 16, -2.0, 2.0), values(2, 16, -2.0, 2.0));
    c.append(&rows(&e, &k), &rows(&e, &v)).unwrap();
    let old = c.keys().unwrap();
    assert_eq!(bits(&old.read_f32().unwrap()), bits(&k));
    (e, c, k, v, old)
}

/// A copy on write lost to a transient fault (a failed submission) is redone from the buffers
/// it copied at the next append: the kept positions read back intact afterwards. They read the
/// fault for good before (`truncate` keeps them, so only `clear` got the cache going again),
/// though their bytes were intact in the old buffers the live view still held.
#[test]
fn a_failed_copy_on_write_is_redone_at_the_next_append() {
    let (e, mut c, k, v, old) = four_positions_and_a_view();
    let up = |v: &[f32]| rows(&e, v);
    c.truncate(2);
    // The next dispatch is the copy on write (the view `old` covers the dropped positions).
    e.inject_fault(InjectedFault::Validation);
    let (k1, v1) = (values(3, 4, -2.0, 2.0), values(4, 4, -2.0, 2.0));
    c.append(&up(&k1), &up(&v1)).unwrap();
    let got = c.keys().unwrap().read_f32();
    assert!(matches!(got, Err(Error::Validation { .. })), "{got:?}");
    // Roll the failed step back and append it again: the copy is redone.
    c.truncate(2);
    c.append(&up(&k1), &up(&v1)).unwrap();
    let keys = c.keys().unwrap().read_f32().unwrap();
    let values_ = c.values().unwrap().read_f32().unwrap();
    assert_eq!(bits(&keys), bits(&[&k[..8], &k1[..]].concat()));
    assert_eq!(bits(&values_), bits(&[&v[..8], &v1[..]].concat()));
    assert_eq!(
        bits(&old.read_f32().unwrap()),
        bits(&k),
        "the old view keeps its values"
    );
}

/// A truncate below the positions a failed copy on write moved, then appends, all before the
/// failure is known: the redo covers only the positions still held from before, never those
/// appended after the truncate. It wrote the old rows over them with a lineage that read good
/// (silently stale values); now they read their own append's error or value.
#[test]
fn a_redo_never_writes_over_positions_appended_after_a_truncate() {
    let (e, mut c, k, _, _view) = four_positions_and_a_view();
    let up = |v: &[f32]| rows(&e, v);
    c.truncate(2);
    let steps: Vec<(Vec<f32>, Vec<f32>)> = (0..3)
        .map(|i| {
            (
                values(3 + 2 * i, 4, -2.0, 2.0),
                values(4 + 2 * i, 4, -2.0, 2.0),
            )
        })
        .collect();
    // Uploads are sync points: every operand is made before the fault.
    let t: Vec<_> = steps.iter().map(|(k, v)| (up(k), up(v))).collect();
    e.inject_fault(InjectedFault::Validation);
    c.append(&t[0].0, &t[0].1).unwrap(); // the copy on write of 2 positions, then one more
    c.truncate(1);
    c.append(&t[1].0, &t[1].1).unwrap(); // position 1, in the same failed batch
    assert!(c.keys().unwrap().read_f32().is_err(), "the batch failed");
    c.append(&t[2].0, &t[2].1).unwrap(); // the redo, then position 2
    match c.keys().unwrap().read_f32() {
        // Position 1's append failed with the batch: its error, never the old row.
        Err(err) => assert!(matches!(err, Error::Validation { .. }), "{err:?}"),
        Ok(keys) => assert_eq!(
            bits(&keys),
            bits(&[&k[..4], &steps[1].0[..], &steps[2].0[..]].concat())
        ),
    }
}

/// A truncate below an append that failed drops its error, with or without a copy on write in
/// between: the copy on write merged every held position's lineage into one segment from 0, so
/// the positions appended in good batches read the failed append's error until `clear`.
#[test]
fn a_truncate_below_a_failed_append_drops_its_error_after_a_copy_on_write() {
    for copy_on_write in [false, true] {
        let (e, mut c) = engine_and_cache();
        let up = |v: &[f32]| rows(&e, v);
        let (k0, v0) = (values(1, 20, -2.0, 2.0), values(2, 20, -2.0, 2.0));
        c.append(&up(&k0), &up(&v0)).unwrap(); // positions 0..5, good
        assert_eq!(bits(&c.keys().unwrap().read_f32().unwrap()), bits(&k0));
        let failed = (up(&values(3, 12, -2.0, 2.0)), up(&values(4, 12, -2.0, 2.0)));
        let more = (up(&values(5, 4, -2.0, 2.0)), up(&values(6, 4, -2.0, 2.0)));
        e.inject_fault(InjectedFault::Validation);
        c.append(&failed.0, &failed.1).unwrap(); // positions 5..8, a failed batch
        assert!(c.keys().unwrap().read_f32().is_err());
        // A live view of 0..8 makes the next append copy on write.
        let view = copy_on_write.then(|| c.keys().unwrap());
        c.truncate(6);
        c.append(&more.0, &more.1).unwrap();
        c.truncate(5);
        let got = c.keys().unwrap().read_f32();
        let got = got.unwrap_or_else(|e| panic!("copy on write {copy_on_write}: {e}"));
        assert_eq!(bits(&got), bits(&k0), "copy on write {copy_on_write}");
        let (k2, v2) = (values(7, 4, -2.0, 2.0), values(8, 4, -2.0, 2.0));
        c.append(&up(&k2), &up(&v2)).unwrap();
        let got = c.keys().unwrap().read_f32().unwrap();
        assert_eq!(bits(&got), bits(&[&k0[..], &k2[..]].concat()));
        drop(view);
    }
}
