//! The elementwise loop every map-like op shares (one output value per input value or pair),
//! and the rule by which the ops of this module split their work across threads: on the calling
//! thread alone below a size, in fixed-size parallel tasks above it.
//!
//! The op is chosen before the loop, not per element: callers pass a closure for one variant
//! ([`with_unary!`] and [`with_binary!`] bind one per variant), so the loop body is that
//! variant's arithmetic alone and compiles to SIMD where the arithmetic allows. Matching the op
//! per element kept every value behind an indirect jump (a jump table), about 2 ns a value.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::alloc;
use crate::check;
use crate::error::Error;
use crate::kernels::Isa;
use crate::kernels::multiversion::multiversion;

/// Runs `$body` with `$f` bound to a closure `Fn(f32) -> f32` applying the one [`UnaryOp`]
/// variant `$op` holds, so the body is compiled once per variant with the arithmetic inlined.
///
/// [`UnaryOp`]: super::UnaryOp
macro_rules! with_unary {
    ($op:expr, |$f:ident| $body:expr) => {{
        use $crate::ops::UnaryOp as U;
        match $op {
            U::Relu => {
                let $f = |x: f32| U::Relu.apply(x);
                $body
            }
            U::Relu2 => {
                let $f = |x: f32| U::Relu2.apply(x);
                $body
            }
            U::Silu => {
                let $f = |x: f32| U::Silu.apply(x);
                $body
            }
            U::Gelu => {
                let $f = |x: f32| U::Gelu.apply(x);
                $body
            }
            U::Exp => {
                let $f = |x: f32| U::Exp.apply(x);
                $body
            }
        }
    }};
}

/// [`with_unary!`] for a [`BinaryOp`]: `$f` is a closure `Fn(f32, f32) -> f32`.
///
/// [`BinaryOp`]: super::BinaryOp
macro_rules! with_binary {
    ($op:expr, |$f:ident| $body:expr) => {{
        use $crate::ops::BinaryOp as B;
        match $op {
            B::Add => {
                let $f = |a: f32, b: f32| B::Add.apply(a, b);
                $body
            }
            B::Sub => {
                let $f = |a: f32, b: f32| B::Sub.apply(a, b);
                $body
            }
            B::Mul => {
                let $f = |a: f32, b: f32| B::Mul.apply(a, b);
                $body
            }
            B::Div => {
                let $f = |a: f32, b: f32| B::Div.apply(a, b);
                $body
            }
        }
    }};
}

pub(super) use {with_binary, with_unary};

/// Values below which a map of plain arithmetic (`+ - * /`, ReLU) runs on the calling thread
/// alone. Such a map is memory-bound, and on both hosts measured one core already streams
/// about as fast as the pool, which costs the caller 30-60 µs to wake and join besides. ReLU,
/// cpu-ref in pieces that run alone against one call split into 4096-value tasks (2026-12-01,
/// µs): H200 host (16 threads) 64K values 16.8 / 67.1, 256K 61.8 / 139, 1M 255 / 525, 2M
/// 540 / 1222; lavapipe host (2 threads) 1M 165 / 409, 2M 335 / 517. Past this size a split
/// still pays where the output is fresh memory: its pages fault in on every thread (an 8M-value
/// ReLU alone spent 15-21 ms faulting its 32 MB output in). Larger maps are split into
/// [`TASK_VALUES`].
pub(super) const ALONE_BELOW_VALUES: usize = 1 << 20;

/// [`ALONE_BELOW_VALUES`] for the row ops doing a few float operations a value (RMSNorm,
/// reductions). RMSNorm over rows of 256, in pieces alone against split (µs): H200 host 16K
/// values 15.3 / 41.0, 256K 158 / 234, 1M 716 / 1031; lavapipe host 1M 556 / 725, 2M
/// 1116 / 825.
pub(super) const ALONE_BELOW_ROW_VALUES: usize = 1 << 20;

/// [`ALONE_BELOW_VALUES`] for ops with a transcendental per value (`exp`, `erf`: SiLU, GELU,
/// softmax): one task's worth, as before.
pub(super) const ALONE_BELOW_TRANSCENDENTAL_VALUES: usize = TASK_VALUES;

/// Values per rayon task of an op that is split.
pub(super) const TASK_VALUES: usize = 4096;

/// Rayon's fewest items per thread for an op over `values` values in items of `item_values`
/// each: all of them (the calling thread alone) below `alone_below` values, else items worth
/// [`TASK_VALUES`]. With items of one value it is a map's chunk length.
pub(super) fn min_items(values: usize, item_values: usize, alone_below: usize) -> usize {
    let items = values.div_ceil(item_values.max(1)).max(1);
    if values < alone_below {
        items
    } else {
        (TASK_VALUES / item_values.max(1)).max(1)
    }
}

/// `f(a[i])` for every `i`, into a new vector (allocated fallibly, named `op`'s output), on the
/// calling thread alone below `alone_below` values — with the op's value checks folded into the
/// same pass: the first non-finite value of `a` (named `name`) is an input error, else the first
/// non-finite output an `"output"` error, exactly as checking `a` before the map and the output
/// after it would report them. A small map is a few instructions a value; two more passes over
/// memory to check it (and one to zero the output) had made it about three times slower.
///
/// The result is built in the caller's error type `E` (this crate's, or an engine's through the
/// `_values_as` twins): converting a finished `Result` copied the vector's three words through
/// the stack, which cost the engine's 256-value add about a fifth of its time.
pub(super) fn map1<E: From<Error>>(
    op: &'static str,
    name: &'static str,
    a: &[f32],
    alone_below: usize,
    f: impl Fn(f32) -> f32 + Sync,
) -> std::result::Result<Vec<f32>, E> {
    let mut out = alloc::with_capacity::<f32>(op, "output", a.len())?;
    let spare = &mut out.spare_capacity_mut()[..a.len()];
    let bad = if a.len() < alone_below {
        span1(spare, a, &f, Isa::best())
    } else {
        let (task, isa) = (min_items(a.len(), 1, alone_below), Isa::best());
        spare
            .par_chunks_mut(task)
            .zip(a.par_chunks(task))
            .map(|(o, a)| span1(o, a, &f, isa))
            .reduce(|| false, |p, q| p | q)
    };
    // SAFETY: `span1` wrote every one of the `a.len()` values (each span covers its chunk).
    unsafe { out.set_len(a.len()) };
    if bad {
        check::finite(op, name, a)?;
        check::finite(op, "output", &out)?;
    }
    Ok(out)
}

