//! Unit tests of `status.rs`: the slot pool, and how status words decode.

use super::*;

#[test]
fn slots_start_dirty_and_only_clean_ones_are_handed_out_lowest_first() {
    let pool = SlotPool::new();
    assert_eq!(pool.take(), None, "new slot buffers are zeroed, not clean");
    assert_eq!(pool.free(), (0, STATUS_SLOTS as usize));
    pool.release_clean(pool.take_dirty());
    assert_eq!(pool.take(), Some(0));
    assert_eq!(pool.take(), Some(1));
    pool.release_dirty(0);
    assert_eq!(pool.take(), Some(2), "a dirty slot is never handed out");
    let dirty = pool.take_dirty();
    assert_eq!(dirty, vec![0]);
    assert!(!pool.has_dirty());
    pool.release_clean(dirty);
    assert_eq!(
        pool.take(),
        Some(0),
        "clean again once its reset was submitted"
    );
}

/// Resets wait until a quarter of the slots are dirty or the clean ones run low, and then take
/// every dirty slot; a new pool (every slot dirty) is due at once.
#[test]
fn resets_are_due_once_enough_slots_wait() {
    let pool = SlotPool::new();
    let all = pool.take_dirty_if_due();
    assert_eq!(
        all.len(),
        STATUS_SLOTS as usize,
        "a new pool resets at its first flush"
    );
    pool.release_clean(all);
    let taken: Vec<u32> = (0..RESET_BATCH).map(|_| pool.take().unwrap()).collect();
    for &s in &taken[..RESET_BATCH - 1] {
        pool.release_dirty(s);
    }
    assert!(
        pool.take_dirty_if_due().is_empty(),
        "one short of the batch"
    );
    pool.release_dirty(taken[RESET_BATCH - 1]);
    assert_eq!(pool.take_dirty_if_due().len(), RESET_BATCH);
    assert!(!pool.has_dirty());

    // Few dirty, but the clean ones run low: due.
    let pool = SlotPool::new();
    pool.release_clean(pool.take_dirty());
    let keep = STATUS_SLOTS as usize - RESET_BATCH + 1;
    let held: Vec<u32> = (0..keep).map(|_| pool.take().unwrap()).collect();
    pool.release_dirty(held[0]);
    assert_eq!(pool.take_dirty_if_due(), vec![held[0]]);
}

/// A word with its own op reports as that op; the others as the check's; the lowest flagged
/// word wins.
#[test]
fn words_decode_with_their_own_op() {
    let check = NonFiniteCheck::tensors("bitlinear", ["x", "y", "", "output"]).word_op(3, "gated");
    let slot = |words: [u32; STATUS_WORDS]| -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    };
    let err = |words| decode_slot(&check, &slot(words));
    assert_eq!(err([CLEAN; STATUS_WORDS]), None);
    assert_eq!(
        err([CLEAN, CLEAN, CLEAN, 7]),
        Some(Error::NonFinite {
            op: "gated",
            tensor: "output",
            index: 7
        })
    );
    assert_eq!(
        err([CLEAN, 5, CLEAN, 7]),
        Some(Error::NonFinite {
            op: "bitlinear",
            tensor: "y",
            index: 5
        })
    );
}

/// A tagged word decodes its kind's tensor name and the index below the tag, and still
/// ranks before the later words.
#[test]
fn tagged_words_decode_kind_and_index() {
    const NAMES: &[&str] = &["x", "residual", "weight", "output"];
    let check = NonFiniteCheck::tensors("bitlinear", ["", "output", "", ""])
        .word_op(0, "add_rms_norm")
        .tagged(0, NAMES);
    let slot = |words: [u32; STATUS_WORDS]| -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    };
    let err = |words| decode_slot(&check, &slot(words));
    assert_eq!(
        err([2 << TAG_SHIFT | 9, 3, CLEAN, CLEAN]),
        Some(Error::NonFinite {
            op: "add_rms_norm",
            tensor: "weight",
            index: 9
        })
    );
    assert_eq!(
        err([CLEAN, 3, CLEAN, CLEAN]),
        Some(Error::NonFinite {
            op: "bitlinear",
            tensor: "output",
            index: 3
        })
    );
    assert_eq!(check.word_of("residual"), 0);
}

/// A chunked launch checks tensors whose chunks start at different flat indices (a fused f32
/// BitLinear over M chunks: word 0 is `x` from row `r · K`, word 1 the output from row `r · N`):
/// an overflowing output in a later M chunk decodes with the output's base, not `x`'s, and
/// matches cpu-ref's index.
#[test]
fn a_later_chunks_output_is_indexed_from_its_own_base() {
    let e = crate::test_gpu::gpu_with(crate::engine::EngineOptions {
        max_binding_bytes: Some(16 << 10), // 4 KiB output rows: M chunks of 4 rows
        ..Default::default()
    });
    let (m, n, k) = (8usize, 1024usize, 64usize);
    let wf: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7919 % 13) as f32 - 6.0) * 1e30)
        .collect();
    let w = bitnet_cpu_ref::quantize_weights(&wf, n, k).unwrap();
    // Row 6 (the second M chunk, rows 4..8) is large: its outputs overflow, the others do not.
    let mut x: Vec<f32> = (0..m * k).map(|i| ((i % 5) as f32 - 2.0) * 0.25).collect();
    x[6 * k + 1] = 1e10;
    let want = Error::from(bitnet_cpu_ref::bitlinear(&x, m, &w).unwrap_err());
    let Error::NonFinite { index, .. } = want else {
        panic!("cpu-ref: {want:?}");
    };
    assert!(index >= 6 * n, "an output of row 6: {want:?}");
    let tuning = crate::BitnetTuning {
        autotune: Some(false),
        ..Default::default()
    };
    for forced in [
        tuning,
        crate::BitnetTuning {
            batch_gemv: Some(true),
            ..tuning
        },
        crate::BitnetTuning {
            lean_gemv: Some(true),
            ..tuning
        },
    ] {
        e.set_bitnet_tuning(forced);
        let xt = e.upload_f32(&x, &[m, k]).unwrap();
        let wt = e.upload_ternary(&w).unwrap();
        let y = e.bitlinear_tensor(&xt, &wt).unwrap();
        let plan = e.bitlinear_plan(m, n, k, true).expect("planned");
        assert!(plan.takes_f32(), "a fused f32 plan: {plan:?}");
        assert_eq!(y.read_f32().unwrap_err(), want, "{plan:?}");
    }
}
