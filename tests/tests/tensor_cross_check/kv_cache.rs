//! `KvCache`: appends land after what the cache holds, views are prefixes that never change,
//! truncation keeps live views intact (copy on write), errors travel with the appended rows, and
//! the cache follows the engine between device and host. Values are compared bit for bit with
//! the concatenation of what was appended (the cache moves bits).

use bitnet_tests::{gpu_engine_with, lose_device};
use bitnet_wgpu::{DispatchPolicy, Engine, EngineOptions, Error, KvCache, Location};

use super::common::{bits, engine, gpu_error, up, values};

pub(super) const HEADS: usize = 2;
pub(super) const DIM: usize = 5;
const ROW: usize = HEADS * DIM;

/// `t` positions of keys and values from `seed` (distinct per side).
pub(super) fn step(seed: u64, t: usize) -> (Vec<f32>, Vec<f32>) {
    (
        values(seed, t * ROW, -3.0, 3.0),
        values(seed + 1000, t * ROW, -3.0, 3.0),
    )
}

/// Appends host values through tensors of `e` (uploaded: device tensors on a GPU engine).
pub(super) fn append(e: &Engine, c: &mut KvCache, k: &[f32], v: &[f32]) {
    let t = k.len() / ROW;
    let (k, v) = (up(e, k, &[t, HEADS, DIM]), up(e, v, &[t, HEADS, DIM]));
    c.append(&k, &v).expect("append");
}

/// The cache's keys and values read back, with their shape checked.
pub(super) fn read(c: &KvCache) -> (Vec<f32>, Vec<f32>) {
    let (k, v) = (c.keys().expect("keys"), c.values().expect("values"));
    assert_eq!(k.shape(), [c.len(), HEADS, DIM]);
    assert_eq!(v.shape(), [c.len(), HEADS, DIM]);
    (
        k.read_f32().expect("read keys"),
        v.read_f32().expect("read values"),
    )
}

/// Appends of 1, 3 and 2 positions, reading in between, on `e`: every read is the
/// concatenation so far, bit for bit.
fn appends_concatenate(e: &Engine, location: Location) {
    let mut c = e.kv_cache(8, HEADS, DIM).unwrap();
    assert_eq!(c.location(), location);
    let (mut want_k, mut want_v) = (Vec::new(), Vec::new());
    for (seed, t) in [(1, 1), (2, 3), (3, 2)] {
        let (k, v) = step(seed, t);
        append(e, &mut c, &k, &v);
        want_k.extend(&k);
        want_v.extend(&v);
        let (gk, gv) = read(&c);
        assert_eq!(bits(&gk), bits(&want_k), "keys after {} positions", c.len());
        assert_eq!(
            bits(&gv),
            bits(&want_v),
            "values after {} positions",
            c.len()
        );
    }
    assert_eq!((c.len(), c.capacity()), (6, 8));
}

#[test]
fn appends_concatenate_on_the_device_and_on_the_cpu_engine() {
    fn shareable<T: Send + Sync>() {}
    shareable::<KvCache>();
    appends_concatenate(engine(), Location::Device);
    appends_concatenate(&Engine::cpu(), Location::Host);
}

/// A view taken before an append keeps its length and values; after a truncate, the next append
/// must not overwrite what a live view covers (copy on write), and a view dropped before the
/// truncate costs nothing. On the device and on the CPU engine (whose views share the cache's
/// host storage).
#[test]
fn views_never_change() {
    views_never_change_on(engine());
    views_never_change_on(&Engine::cpu());
}

fn views_never_change_on(e: &Engine) {
    let mut c = e.kv_cache(6, HEADS, DIM).unwrap();
    let (k1, v1) = step(10, 3);
    append(e, &mut c, &k1, &v1);
    let early = c.keys().unwrap();
    let (k2, v2) = step(11, 2);
    append(e, &mut c, &k2, &v2);
    assert_eq!(bits(&early.read_f32().unwrap()), bits(&k1));

    // Roll back to one position and append other values while `early` (3 positions) lives.
    let long = c.values().unwrap();
    c.truncate(1);
    assert_eq!(c.len(), 1);
    let (k3, v3) = step(12, 4);
    append(e, &mut c, &k3, &v3);
    assert_eq!(bits(&early.read_f32().unwrap()), bits(&k1), "old view kept");
    assert_eq!(
        bits(&long.read_f32().unwrap()),
        bits(&[v1.clone(), v2].concat()),
        "old view kept"
    );
    let (gk, gv) = read(&c);
    assert_eq!(bits(&gk), bits(&[&k1[..ROW], &k3].concat()));
    assert_eq!(bits(&gv), bits(&[&v1[..ROW], &v3].concat()));

    // No live view: truncate and overwrite in place.
    drop((early, long));
    c.truncate(2);
    let (k4, v4) = step(13, 1);
    append(e, &mut c, &k4, &v4);
    let (gk, _) = read(&c);
    assert_eq!(bits(&gk), bits(&[&k1[..ROW], &k3[..ROW], &k4].concat()));
    c.clear();
    assert!(c.is_empty());
    assert!(matches!(c.keys(), Err(Error::ShapeMismatch { .. })));
}

