//! The device side of [`LinearChain`](crate::LinearChain): its arenas (every linear's weights in
//! one buffer, every output in another), the job table of `bitlinear_chain_subgroup.wgsl`, and
//! the launch of one run.
//!
//! Workgroups are laid out linear by linear in chain order (producers before consumers), which
//! is what makes the kernel's in-dispatch waits safe: a workgroup only waits for workgroups with
//! lower indices (see the kernel's header).

use bitnet_cpu_ref::TernaryMatrix;
use bitnet_cpu_ref::layout::words_per_row;
use bitnet_kernels_wgsl::bitnet as kernels;

use super::bitnet_record::LinearParams;
use super::in_dispatch_wait::{CPU_ADAPTER_MAX_BYTES, cpu_adapter, wait_constants, waits_allowed};
use super::util::fill_words;
use crate::chain::ChainInput;
use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::launch::{Launch, check_binding};
use crate::pipelines::{Access, Kernel};
use crate::status::{ABORTED, NonFiniteCheck};
use crate::tensor::{DType, Tensor};

use Access::{Read, ReadWrite};

/// The chain kernel's bindings (both forms).
const BINDINGS: &[Access] = &[Read, Read, ReadWrite, Read, Read, ReadWrite];
/// The chain kernel with its output arena declared coherent: consumers read their input as vec4
/// (H200, 2B4T chained stack: 836 → 720 µs against [`CHAIN_ATOMIC`] when it came, same command),
/// and wait by polling those words in an arena filled with `CHAIN_UNWRITTEN` (694-696 → 633-634
/// µs against waiting on counters, 2026-12-02).
const CHAIN_COHERENT: Kernel =
    Kernel::new(kernels::BITLINEAR_CHAIN_COHERENT_SUBGROUP, "main", BINDINGS)
        .requiring(wgpu::Features::SUBGROUP.union(wgpu::Features::MEMORY_DECORATION_COHERENT));
/// The chain kernel with atomic outputs, for devices that cannot declare storage coherent.
const CHAIN_ATOMIC: Kernel = Kernel::new(kernels::BITLINEAR_CHAIN_SUBGROUP, "main", BINDINGS)
    .requiring(wgpu::Features::SUBGROUP);

/// Threads per workgroup of the chain kernel.
const THREADS: u32 = 256;
/// Lanes per 4-row block (`TPR`): 32 rows per workgroup. H200, 2B4T chained stack: 16 and 64
/// lanes were 12-17 % slower, 8 lanes 39 %. Weight steps loaded before the wait (`DEPTH`): 2;
/// 3 was 6 % slower and 4 more than twice as slow (fewer workgroups fit an SM). Re-checked with
/// the coherent outputs (2026-12-01, probe build, two rounds): 32 / 2 652.8-655.2 µs, 16 / 2
/// 823-824, 64 / 2 792, 32 / 3 690.6-690.7, 16 / 3 692. And with consumers polling the data
/// (2026-12-02, two rounds): 32 / 2 638.9-639.4 µs, 16 / 2 656.6-657.6, 64 / 2 868.6-869.1,
/// 32 / 3 655.2-655.8, 32 / 1 673.1-673.5.
const LANES: u32 = 32;
const DEPTH: u32 = 2;
/// Outputs start on 64-word (256-byte) boundaries, so no two linears' outputs share a cache line;
/// the kernel also relies on it (vec4 loads and stores; the 4-row block holding a linear's last
/// row stores zeros for the rows past it into the padding).
const OUT_ALIGN: usize = 64;
/// One linear of the job table, field for field `ChainJob` of the kernel.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ChainJob {
    w_off: u32,
    n: u32,
    vpr: u32,
    src: u32,
    in_off: u32,
    out_off: u32,
    wg_first: u32,
    wgs: u32,
    scale: f32,
}

