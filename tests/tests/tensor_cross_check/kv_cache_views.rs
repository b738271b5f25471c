//! `KvCache` views across a truncate, at the edge of the copy on write: a live view reaching
//! exactly one position past the truncated length (kept in its own module: `kv_cache.rs` holds
//! the cache's other behaviour and is long enough).

use bitnet_wgpu::{Engine, KvCache};

use super::common::{bits, engine, up, values};

const HEADS: usize = 2;
const DIM: usize = 4;
const ROW: usize = HEADS * DIM;

/// Appends `t` positions of keys from `seed` (values from `seed + 1`) through tensors of `e`;
/// returns the keys appended.
fn append(e: &Engine, c: &mut KvCache, seed: u64, t: usize) -> Vec<f32> {
    let (k, v) = (
        values(seed, t * ROW, -3.0, 3.0),
        values(seed + 1, t * ROW, -3.0, 3.0),
    );
    let shape = [t, HEADS, DIM];
    c.append(&up(e, &k, &shape), &up(e, &v, &shape))
        .expect("append");
    k
}

/// A view of 3 positions, a truncate to 2 and an append of 1: the view covers just one position
/// past the cache's length, and that position is the one the append writes. The copy on write
/// must still happen (the boundary case of "a live view covers positions from `len` on"): the
/// view keeps the 3 positions it was taken with, bit for bit, and the cache reads the 2 kept
/// positions and the new one. On the device and on the CPU engine.
#[test]
fn a_view_one_position_past_a_truncate_keeps_its_values() {
    for e in [engine(), &Engine::cpu()] {
        let mut c = e.kv_cache(8, HEADS, DIM).unwrap();
        let first = append(e, &mut c, 30, 3);
        let view = c.keys().unwrap();
        c.truncate(2);
        let next = append(e, &mut c, 40, 1);
        assert_eq!(c.len(), 3);
        assert_eq!(
            bits(&view.read_f32().unwrap()),
            bits(&first),
            "the view kept"
        );
        let keys = c.keys().unwrap().read_f32().unwrap();
        assert_eq!(bits(&keys), bits(&[&first[..2 * ROW], &next].concat()));
    }
}