/// Bad operands are typed errors and leave the cache as it was.
#[test]
fn bad_appends_change_nothing() {
    let e = engine();
    assert!(matches!(
        e.kv_cache(0, HEADS, DIM),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        e.kv_cache(usize::MAX / 2, 4, 4),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut c = e.kv_cache(4, HEADS, DIM).unwrap();
    let (k, v) = step(30, 3);
    append(e, &mut c, &k, &v);
    let (k2, v2) = step(31, 2);
    let full = c.append(&up(e, &k2, &[2, HEADS, DIM]), &up(e, &v2, &[2, HEADS, DIM]));
    assert!(
        matches!(
            full,
            Err(Error::CacheFull {
                held: 3,
                appended: 2,
                capacity: 4,
            })
        ),
        "{full:?}"
    );
    let wrong = [
        (up(e, &k2, &[2, DIM, HEADS]), up(e, &v2, &[2, DIM, HEADS])),
        (up(e, &k2, &[2, ROW]), up(e, &v2, &[2, ROW])),
        (
            up(e, &k2[..ROW], &[1, HEADS, DIM]),
            up(e, &v2, &[2, HEADS, DIM]),
        ),
    ];
    for (k, v) in &wrong {
        assert!(matches!(c.append(k, v), Err(Error::ShapeMismatch { .. })));
    }
    let u = e.upload_u32(&[0; ROW], &[1, HEADS, DIM]).unwrap();
    assert!(matches!(c.append(&u, &u), Err(Error::DTypeMismatch { .. })));
    assert_eq!(c.len(), 3);
    let (gk, gv) = read(&c);
    assert_eq!((bits(&gk), bits(&gv)), (bits(&k), bits(&v)));
}

/// A NaN key produced by a checked op poisons the views covering its rows (the error of the op
/// that met it), and truncating those rows away clears it.
#[test]
fn errors_travel_with_the_appended_rows() {
    let e = gpu_engine_with(EngineOptions::default());
    let mut c = e.kv_cache(4, HEADS, DIM).unwrap();
    let (k, v) = step(40, 1);
    append(&e, &mut c, &k, &v);
    let mut bad = k.clone();
    bad[3] = f32::NAN;
    let bad = e.copy(&up(&e, &bad, &[1, HEADS, DIM])).unwrap();
    c.append(&bad, &up(&e, &v, &[1, HEADS, DIM])).unwrap();
    let err = gpu_error(c.keys());
    assert!(
        matches!(
            err,
            Error::NonFinite {
                op: "copy",
                index: 3,
                ..
            }
        ),
        "{err:?}"
    );
    c.truncate(1);
    let (gk, _) = read(&c);
    assert_eq!(bits(&gk), bits(&k));
}

/// A lost device fails appends and the views' reads with `DeviceLost`, never stale bytes.
#[test]
fn a_lost_device_is_reported() {
    let e = gpu_engine_with(EngineOptions::default());
    let mut c = e.kv_cache(4, HEADS, DIM).unwrap();
    let (k, v) = step(50, 1);
    append(&e, &mut c, &k, &v);
    let view = c.keys().unwrap();
    lose_device(&e);
    assert!(matches!(view.read_f32(), Err(Error::DeviceLost(_))));
    let cpu_k = Engine::cpu().upload_f32(&k, &[1, HEADS, DIM]).unwrap();
    let r = c.append(&cpu_k, &cpu_k);
    assert!(r.is_err(), "{r:?}");
    let r = c.append(
        &e.upload_f32(&k, &[1, HEADS, DIM]).unwrap(),
        &e.upload_f32(&v, &[1, HEADS, DIM]).unwrap(),
    );
    assert!(matches!(r, Err(Error::DeviceLost(_))), "{r:?}");
    assert_eq!(c.len(), 1);
}

/// A truncate frees the buffers a copy on write moved away from once that copy is known good
/// (they are kept to redo a copy lost to a fault): a cache truncated and then left alone held
/// them until its next append or `clear`.
#[test]
fn a_truncate_frees_the_buffers_of_a_finished_copy_on_write() {
    let e = bitnet_tests::gpu_engine();
    let mut c = e.kv_cache(64, HEADS, DIM).unwrap();
    let (k1, v1) = step(70, 4);
    append(&e, &mut c, &k1, &v1);
    // A live view over positions 2..4 makes the next append after the truncate copy the kept
    // positions to fresh buffers.
    let view = c.keys().unwrap();
    c.truncate(2);
    let (k2, v2) = step(71, 1);
    append(&e, &mut c, &k2, &v2);
    let (gk, _) = read(&c);
    assert_eq!(bits(&gk), bits(&[&k1[..2 * ROW], &k2].concat()));
    drop(view);
    e.sync().unwrap();
    let held = e.pool_stats().live_bytes;
    c.truncate(1);
    let freed = held.saturating_sub(e.pool_stats().live_bytes);
    // The old keys and values, 64 positions each.
    assert!(
        freed >= 2 * (64 * ROW * 4) as u64,
        "{freed} bytes freed by the truncate"
    );
    let (gk, _) = read(&c);
    assert_eq!(bits(&gk), bits(&k1[..ROW]));
}

/// With a binding limit of 1 KiB (256 words) a 4-position append of 72-word rows is split, and
/// appends start at words that are not multiples of the 64-word binding alignment.
#[test]
fn appends_split_over_a_small_binding_limit() {
    let e = gpu_engine_with(EngineOptions {
        max_binding_bytes: Some(1 << 10),
        ..EngineOptions::default()
    });
    let (h, d) = (8, 9);
    let mut c = e.kv_cache(20, h, d).unwrap();
    let (mut want_k, mut want_v) = (Vec::new(), Vec::new());
    for (seed, t) in [(60, 1), (61, 4), (62, 7)] {
        let (k, v) = (
            values(seed, t * h * d, -1.0, 1.0),
            values(seed + 9, t * h * d, -1.0, 1.0),
        );
        let (gk, gv) = (
            e.upload_f32(&k, &[t, h, d]).unwrap(),
            e.upload_f32(&v, &[t, h, d]).unwrap(),
        );
        c.append(&gk, &gv).unwrap();
        want_k.extend(k);
        want_v.extend(v);
    }
    // Views this large exceed the binding limit: read them (reads are not bound).
    let (k, v) = (c.keys().unwrap(), c.values().unwrap());
    assert_eq!(bits(&k.read_f32().unwrap()), bits(&want_k));
    assert_eq!(bits(&v.read_f32().unwrap()), bits(&want_v));
}

/// The cache's own views are valid operands: appending them doubles what the cache holds (on
/// the device and on the CPU engine).
#[test]
fn appending_the_caches_own_views_doubles_it() {
    appending_own_views_on(&gpu_engine_with(EngineOptions::default()));
    appending_own_views_on(&Engine::cpu());
}

fn appending_own_views_on(e: &Engine) {
    let mut c = e.kv_cache(8, HEADS, DIM).unwrap();
    let (k, v) = step(80, 2);
    append(e, &mut c, &k, &v);
    let (vk, vv) = (c.keys().unwrap(), c.values().unwrap());
    c.append(&vk, &vv).unwrap();
    assert_eq!(c.len(), 4);
    let (gk, gv) = read(&c);
    assert_eq!(bits(&gk), bits(&[k.clone(), k.clone()].concat()));
    assert_eq!(bits(&gv), bits(&[v.clone(), v.clone()].concat()));
    assert_eq!(
        bits(&vk.read_f32().unwrap()),
        bits(&k),
        "the view is unchanged"
    );
}

/// A cache whose buffer (its capacity) is above the binding limit while its views fit one:
/// attention and RoPE over the views run on the GPU (forced there) and give the bits of the same
/// values uploaded as plain tensors. Binding the whole buffer failed them with `LimitExceeded`
/// even at one position.
#[test]
fn views_of_a_cache_above_the_binding_limit_bind_what_they_hold() {
    let e = gpu_engine_with(EngineOptions {
        max_binding_bytes: Some(1 << 10),
        dispatch: DispatchPolicy::Gpu,
        ..EngineOptions::default()
    });
    // 256 bytes a position on each side, 20 positions: a 5 KiB buffer over a 1 KiB limit.
    let (h, d) = (8, 8);
    let mut c = e.kv_cache(20, h, d).unwrap();
    let (k, v) = (
        values(70, 2 * h * d, -1.0, 1.0),
        values(71, 2 * h * d, -1.0, 1.0),
    );
    c.append(
        &e.upload_f32(&k, &[2, h, d]).unwrap(),
        &e.upload_f32(&v, &[2, h, d]).unwrap(),
    )
    .unwrap();
    let q = e
        .upload_f32(&values(72, h * d, -1.0, 1.0), &[1, h, d])
        .unwrap();
    let (kv, vv) = (c.keys().unwrap(), c.values().unwrap());
    let (kp, vp) = (
        e.upload_f32(&k, &[2, h, d]).unwrap(),
        e.upload_f32(&v, &[2, h, d]).unwrap(),
    );
    let through_views = e.attention(&q, &kv, &vv, 0.35, true).expect("views bind");
    let plain = e.attention(&q, &kp, &vp, 0.35, true).unwrap();
    assert_eq!(
        bits(&through_views.read_f32().unwrap()),
        bits(&plain.read_f32().unwrap())
    );
    let positions = e.upload_u32(&[5, 9], &[2]).unwrap();
    let (rq, rk) = e
        .rope_pair(&vv, &kv, &positions, 10000.0)
        .expect("views bind");
    let (pq, pk) = e.rope_pair(&vp, &kp, &positions, 10000.0).unwrap();
    assert_eq!(bits(&rq.read_f32().unwrap()), bits(&pq.read_f32().unwrap()));
    assert_eq!(bits(&rk.read_f32().unwrap()), bits(&pk.read_f32().unwrap()));
}