/// Whether the chain kernel can run `links` on `gpu`: no in-dispatch wait has given up on it
/// (`Gpu::waits_gave_up`), subgroups, a hand-off its memory model guarantees
/// ([`handoff_guaranteed`]), and every K a multiple of 64 within the fused GEMV's limit
/// (its quantized row lives in workgroup memory).
pub(crate) fn fusable(gpu: &Gpu, links: &[(crate::Linear, ChainInput)]) -> bool {
    let bytes: usize = links
        .iter()
        .map(|(l, _)| 4 * l.weights().words().len())
        .sum();
    let small_enough = !cpu_adapter(gpu) || bytes as u64 <= CPU_ADAPTER_MAX_BYTES;
    small_enough
        && waits_allowed(gpu)
        && gpu.caps.has(wgpu::Features::SUBGROUP)
        && handoff_guaranteed(
            gpu.caps.has(CHAIN_COHERENT.requires),
            gpu.adapter_info.backend,
        )
        && links.iter().all(|(l, _)| {
            let k = l.weights().k();
            k % 64 == 0 && k as u64 <= u64::from(kernels::GEMV_FUSED_MAX_K)
        })
}

/// Whether the chain kernel's hand-off between workgroups of one dispatch is guaranteed by the
/// backend's memory model. The coherent form (`coherent`) polls write-once words, which any
/// backend keeps. The atomic form publishes through relaxed atomics between `storageBarrier`s:
/// naga's SPIR-V makes that barrier order device memory (Device scope, AcquireRelease; guarded
/// by `spirv_tests.rs`), so it holds on Vulkan (and DX12, where wgpu grants coherent storage
/// anyway), but MSL before 3.2 — Metal devices without coherent storage — orders device memory
/// within a threadgroup only: a consumer could read stale outputs as plausible values. Those
/// devices run chains link by link.
fn handoff_guaranteed(coherent: bool, backend: wgpu::Backend) -> bool {
    coherent || backend != wgpu::Backend::Metal
}

/// A chain's resident state: weight arena, job table, workgroup map and counters.
#[derive(Debug)]
pub(crate) struct ChainDevice {
    weights: Tensor,
    jobs: Tensor,
    wg_job: Tensor,
    counters: Tensor,
    /// Lanes per 4-row block (`TPR`).
    lanes: u32,
    /// Each linear's first word in the output arena, and the arena's length in words.
    pub offsets: Vec<usize>,
    pub out_len: usize,
}

impl ChainDevice {
    /// Uploads the arenas and tables of `links` (host weights, chain order) once.
    pub fn build(
        e: &Engine,
        gpu: &Gpu,
        links: &[(crate::Linear, ChainInput)],
    ) -> Result<ChainDevice> {
        Self::with_lanes(e, gpu, links, LANES)
    }

