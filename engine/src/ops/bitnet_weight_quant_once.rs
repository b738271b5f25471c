//! Weight quantization that reads `w` from memory once (`weight_quant_band.wgsl`,
//! `weight_quant_once.wgsl`, `weight_quant_fixup.wgsl`), bit-identical to cpu-ref.
//!
//! `s = mean |w|` must be known before any weight rounds, so the one-dispatch kernel
//! (`weight_quant_fused.wgsl`) reads `w` twice: from memory twice for a matrix larger than the L2
//! cache. A code is monotone in `s`, though, so three dispatches do with one read:
//! 1. estimator workgroups sample one float vec4 in 64 and publish a band `[s_lo, s_hi]` around
//!    the sample's mean (five standard errors, at least 1/256 of it);
//! 2. one workgroup per 4096-value block sums its block in the canonical order and packs every
//!    code that is the same at both ends of the band (then it is the code at `s`), listing the
//!    words with a code that is not; the last block makes `s`;
//! 3. fixup workgroups re-read and re-pack the listed words with `s` — or every word, if `s`
//!    left the band or the list overflowed, so a bad sample costs time, never a wrong code.
//!
//! Nothing waits inside a dispatch, so this runs on every adapter.

use bitnet_kernels_wgsl::bitnet as kernels;

use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::Result;
use crate::launch::Launch;
use crate::pipelines::{Access, Kernel};
use crate::status::{KERNEL_STATE, NonFiniteCheck};
use crate::tensor::{DType, Tensor};

use Access::{Read, ReadWrite};

const BAND: Kernel = Kernel::new(kernels::WEIGHT_QUANT_BAND, "main", &[Read, ReadWrite]);
const ONCE: Kernel = Kernel::new(
    kernels::WEIGHT_QUANT_ONCE,
    "main",
    &[Read, ReadWrite, ReadWrite, ReadWrite],
);
const FIXUP: Kernel = Kernel::new(
    kernels::WEIGHT_QUANT_FIXUP,
    "main",
    &[Read, Read, ReadWrite, ReadWrite],
);

/// Float vec4 of `w` per sampled one (`weight_quant_band.wgsl`).
const SAMPLE_STRIDE: u64 = 64;

/// Packed words per listed one the list has room for: 1/8 of the words (the band misses about
/// 1-16 % of the words of normally distributed weights; more fall back to re-packing all).
const WORDS_PER_LIST_ENTRY: u64 = 8;

/// Listed words per fixup lane at most, before the grid grows.
const FIXUP_ENTRIES_PER_LANE: u64 = 4;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BandParams {
    vecs: u32,
    samples: u32,
    groups: u32,
    /// Always 0 (the kernel's runtime zero for its optimization barrier).
    zero: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct OnceParams {
    len: u32,
    blocks: u32,
    count: f32,
    capacity: u32,
    /// Always 0 (the kernel's runtime zero for its optimization barriers).
    zero: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FixupParams {
    words: u32,
    capacity: u32,
    blocks: u32,
    /// Always 0 (the kernel's runtime zero for its optimization barrier).
    zero: u32,
}

impl Engine {
    /// Records weight quantization of `w` (`F32 [N, K]`, K % 16 == 0, within one binding and
    /// below 2^30 values) into `out` (`Ternary`) in the three dispatches of the module docs.
    pub(super) fn record_weight_quant_once(
        &self,
        gpu: &Gpu,
        w: &Tensor,
        out: &Tensor,
        sum_overflow: &'static str,
    ) -> Result<()> {
        const OP: &str = "quantize_weights";
        let len = w.len() as u64;
        let vecs = len / 4;
        let words = len / 16;
        let blocks = len.div_ceil(u64::from(kernels::SUM_BLOCK));
        let capacity = words.div_ceil(WORDS_PER_LIST_ENTRY);
        let head = u64::from(kernels::WEIGHT_ONCE_SCRATCH_HEAD);
        let scratch = self.empty(
            gpu,
            OP,
            &[(head + blocks + capacity) as usize],
            DType::U32,
        )?;
        let samples = vecs.div_ceil(SAMPLE_STRIDE);
        let groups = samples
            .div_ceil(256)
            .clamp(1, u64::from(kernels::WEIGHT_BAND_MAX_GROUPS));
        let variant: u32 = std::env::var("BITNET_WQ_VARIANT").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        if variant == 0 || variant == 6 {
        Launch::new(gpu, &BAND)
            .input(w)
            .scratch(&scratch)
            .params(&BandParams {
                vecs: vecs as u32,
                samples: samples as u32,
                groups: groups as u32,
                zero: 0,
            })
            .check_finite(NonFiniteCheck::tensors(OP, ["", "", "", KERNEL_STATE]))
            .workgroups(groups)
            .run()?;
        }
        Launch::new(gpu, &ONCE)
            .input(w)
            .output(out)
            .output_scales(out)
            .scratch(&scratch)
            .params(&OnceParams {
                len: len as u32,
                blocks: blocks as u32,
                // Rust's `as` rounding, exactly as cpu-ref computes `(N * K) as f32`.
                count: len as f32,
                capacity: capacity as u32,
                zero: 0,
            })
            .check_finite(NonFiniteCheck::tensors(
                OP,
                ["w", sum_overflow, "", KERNEL_STATE],
            ))
            .constant("VARIANT", f64::from(if variant == 6 { 0 } else { variant }))
            .workgroups(blocks)
            .run()?;
        if variant != 0 { return Ok(()); }
        Launch::new(gpu, &FIXUP)
            .input(w)
            .input_scales(out)
            .output(out)
            .scratch(&scratch)
            .params(&FixupParams {
                words: words as u32,
                capacity: capacity as u32,
                blocks: blocks as u32,
                zero: 0,
            })
            .grid([
                capacity
                    .div_ceil(256 * FIXUP_ENTRIES_PER_LANE)
                    .clamp(1, u64::from(u16::MAX)) as u32,
                1,
                1,
            ])
            .run()?;
        if std::env::var_os("BITNET_WQ_DEBUG").is_some() {
            let v = scratch.read_u32()?;
            log::warn!(
                "wq once [{}]: band {} .. {}, uncertain {} of {} (cap {}), mode {}",
                len,
                f32::from_bits(v[6]),
                f32::from_bits(v[7]),
                v[4],
                words,
                capacity,
                v[5]
            );
        }
        Ok(())
    }
}
