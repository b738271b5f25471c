//! The elementwise loop every map-like op shares (one output value per input value or pair),
//! and the rule by which the ops of this module split their work across threads: on the calling
//! thread alone below a size, in fixed-size parallel tasks above it.
//!
//! The op is chosen before the loop, not per element: callers pass a closure for one variant
//! ([`with_unary!`] and [`with_binary!`] bind one per variant), so the loop body is that
//! variant's arithmetic alone and compiles to SIMD where the arithmetic allows. Matching the op
//! per element kept every value behind an indirect jump (a jump table), about 2 ns a value.

use rayon::prelude::*;

use crate::alloc;
use crate::check;
use crate::error::Error;

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
    let apply = |x: f32, bad: &mut bool| {
        let y = f(x);
        *bad |= !(x.is_finite() & y.is_finite());
        y
    };
    let (out, bad) = if a.len() < alone_below {
        let mut out = alloc::with_capacity::<f32>(op, "output", a.len())?;
        let mut bad = false;
        out.extend(a.iter().map(|&x| apply(x, &mut bad)));
        (out, bad)
    } else {
        let mut out = alloc::zeroed::<f32>(op, "output", a.len())?;
        let task = min_items(a.len(), 1, alone_below);
        let bad = out
            .par_chunks_mut(task)
            .zip(a.par_chunks(task))
            .map(|(o, a)| {
                let mut bad = false;
                for (o, &x) in o.iter_mut().zip(a) {
                    *o = apply(x, &mut bad);
                }
                bad
            })
            .reduce(|| false, |p, q| p | q);
        (out, bad)
    };
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
    let apply = |x: f32, y: f32, bad: &mut bool| {
        let z = f(x, y);
        *bad |= !(x.is_finite() & y.is_finite() & z.is_finite());
        z
    };
    let (out, bad) = if a.len() < alone_below {
        let mut out = alloc::with_capacity::<f32>(op, "output", a.len())?;
        let mut bad = false;
        out.extend(a.iter().zip(b).map(|(&x, &y)| apply(x, y, &mut bad)));
        (out, bad)
    } else {
        let mut out = alloc::zeroed::<f32>(op, "output", a.len())?;
        let task = min_items(a.len(), 1, alone_below);
        let bad = out
            .par_chunks_mut(task)
            .zip(a.par_chunks(task).zip(b.par_chunks(task)))
            .map(|(o, (a, b))| {
                let mut bad = false;
                for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
                    *o = apply(x, y, &mut bad);
                }
                bad
            })
            .reduce(|| false, |p, q| p | q);
        (out, bad)
    };
    if bad {
        check::finite(op, names[0], a)?;
        check::finite(op, names[1], b)?;
        check::finite(op, "output", &out)?;
    }
    Ok(out)
}
