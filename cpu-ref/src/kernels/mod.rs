//! SIMD levels and the dispatch between the scalar path and the `std::arch` kernels.
//!
//! Every kernel has a scalar version that follows `layout.rs` literally and SIMD versions that
//! give bit-identical results (integer kernels are exact; float kernels use the same IEEE operations
//! in the same order, only several lanes at a time). Tests run every available level and compare.

pub(crate) mod dot;
pub(crate) mod float;
pub(crate) mod multiversion;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_quant;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

use crate::error::{Error, Result};

/// An instruction-set level for the hot loops. [`Isa::best`] is what every operation uses by
/// default; the `*_with_isa` entry points let tests and benchmarks force a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, no `std::arch` (the compiler may still auto-vectorize for the baseline).
    Scalar,
    /// x86_64 AVX2 (`_mm256_maddubs_epi16` for BitLinear, 8-lane float loops).
    Avx2,
    /// x86_64 AVX-512 with VNNI (`_mm512_dpbusd_epi32` for BitLinear); every other loop runs
    /// its AVX2 version (the level implies AVX2).
    Avx512,
    /// aarch64 NEON (`vmlal_s8` for BitLinear; float loops use the NEON baseline).
    Neon,
}

impl Isa {
    /// Every level, scalar first (the order `available` lists them in and `best` caches by).
    const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon];

    /// The fastest level this CPU supports: detected on the first call, then one load. Every
    /// op asks (a 256-value ReLU is ~35 ns), and the detection tests up to four feature bits.
    #[inline]
    pub fn best() -> Isa {
        use std::sync::atomic::{AtomicU8, Ordering};
        /// 0 until detected, then the level's code plus one.
        static BEST: AtomicU8 = AtomicU8::new(0);
        match BEST.load(Ordering::Relaxed) {
            0 => {
                let best = Isa::detect_best();
                let code = Isa::ALL.iter().position(|&l| l == best).unwrap_or(0);
                BEST.store(code as u8 + 1, Ordering::Relaxed);
                best
            }
            code => Isa::ALL[usize::from(code - 1).min(Isa::ALL.len() - 1)],
        }
    }

    /// [`Isa::best`] without the cache.
    #[cold]
    fn detect_best() -> Isa {
        if Isa::Avx512.is_available() {
            Isa::Avx512
        } else if Isa::Avx2.is_available() {
            Isa::Avx2
        } else if Isa::Neon.is_available() {
            Isa::Neon
        } else {
            Isa::Scalar
        }
    }

    /// Every level this CPU supports, scalar first (what the consistency tests iterate over).
    pub fn available() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|isa| isa.is_available())
            .collect()
    }

    /// Whether this CPU can run this level.
    #[inline]
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx2") && avx512::available(),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Whether this level runs the AVX2 loops (AVX2 itself, and AVX-512, which implies it)
    /// and this CPU has AVX2: the check before every AVX2 kernel call.
    #[inline]
    pub(crate) fn runs_avx2(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if matches!(self, Isa::Avx2 | Isa::Avx512) {
            return std::arch::is_x86_feature_detected!("avx2");
        }
        false
    }

    /// `Ok(self)` if available, else [`Error::InvalidArgument`] for `op`. Inlined: every op
    /// asks, and a call into this crate from a caller's instantiation of an op is not free.
    #[inline]
    pub(crate) fn require(self, op: &'static str) -> Result<Isa> {
        if self.is_available() {
            Ok(self)
        } else {
            Err(Error::InvalidArgument {
                op,
                what: "isa",
                reason: "this SIMD level is not supported by this CPU",
            })
        }
    }
}
