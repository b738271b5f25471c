//! Unit tests of fates and lineages: launch order, grouped chunks, status slots, read claims.

use super::*;
use crate::lineage::{ancestry_of, merge};

fn fates(seqs: &[u64], pool: &Arc<SlotPool>) -> Vec<Arc<Fate>> {
    seqs.iter().map(|&s| Fate::new(s, None, pool)).collect()
}

#[test]
fn merge_keeps_launch_order_without_duplicates() {
    let pool = Arc::new(SlotPool::new());
    let all = fates(&[1, 2, 3, 4, 5], &pool);
    let a = vec![all[0].clone(), all[2].clone(), all[3].clone()];
    let b = vec![all[1].clone(), all[2].clone(), all[4].clone()];
    let m: Vec<u64> = merge(&a, &b).iter().map(|f| f.seq).collect();
    assert_eq!(m, vec![1, 2, 3, 4, 5]);
}

#[test]
fn the_earliest_error_wins_and_clean_fates_are_pruned() {
    let pool = Arc::new(SlotPool::new());
    let f = fates(&[1, 2, 3], &pool);
    let lin = Lineage::default();
    lin.extend(&f);
    f[0].resolve(None);
    let late = Error::Map("late".into());
    let early = Error::Map("early".into());
    f[2].resolve(Some(late));
    assert_eq!(lin.snapshot().len(), 2);
    assert_eq!(lin.known_error(), Some(Error::Map("late".into())));
    f[1].resolve(Some(early.clone()));
    assert_eq!(lin.known_error(), Some(early));
}

/// A chain of launches, each reading the one before, as nodes sharing their ancestry.
fn chain(seqs: std::ops::Range<u64>, pool: &Arc<SlotPool>) -> (Lineage, Vec<Arc<Fate>>) {
    let all = fates(&seqs.collect::<Vec<_>>(), pool);
    let head = Lineage::default();
    for f in &all {
        let ancestry = ancestry_of(&[&head]).expect("no error yet");
        let node = ancestry.with(Arc::clone(f));
        *head.nodes() = vec![node];
    }
    (head, all)
}

/// Recording shares the inputs' nodes (a launch adds one node however long the chain), a walk
/// of 100 000 launches does not overflow the stack, and once everything is clean the walk
/// leaves nothing: the last node is marked clean and the chain behind it is dropped.
#[test]
fn a_long_chain_is_shared_and_pruned_once_clean() {
    let pool = Arc::new(SlotPool::new());
    let (head, all) = chain(0..100_000, &pool);
    assert_eq!(head.nodes().len(), 1);
    assert_eq!(head.snapshot().len(), all.len());
    for f in all.iter().filter(|f| f.seq != 500) {
        f.resolve(None);
    }
    let left: Vec<u64> = head.snapshot().iter().map(|f| f.seq).collect();
    assert_eq!(left, vec![500]);
    all[500].resolve(None);
    assert!(head.snapshot().is_empty());
    assert!(head.is_settled());
    assert!(head.nodes().is_empty());
}

/// A chain never walked (nothing read it) is dropped without recursion: 200 000 nested drops
/// overflowed a test thread's stack.
#[test]
fn a_long_unread_chain_drops_without_recursion() {
    let pool = Arc::new(SlotPool::new());
    let (head, all) = chain(0..200_000, &pool);
    drop(all);
    drop(head);
}

/// A failure deep in an input's ancestry fails the next launch at once (the failure count moved,
/// so the ancestry is walked again), and the earliest error wins.
#[test]
fn a_failure_deep_in_the_ancestry_fails_the_next_launch() {
    let pool = Arc::new(SlotPool::new());
    let (head, all) = chain(0..1000, &pool);
    assert!(ancestry_of(&[&head]).is_ok());
    all[700].resolve(Some(Error::Map("late".into())));
    all[10].resolve(Some(Error::Map("early".into())));
    assert_eq!(
        ancestry_of(&[&head]).err(),
        Some(Error::Map("early".into()))
    );
    // An unrelated chain still records.
    let (other, _keep) = chain(5000..5010, &pool);
    assert!(ancestry_of(&[&other]).is_ok());
}