/// `f(a[i], b[i])` for every `i` (`a` and `b` of one length, named `names`), into a new
/// vector, on the calling thread alone below `alone_below` values, with the checks of [`map1`]
/// (`a`'s, then `b`'s, then the output's).
pub(super) fn map2<E: From<Error>>(
    op: &'static str,
    names: [&'static str; 2],
    a: &[f32],
    b: &[f32],
    alone_below: usize,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> std::result::Result<Vec<f32>, E> {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len().min(b.len());
    let mut out = alloc::with_capacity::<f32>(op, "output", n)?;
    let spare = &mut out.spare_capacity_mut()[..n];
    let bad = if n < alone_below {
        span2(spare, &a[..n], &b[..n], &f, Isa::best())
    } else {
        let (task, isa) = (min_items(n, 1, alone_below), Isa::best());
        spare
            .par_chunks_mut(task)
            .zip(a[..n].par_chunks(task).zip(b[..n].par_chunks(task)))
            .map(|(o, (a, b))| span2(o, a, b, &f, isa))
            .reduce(|| false, |p, q| p | q)
    };
    // SAFETY: `span2` wrote every one of the `n` values (each span covers its chunk).
    unsafe { out.set_len(n) };
    if bad {
        check::finite(op, names[0], a)?;
        check::finite(op, names[1], b)?;
        check::finite(op, "output", &out)?;
    }
    Ok(out)
}

multiversion! {
    /// Writes `f(a[i])` into `o` (as long as `a`) and returns whether any input or output value
    /// is non-finite. Compiled for the baseline and with AVX2 per op: 8-lane vectors where the
    /// op's arithmetic vectorizes, the same IEEE operations on each value, so the same bits
    /// either way. A 256-value ReLU in cpu-ref: 56-58 → 36-38 ns (lavapipe host).
    fn span1<F: Fn(f32) -> f32>(o: &mut [MaybeUninit<f32>], a: &[f32], f: &F) -> bool {
        let mut bad = false;
        for (o, &x) in o.iter_mut().zip(a) {
            let y = f(x);
            bad |= !(x.is_finite() & y.is_finite());
            o.write(y);
        }
        bad
    }
}

multiversion! {
    /// [`span1`] for two operands of one length: `f(a[i], b[i])` into `o`.
    fn span2<F: Fn(f32, f32) -> f32>(
        o: &mut [MaybeUninit<f32>],
        a: &[f32],
        b: &[f32],
        f: &F,
    ) -> bool {
        let mut bad = false;
        for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
            let z = f(x, y);
            bad |= !(x.is_finite() & y.is_finite() & z.is_finite());
            o.write(z);
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use std::mem::MaybeUninit;

    use super::{span1, span2};
    use crate::kernels::Isa;
    use crate::ops::{BinaryOp, UnaryOp};

    /// Values across the ranges the ops treat differently, the special ones included, in a
    /// length that leaves a tail after the 8-lane vectors.
    fn sweep() -> Vec<f32> {
        let mut v: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.173).collect();
        v.extend([
            0.0,
            -0.0,
            1e-45,
            -1e-45,
            88.7,
            88.8,
            -104.0,
            1e19,
            2e19,
            f32::MAX,
            f32::MIN,
        ]);
        v.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 3.0]);
        v
    }

    fn bits(o: &[MaybeUninit<f32>]) -> Vec<u32> {
        // SAFETY: the spans wrote every value of `o`.
        o.iter()
            .map(|v| unsafe { v.assume_init() }.to_bits())
            .collect()
    }

    /// The baseline and AVX2 compilations of the spans write the same bits and report the same
    /// non-finite flag, for every unary and binary op.
    #[test]
    fn spans_are_identical_on_every_isa() {
        let a = sweep();
        let b: Vec<f32> = a.iter().rev().copied().collect();
        let run1 = |op: UnaryOp, isa: Isa| {
            let mut o = vec![MaybeUninit::uninit(); a.len()];
            let bad = with_unary!(op, |f| span1(&mut o, &a, &f, isa));
            (bits(&o), bad)
        };
        let run2 = |op: BinaryOp, isa: Isa| {
            let mut o = vec![MaybeUninit::uninit(); a.len()];
            let bad = with_binary!(op, |f| span2(&mut o, &a, &b, &f, isa));
            (bits(&o), bad)
        };
        for isa in Isa::available() {
            for op in [
                UnaryOp::Relu,
                UnaryOp::Relu2,
                UnaryOp::Silu,
                UnaryOp::Gelu,
                UnaryOp::Exp,
            ] {
                assert_eq!(run1(op, isa), run1(op, Isa::Scalar), "{op:?} on {isa:?}");
            }
            for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
                assert_eq!(run2(op, isa), run2(op, Isa::Scalar), "{op:?} on {isa:?}");
            }
        }
    }
}
