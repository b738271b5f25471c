//! Unit tests of the buffer pool: size classes, sizes past every limit, what `trim_pool` gives back.

use super::{BufferKind, size_class};
use crate::error::Error;

#[test]
fn size_classes_are_quarter_steps_with_bounded_waste() {
    assert_eq!(size_class(1), 256);
    assert_eq!(size_class(256), 256);
    assert_eq!(size_class(257), 320);
    assert_eq!(size_class(512), 512);
    assert_eq!(size_class(513), 640);
    assert_eq!(size_class(1 << 20), 1 << 20);
    assert_eq!(size_class((1 << 20) + 1), (1 << 20) + (1 << 18));
    for b in [300u64, 1000, 4097, 123_457, 10_000_000, 3_000_000_000] {
        let c = size_class(b);
        assert!(c >= b && (c as f64) < b as f64 * 1.25 + 1.0, "{b} -> {c}");
    }
}

/// Sizes that cannot even be rounded to whole words are `LimitExceeded`, not a wrapped (tiny)
/// buffer or a debug-build panic; their class saturates.
#[test]
fn sizes_past_u64_rounding_are_limit_errors() {
    assert_eq!(size_class(u64::MAX), u64::MAX);
    let e = crate::test_gpu::gpu();
    let pool = &e.gpu_context().unwrap().pool;
    for bytes in [u64::MAX, u64::MAX - 2] {
        let got = pool.alloc(BufferKind::Storage, bytes, "test");
        assert!(
            matches!(
                got,
                Err(Error::LimitExceeded {
                    limit: "max_buffer_size",
                    ..
                })
            ),
            "{bytes}"
        );
    }
}

/// A free buffer is reused lowest creation number first, whatever order buffers were released
/// in: a repeated workload gets the same buffer at the same allocation every time (so its bind
/// groups repeat), where most-recently-released-first drifts with the release order.
#[test]
fn free_buffers_are_reused_in_creation_order_not_release_order() {
    let e = crate::test_gpu::gpu();
    let pool = &e.gpu_context().unwrap().pool;
    let alloc = || pool.alloc(BufferKind::Storage, 4000, "test").unwrap();
    let (a, b, c) = (alloc(), alloc(), alloc());
    let ids = [a.id, b.id, c.id];
    assert!(ids[0] < ids[1] && ids[1] < ids[2], "{ids:?}");
    // Released c, a, b: handed out again as a, b, c.
    drop(c);
    drop(a);
    drop(b);
    let again = [alloc().id, alloc().id, alloc().id];
    assert_eq!(again, ids);
}

/// `trim_pool` also drops RoPE's cached tables: they counted as live tensor bytes after every
/// tensor of the caller's was dropped, and no call gave them back.
#[test]
fn trim_pool_gives_back_the_rope_tables() {
    let e = crate::test_gpu::gpu();
    let x = e.upload_f32(&[0.5; 2 * 8], &[2, 1, 8]).unwrap();
    let p = e.upload_u32(&[0, 1], &[2]).unwrap();
    e.rope(&x, &p, 10_000.0).unwrap().read_f32().unwrap();
    drop((x, p));
    e.sync().unwrap();
    assert!(e.pool_stats().live_bytes > 0, "the table is cached");
    e.trim_pool();
    let s = e.pool_stats();
    assert_eq!((s.live_bytes, s.live_buffers), (0, 0), "{s:?}");
}

/// Making room for a new buffer evicts the free buffer released longest ago, across size
/// classes: the one a repeated workload is least likely to ask for again. Two free buffers of
/// different classes, one eviction: the later-released one must still be there (a hit).
#[test]
fn making_room_evicts_the_least_recently_released_class_first() {
    let e = crate::test_gpu::gpu();
    let pool = &e.gpu_context().unwrap().pool;
    pool.trim();
    let alloc = |bytes| pool.alloc(BufferKind::Storage, bytes, "test").unwrap();
    let (older, newer) = (alloc(40 << 10), alloc(48 << 10));
    drop(older);
    drop(newer);
    let before = pool.stats();
    // 16 KiB in use allows 16 + 64 KiB allocated: one of the two (88 KiB) must go.
    let _room = alloc(16 << 10);
    let evicted = before.allocated_bytes + (16 << 10) - pool.stats().allocated_bytes;
    assert_eq!(evicted, 40 << 10, "{:?}", pool.stats());
    let _again = alloc(48 << 10);
    assert_eq!(
        pool.stats().hits,
        before.hits + 1,
        "the later release was kept"
    );
}

/// With a free cap, a released buffer past it goes at once (not at the next allocation, which
/// may never come), and resetting the peaks starts them from what is allocated and live now.
#[test]
fn a_release_past_the_free_cap_is_evicted_and_peaks_reset_to_now() {
    let e = crate::test_gpu::gpu();
    let pool = &e.gpu_context().unwrap().pool;
    pool.trim();
    let kept = pool.alloc(BufferKind::Storage, 8 << 10, "test").unwrap();
    let base = pool.stats();
    pool.set_free_cap(0);
    drop(pool.alloc(BufferKind::Storage, 64 << 10, "test").unwrap());
    let s = pool.stats();
    assert_eq!(s.allocated_bytes, base.allocated_bytes, "{s:?}");
    assert_eq!(s.peak_allocated_bytes, base.allocated_bytes + (64 << 10));
    pool.reset_peaks();
    let s = pool.stats();
    assert_eq!(
        (s.peak_allocated_bytes, s.peak_live_bytes),
        (s.allocated_bytes, s.live_bytes),
        "{s:?}"
    );
    assert_eq!(s.live_bytes, kept.bytes());
}