#[test]
fn chunks_of_one_call_report_as_one_launch() {
    let pool = Arc::new(SlotPool::new());
    let check = NonFiniteCheck::tensors("op", ["a", "b", "output", ""]);
    let flag = |tensor, index| Error::NonFinite {
        op: "op",
        tensor,
        index,
    };
    let chunks: Vec<_> = (1..4)
        .map(|s| Fate::in_group(s, 0, Some(check), &pool))
        .collect();
    let lin = Lineage::default();
    lin.extend(&chunks);
    chunks[0].resolve(Some(flag("output", 3)));
    assert_eq!(
        lin.known_error(),
        None,
        "a chunk still pending may hold an input flag"
    );
    chunks[1].resolve(Some(flag("b", 9)));
    chunks[2].resolve(Some(flag("b", 7)));
    assert_eq!(lin.known_error(), Some(flag("b", 7)));
    // A later launch of its own does not join the group, and loses to it.
    let later = Fate::new(5, Some(check), &pool);
    later.resolve(Some(flag("a", 0)));
    lin.extend(&[later]);
    assert_eq!(lin.known_error(), Some(flag("b", 7)));
}

#[test]
fn slots_return_to_the_pool_clean_or_dirty() {
    let pool = Arc::new(SlotPool::new());
    pool.release_clean(pool.take_dirty()); // as the engine's first flush does
    let (clean, dirty) = pool.free();
    let f = Fate::new(1, None, &pool);
    let s = pool.take().unwrap();
    f.assign(s);
    assert_eq!(pool.free(), (clean - 1, dirty));
    drop(f); // unread: back dirty, never handed out before its reset
    assert_eq!(pool.free(), (clean - 1, dirty + 1));
    let g = Fate::new(2, None, &pool);
    let t = pool.take().unwrap();
    assert_ne!(t, s, "dirty slots wait for their reset");
    g.assign(t);
    let (tx, rx) = crate::oneshot::channel();
    assert_eq!(g.begin_read(&rx), Some(t));
    let r = StatusResolver::new(vec![g.clone()], tx, &rx, 16);
    drop(r); // lost read-back: the fate fails instead of hanging its readers
    assert!(matches!(g.outcome(), Outcome::Known(Some(Error::Map(_)))));
    assert_eq!(
        rx.recv_timeout(std::time::Duration::ZERO),
        Err(crate::oneshot::RecvTimeoutError::Disconnected),
        "waiters wake up"
    );
}

/// A read whose copy-out failed (its claim reverted, `batch.rs`) still resolves its fates when
/// its staging buffer — never written — is mapped: that must not settle a later read's claim
/// of the same fate, with bytes that are not the slot's.
#[test]
fn a_failed_copy_out_does_not_resolve_a_later_claim() {
    let pool = Arc::new(SlotPool::new());
    pool.release_clean(pool.take_dirty());
    let f = Fate::new(1, None, &pool);
    let s = pool.take().unwrap();
    f.assign(s);
    let (tx, rx) = crate::oneshot::channel();
    assert_eq!(f.begin_read(&rx), Some(s));
    let failed = StatusResolver::new(vec![f.clone()], tx, &rx, 16);
    f.revert_read(s);
    let (tx2, rx2) = crate::oneshot::channel();
    assert_eq!(f.begin_read(&rx2), Some(s), "a later read claims the slot");
    failed.resolve(&[0; 16]);
    assert!(
        matches!(f.outcome(), Outcome::Reading(_)),
        "the later claim stands"
    );
    let later = StatusResolver::new(vec![f.clone()], tx2, &rx2, 16);
    later.resolve(&[0; 16]);
    assert!(matches!(f.outcome(), Outcome::Known(None)));
}

/// A read claimed the slot, then its launch and its copy-out both failed in one batch (a
/// rejected batch re-submitted command by command, `batch.rs`): the launch's failure resolves
/// the fate without releasing the claimed slot, and the copy-out's revert gives it back — before,
/// one slot was lost to the pool for good each time.
#[test]
fn a_copy_out_failing_after_its_launch_returns_the_slot() {
    let pool = Arc::new(SlotPool::new());
    pool.release_clean(pool.take_dirty());
    let (clean, dirty) = pool.free();
    let f = Fate::new(1, None, &pool);
    let s = pool.take().unwrap();
    f.assign(s);
    let (_tx, rx) = crate::oneshot::channel::<()>();
    assert_eq!(f.begin_read(&rx), Some(s));
    let oom = Error::OutOfMemory {
        context: "test".into(),
    };
    f.resolve(Some(oom.clone()));
    assert_eq!(pool.free(), (clean - 1, dirty), "claimed by the copy-out");
    f.revert_read(s);
    assert_eq!(pool.free(), (clean - 1, dirty + 1), "back dirty");
    assert!(matches!(
        f.outcome(),
        Outcome::Known(Some(Error::OutOfMemory { .. }))
    ));
    drop(f);
    assert_eq!(pool.free(), (clean - 1, dirty + 1), "released once");
}