    /// [`ChainDevice::build`] with `lanes` per 4-row block (a power of two, 4 to 256) instead
    /// of the measured [`LANES`]: the tests run blocks narrower than the test device's subgroups,
    /// as the default's are on 64-lane subgroups.
    pub fn with_lanes(
        e: &Engine,
        gpu: &Gpu,
        links: &[(crate::Linear, ChainInput)],
        lanes: u32,
    ) -> Result<ChainDevice> {
        const OP: &str = "linear_chain";
        debug_assert!(lanes.is_power_of_two() && (4..=THREADS).contains(&lanes));
        let rows_per_wg = 4 * THREADS / lanes;
        let (mut jobs, mut wg_job, mut offsets) = (Vec::new(), Vec::new(), Vec::new());
        let (mut words, mut out_len) = (0usize, 0usize);
        for (i, (l, input)) in links.iter().enumerate() {
            let w: &TernaryMatrix = l.weights();
            let wgs = (w.n() as u64).div_ceil(u64::from(rows_per_wg));
            let (src, in_off) = match *input {
                ChainInput::Input => (u32::MAX, 0),
                ChainInput::Output(j) => (j as u32, offsets[j]),
            };
            jobs.push(ChainJob {
                w_off: to_u32(OP, words / 4)?,
                n: w.n() as u32,
                vpr: (w.k() / 64) as u32,
                src,
                in_off: to_u32(OP, in_off)?,
                out_off: to_u32(OP, out_len)?,
                wg_first: to_u32(OP, wg_job.len())?,
                wgs: wgs as u32,
                scale: w.scale(),
            });
            wg_job.extend(std::iter::repeat_n(i as u32, wgs as usize));
            offsets.push(out_len);
            words += w.n() * words_per_row(w.k());
            out_len += w.n().next_multiple_of(OUT_ALIGN);
        }
        check_binding(gpu, "linear_chain weight arena", 4 * words as u64)?;
        check_binding(gpu, "linear_chain output arena", 4 * out_len as u64)?;
        let mut arena = Vec::with_capacity(words);
        for (l, _) in links {
            arena.extend_from_slice(l.weights().words());
        }
        let job_words: &[u32] = bytemuck::cast_slice(&jobs);
        let upload = |words: &[u32]| e.upload_on(gpu, OP, words, &[words.len()], DType::U32);
        Ok(ChainDevice {
            weights: upload(&arena)?,
            jobs: upload(job_words)?,
            wg_job: upload(&wg_job)?,
            // Per job: finished workgroups; then finished, abort; then per job: output absmax.
            counters: upload(&vec![0; 2 * links.len() + 2])?,
            lanes,
            offsets,
            out_len,
        })
    }

    /// Records one run: `x` (`F32`, the chain input) through every linear into `out` (`F32`,
    /// `out_len` words; for the coherent kernel, a fill of it first). Reading `out` reports a
    /// non-finite x (op `bitlinear`, as cpu-ref) or an aborted run ([`Error::Aborted`]).
    pub fn record(&self, gpu: &Gpu, x: &Tensor, out: &Tensor) -> Result<()> {
        let params = LinearParams {
            m: 1,
            n: self.offsets.len() as u32,
            words_per_row: 0,
            out_stride: self.out_len as u32,
            out_base: 0,
            mode: 0,
            tiles_n: self.wg_job.len() as u32,
            m_base: 0,
            zero: 0,
            k_splits: 1,
        };
        // The coherent kernel's consumers poll their input words until none is unwritten.
        let coherent = gpu.caps.has(CHAIN_COHERENT.requires);
        let kernel = match coherent {
            true => &CHAIN_COHERENT,
            false => &CHAIN_ATOMIC,
        };
        if coherent {
            fill_words(gpu, out, kernels::CHAIN_UNWRITTEN)?;
        }
        let launch = Launch::new(gpu, kernel)
            .input(&self.weights)
            .input(x)
            .output(out)
            .input(&self.jobs)
            .input(&self.wg_job)
            .scratch(&self.counters)
            .params(&params)
            .constant("TPR", f64::from(self.lanes))
            .constant("DEPTH", f64::from(DEPTH));
        wait_constants(launch, gpu)
            .check_finite(NonFiniteCheck::tensors(
                "bitlinear",
                ["x", ABORTED, super::bitnet_record::OUTPUT, ""],
            ))
            .workgroups(self.wg_job.len() as u64)
            .run()
    }
}

/// `v` as a `u32` kernel field, or a clear error for chains beyond the kernel's 32-bit offsets.
fn to_u32(op: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::LimitExceeded {
        limit: "the chain kernel's u32 offsets",
        requested: v as u64,
        max: u64::from(u32::MAX),
        what: op.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::handoff_guaranteed;
    use wgpu::Backend;

    /// Only Metal without coherent storage (MSL before 3.2) runs chains link by link.
    #[test]
    fn only_metal_without_coherent_storage_lacks_the_handoff() {
        assert!(!handoff_guaranteed(false, Backend::Metal));
        assert!(handoff_guaranteed(true, Backend::Metal));
        for backend in [Backend::Vulkan, Backend::Dx12, Backend::Gl] {
            assert!(handoff_guaranteed(false, backend) && handoff_guaranteed(true, backend));
        }
    }
}
