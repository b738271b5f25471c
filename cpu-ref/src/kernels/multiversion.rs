//! `multiversion!`: compile one loop body for the baseline target and with AVX2 enabled, and
//! dispatch on an [`Isa`](super::Isa) — the only way float kernels get 8-lane vectors without
//! hand-written intrinsics (and without changing any result: the same IEEE operations run on the
//! same values in the same order per element; no FMA contraction happens in Rust).

/// Defines `pub(crate) fn $name(args.., isa: Isa)` whose body is compiled once for the baseline
/// and once with `#[target_feature(enable = "avx2")]`, and dispatches on `isa` (AVX-512 runs the
/// AVX2 version; falling back to the baseline if AVX2 is not actually available, so an unchecked
/// `isa` can never be unsound).
/// Type parameters with one bound each (`fn name<F: Fn(f32) -> f32>(..)`) are allowed, for loops
/// over a caller's closure: each instantiation is compiled both ways.
macro_rules! multiversion_impl {
    ($(#[$meta:meta])* fn $name:ident $(<$($gen:ident: $bound:path),+>)? ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        pub(crate) fn $name $(<$($gen: $bound),+>)? ($($arg: $ty,)* isa: $crate::kernels::Isa) $(-> $ret)? {
            #[inline(always)]
            fn body $(<$($gen: $bound),+>)? ($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            fn avx2 $(<$($gen: $bound),+>)? ($($arg: $ty),*) $(-> $ret)? {
                body($($arg),*)
            }

            // (Off x86-64 `runs_avx2` is always false: the branch is empty there.)
            if isa.runs_avx2() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `avx2` only needs the AVX2 feature, which `runs_avx2` checks at runtime.
                return unsafe { avx2($($arg),*) };
            }
            body($($arg),*)
        }
    };
}

pub(crate) use multiversion_impl as multiversion;