/// A read that waited for another read's copy-out, which failed, posts a copy-out of its own; a
/// caller that drops that read meanwhile (a timeout in a `select!`) must not take the fate's
/// flag down with it: the copy-out still runs (the slot is reset), so its status must still be
/// decoded into the fate. Lost, the tensor would read as "status read-back was lost" for good.
#[test]
fn a_read_dropped_while_its_copy_out_is_queued_keeps_the_flag() {
    use std::task::{Context, Poll, Waker};
    let (e, y, fate) = crate::test_gpu::flagged_copy();
    let g = e.gpu_context().unwrap();
    // Another read claims the slot; this read waits for it.
    let (other, claim) = crate::oneshot::channel();
    let slot = fate.begin_read(&claim).expect("pending with a slot");
    let lineage = vec![Arc::clone(&fate)];
    let mut read = Box::pin(crate::transfer::resolve(g, &lineage));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(read.as_mut().poll(&mut cx), Poll::Pending));
    // The submission thread is held, so this read's own copy-out stays queued behind it.
    let (release, hold) = flume::bounded::<()>(0);
    g.scheduler
        .post(Box::new(move |_, _| {
            let _ = hold.recv();
        }))
        .unwrap();
    fate.revert_read(slot);
    drop(other);
    assert!(matches!(read.as_mut().poll(&mut cx), Poll::Pending));
    drop(read);
    drop(release);
    let want = Error::NonFinite {
        op: "copy",
        tensor: "x",
        index: 1,
    };
    assert_eq!(y.read_f32().unwrap_err(), want);
}

/// A walk that finds a chunk's error while another chunk of its op call is still pending knows
/// no error yet (`first_error`), but the error exists: the walk must not mark the ancestry
/// verified, or the next launch — once the last chunk resolves clean, which does not move the
/// failure count — skips the walk and records on a poisoned input.
#[test]
fn a_group_error_completed_by_a_clean_chunk_fails_the_next_launch() {
    let pool = Arc::new(SlotPool::new());
    let chunks: Vec<_> = (1..3).map(|s| Fate::in_group(s, 1, None, &pool)).collect();
    let lin = Lineage::default();
    lin.extend(&chunks);
    chunks[0].resolve(Some(Error::Map("chunk".into())));
    assert!(ancestry_of(&[&lin]).is_ok(), "the group is not known yet");
    chunks[1].resolve(None);
    assert_eq!(ancestry_of(&[&lin]).err(), Some(Error::Map("chunk".into())));
}

/// A pending launch resolved without a read (its submission failed) gives its status slot back
/// dirty: kept, every failed launch would take one of the 1024 slots out of the pool for good.
#[test]
fn a_launch_resolved_unread_gives_its_slot_back_dirty() {
    let pool = Arc::new(SlotPool::new());
    pool.release_clean(pool.take_dirty());
    let (clean, dirty) = pool.free();
    let f = Fate::new(1, None, &pool);
    f.assign(pool.take().unwrap());
    f.resolve(Some(Error::Map("the batch failed".into())));
    assert_eq!(pool.free(), (clean - 1, dirty + 1));
    drop(f);
    assert_eq!(
        pool.free(),
        (clean - 1, dirty + 1),
        "returned once, not twice"
    );
}

/// A node whose own launch resolved clean is not pruned while a launch below it is pending: a
/// read that walked it then must still report that launch's error once it is known.
#[test]
fn a_clean_node_over_a_pending_ancestry_still_reports_it() {
    let pool = Arc::new(SlotPool::new());
    let (head, all) = chain(0..3, &pool);
    all[2].resolve(None);
    all[1].resolve(None);
    let left: Vec<u64> = head.snapshot().iter().map(|f| f.seq).collect();
    assert_eq!(left, vec![0]);
    all[0].resolve(Some(Error::Map("first".into())));
    assert_eq!(head.known_error(), Some(Error::Map("first".into())));
}

/// A lineage's fates come out in launch order whatever order its nodes were added in (a view
/// shares an older tensor's nodes after its own, a launch lists its inputs as the caller
/// passed them), so the earliest failure is the one reported.
#[test]
fn nodes_added_out_of_launch_order_report_the_earliest_failure() {
    let pool = Arc::new(SlotPool::new());
    let f = fates(&[3, 9], &pool);
    let lin = Lineage::default();
    lin.extend(&f[1..]);
    lin.extend(&f[..1]);
    f[1].resolve(Some(Error::Map("late".into())));
    f[0].resolve(Some(Error::Map("early".into())));
    let seqs: Vec<u64> = lin.snapshot().iter().map(|f| f.seq).collect();
    assert_eq!(seqs, vec![3, 9]);
    assert_eq!(lin.known_error(), Some(Error::Map("early".into())));
}
