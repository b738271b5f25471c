//! Per-kernel GPU time from timestamp queries (needs `Features::TIMESTAMP_QUERY`).
//!
//! While profiling is enabled every dispatch is bracketed by a pair of timestamps:
//!
//! * with `Features::TIMESTAMP_QUERY_INSIDE_PASSES` (requested by `device.rs` whenever the adapter
//!   has it), written *inside* the compute pass right before and after the dispatch
//!   (`ComputePass::write_timestamp`), so profiling does not change the pass structure
//!   (`encode.rs`: one pass per run of dispatches). A dispatch's time is then the GPU time from
//!   the point its predecessors' commands were issued to the point its own completed, including
//!   the barrier wgpu put in front of it;
//! * without it, every dispatch gets its own compute pass with `timestamp_writes` (beginning and
//!   end of pass) — exact per dispatch, but one pass per op.
//!
//! That is [`ProfileGranularity::Dispatch`], the default: per-kernel attribution. It perturbs
//! what it measures: on the H200 (NVIDIA 580.159) a trivial kernel read 35 µs with in-pass
//! timestamps and the 210-dispatch decode stack summed to 6.3 ms while the same batch ran in
//! 3.5 ms of submit-to-done wall time with the profiler off. [`ProfileGranularity::Batch`] writes
//! only two timestamps per submitted batch — at the beginning of its first dispatch pass and the
//! end of its last — and reports that span (entry [`BATCH_SPAN`]): the GPU time of the whole
//! batch, inter-kernel gaps and barriers included, with nothing added between the kernels. Time
//! one op as the span of a batch of many back-to-back calls divided by their number.
//!
//! At each submit the queries are resolved, read back (a sync: the profiler trades overlap for
//! exact numbers) and accumulated per kernel name ([`ProfileReport`]: calls and total time).
//! A pair is read modulo the width of the device's counter, which can wrap between its two
//! stamps; a pair that cannot be a measurement is dropped and counted, not read as 0 ns
//! ([`timestamp_ticks`], [`ProfileReport::dropped`]).

use std::collections::BTreeMap;

/// Timestamp pairs per query set (one pair per dispatch of a batch).
pub(crate) const PROFILE_PAIRS: u32 = 256;

/// The report entry of [`ProfileGranularity::Batch`]: one call per timed batch.
pub const BATCH_SPAN: &str = "batch span (first dispatch pass to last)";

/// What one timestamp pair brackets (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProfileGranularity {
    /// A pair around every dispatch: per-kernel times, perturbed by the timestamps themselves.
    #[default]
    Dispatch,
    /// One pair per submitted batch: its whole GPU span, unperturbed, no per-kernel split.
    Batch,
}

/// Per-kernel GPU time since the profiler was first enabled or last reset
/// ([`Engine::reset_profile`](crate::Engine::reset_profile)): disabling and enabling it again
/// keeps the totals, and a change of [`ProfileGranularity`] without a reset leaves entries of
/// the old kind beside those of the new.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ProfileReport {
    /// `(kernel name, calls, total GPU nanoseconds)`, sorted by total time, largest first; with
    /// [`ProfileGranularity::Batch`] (since the last reset) the single entry [`BATCH_SPAN`]
    /// (calls = batches).
    pub entries: Vec<(&'static str, u64, u64)>,
    /// Dispatches in the timed batches (either granularity).
    pub dispatches: u64,
    /// Timestamp pairs dropped as no measurement ([`timestamp_ticks`]: an end before its begin
    /// on a counter that cannot have wrapped between them): their dispatches or batches are in
    /// no entry's calls or time, so a total over a batch that dropped one is short of it.
    pub dropped: u64,
}

impl ProfileReport {
    /// Total GPU nanoseconds over all kernels (saturating at `u64::MAX`).
    pub fn total_ns(&self) -> u64 {
        self.entries.iter().fold(0, |t, e| t.saturating_add(e.2))
    }
}

impl std::fmt::Display for ProfileReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // As wide as the longest name (BATCH_SPAN is 40 characters), 32 at least.
        let width = self
            .entries
            .iter()
            .map(|(name, ..)| name.chars().count())
            .fold(32, usize::max);
        writeln!(
            f,
            "{:<width$} {:>8} {:>14} {:>12}",
            "kernel", "calls", "total µs", "mean µs"
        )?;
        for (name, calls, ns) in &self.entries {
            let mean = *ns as f64 / (*calls).max(1) as f64 / 1e3;
            writeln!(
                f,
                "{name:<width$} {calls:>8} {:>14.1} {mean:>12.2}",
                *ns as f64 / 1e3
            )?;
        }
        if self.dropped > 0 {
            writeln!(f, "({} invalid timestamp pairs dropped)", self.dropped)?;
        }
        Ok(())
    }
}

/// Profiler resources and totals (lives in the batch, created when profiling is first enabled).
pub(crate) struct ProfilerState {
    /// Whether dispatches are being timed.
    pub enabled: bool,
    /// Timestamps are written inside passes (the device has
    /// `TIMESTAMP_QUERY_INSIDE_PASSES`); tests clear it to cover the per-pass fallback.
    pub inside_passes: bool,
    /// What a timestamp pair brackets.
    pub granularity: ProfileGranularity,
    /// Dispatches timed in the current batch, and in all collected ones.
    pending_dispatches: u64,
    dispatches: u64,
    /// The map of a read-back that timed out (its callback's receiver), until it is undone.
    stale_map: Option<flume::Receiver<Result<(), wgpu::BufferAsyncError>>>,
    query_set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    period_ns: f64,
    /// The timestamp counter's width, where known ([`timestamp_valid_bits`]).
    valid_bits: Option<u32>,
    /// Pairs dropped as no measurement ([`timestamp_ticks`]).
    dropped: u64,
    /// Kernel names of the pairs recorded in the current batch.
    pending: Vec<&'static str>,
    totals: BTreeMap<&'static str, (u64, u64)>,
}

impl ProfilerState {
    /// Creates the query set and its buffers. `features`: those the engine may use (less
    /// `EngineOptions::disabled_features`), which decide where timestamps are written.
    pub fn new(
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        features: wgpu::Features,
    ) -> ProfilerState {
        let count = PROFILE_PAIRS * 2;
        let bytes = u64::from(count) * u64::from(wgpu::QUERY_SIZE);
        let buffer = |label, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        ProfilerState {
            enabled: false,
            inside_passes: features.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES),
            granularity: ProfileGranularity::Dispatch,
            pending_dispatches: 0,
            dispatches: 0,
            stale_map: None,
            query_set: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("bitnet-wgpu profiler"),
                ty: wgpu::QueryType::Timestamp,
                count,
            }),
            resolve: buffer(
                "bitnet-wgpu profiler resolve",
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            ),
            readback: buffer(
                "bitnet-wgpu profiler readback",
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
            period_ns: f64::from(queue.get_timestamp_period()),
            valid_bits: timestamp_valid_bits(device, queue),
            dropped: 0,
            pending: Vec::new(),
            totals: BTreeMap::new(),
        }
    }

    /// Whether dispatches of the current batch were given timestamp writes.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Drops the pending samples (their batch failed and was re-submitted untimed).
    pub fn discard(&mut self) {
        self.pending.clear();
        self.pending_dispatches = 0;
    }

    /// Counts one dispatch of the batch being encoded (for [`ProfileReport::dispatches`]).
    pub fn count_dispatch(&mut self) {
        self.pending_dispatches += 1;
    }

    /// Whether a pair brackets each dispatch (else the whole batch).
    pub fn per_dispatch(&self) -> bool {
        self.granularity == ProfileGranularity::Dispatch
    }

    /// Pass timestamp writes of a batch span: `begin` on the batch's first dispatch pass, `end`
    /// on its last (None when the pass is neither).
    pub fn span_writes(
        &mut self,
        begin: bool,
        end: bool,
    ) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        if !begin && !end {
            return None;
        }
        if begin {
            self.pending.push(BATCH_SPAN);
        }
        Some(wgpu::ComputePassTimestampWrites {
            query_set: &self.query_set,
            beginning_of_pass_write_index: begin.then_some(0),
            end_of_pass_write_index: end.then_some(1),
        })
    }

    /// The query indices (before, after) of the next dispatch of `kernel`.
    pub fn next_pair(&mut self, kernel: &'static str) -> (u32, u32) {
        let pair = self.pending.len() as u32;
        self.pending.push(kernel);
        (2 * pair, 2 * pair + 1)
    }

    /// The query set the pairs are written to.
    pub fn query_set(&self) -> &wgpu::QuerySet {
        &self.query_set
    }

    /// Pass-boundary timestamp writes for the next dispatch of `kernel` (its own pass).
    pub fn next_writes(&mut self, kernel: &'static str) -> wgpu::ComputePassTimestampWrites<'_> {
        let (begin, end) = self.next_pair(kernel);
        wgpu::ComputePassTimestampWrites {
            query_set: &self.query_set,
            beginning_of_pass_write_index: Some(begin),
            end_of_pass_write_index: Some(end),
        }
    }

    /// Records the resolve of this batch's queries; returns whether there is anything to collect.
    pub fn record_resolve(&mut self, encoder: &mut wgpu::CommandEncoder) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        // A read-back that timed out in `collect` may still be mapping (or mapped since): a
        // batch copying into the buffer then would fail validation — the user's work must never
        // fail for the profiler's sake, so this batch goes untimed, or the stale map is dropped.
        if let Some(rx) = &self.stale_map {
            match rx.try_recv() {
                Ok(Ok(())) => {
                    self.readback.unmap();
                    self.stale_map = None;
                }
                Ok(Err(_)) | Err(flume::TryRecvError::Disconnected) => self.stale_map = None,
                Err(flume::TryRecvError::Empty) => {
                    log::warn!(
                        "profiler: the previous read-back is still pending; {} samples not recorded",
                        self.pending.len()
                    );
                    self.discard();
                    return false;
                }
            }
        }
        let count = 2 * self.pending.len() as u32;
        encoder.resolve_query_set(&self.query_set, 0..count, &self.resolve, 0);
        let bytes = u64::from(count) * u64::from(wgpu::QUERY_SIZE);
        encoder.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, bytes);
        true
    }

    /// After the batch's submission completed: reads the timestamps and adds them to the totals.
    /// `lost` reports a lost device, which ends the wait at once (samples dropped) instead of
    /// after the time limit.
    pub fn collect(
        &mut self,
        device: &wgpu::Device,
        lost: &dyn Fn() -> Option<crate::error::Error>,
        submission: wgpu::SubmissionIndex,
    ) {
        let bytes = 2 * self.pending.len() as u64 * u64::from(wgpu::QUERY_SIZE);
        let slice = self.readback.slice(0..bytes);
        let (tx, rx) = flume::bounded(1);
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        let _ = submission; // the map callback runs once it completed
        // Long enough for a heavy batch on a software adapter (one 14336 x 4096 x 512 BitLinear
        // took over 10 s on lavapipe); past it the samples are dropped (see `record_resolve`).
        let limit = Some(std::time::Duration::from_secs(120));
        let waited =
            crate::wait::poll_until(device, lost, limit, std::time::Duration::ZERO, || {
                !rx.is_empty()
            });
        let names = std::mem::take(&mut self.pending);
        let dispatches = std::mem::take(&mut self.pending_dispatches);
        if !matches!(waited, Ok(true)) {
            // Still mapping: `record_resolve` unmaps it (or skips timing) before the buffer is
            // written again.
            let why = match waited {
                Err(e) => format!("ended ({e})"),
                Ok(_) => "timed out".to_string(),
            };
            log::warn!(
                "profiler: timestamp read-back {why}; dropping {} samples",
                names.len()
            );
            self.stale_map = Some(rx);
            return;
        }
        if !matches!(rx.try_recv(), Ok(Ok(()))) {
            log::warn!(
                "profiler: timestamp read-back failed; dropping {} samples",
                names.len()
            );
            return;
        }
        if let Ok(view) = slice.get_mapped_range() {
            let stamps: Vec<u64> = view
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect();
            let mut invalid = 0u64;
            for (i, name) in names.iter().enumerate() {
                let Some(ticks) =
                    timestamp_ticks(stamps[2 * i], stamps[2 * i + 1], self.valid_bits)
                else {
                    invalid += 1;
                    continue;
                };
                let e = self.totals.entry(name).or_default();
                // Saturating: a bogus pair can be near u64::MAX ns, and this runs on the
                // submission thread: an overflow panic would surface in the user's call.
                e.0 = e.0.saturating_add(1);
                e.1 = e.1.saturating_add((ticks as f64 * self.period_ns) as u64);
            }
            if invalid > 0 {
                log::warn!(
                    "profiler: {invalid} invalid timestamp pairs dropped (end before begin)"
                );
                self.dropped = self.dropped.saturating_add(invalid);
            }
            self.dispatches = self.dispatches.saturating_add(dispatches);
        }
        self.readback.unmap();
    }

    /// The report so far.
    pub fn report(&self) -> ProfileReport {
        let mut entries: Vec<_> = self.totals.iter().map(|(n, (c, t))| (*n, *c, *t)).collect();
        entries.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)));
        ProfileReport {
            entries,
            dispatches: self.dispatches,
            dropped: self.dropped,
        }
    }

    /// Clears the totals.
    pub fn reset(&mut self) {
        self.totals.clear();
        self.dispatches = 0;
        self.dropped = 0;
    }
}

/// The ticks from `begin` to `end` of one timestamp pair, or `None` when the pair is no
/// measurement. A counter of `valid_bits` below 64 (Vulkan's `timestampValidBits`, 36 to 64 where
/// timestamps exist; see [`timestamp_valid_bits`]) wraps modulo 2^bits — every 95 minutes at 36
/// bits and 83 ns per tick — so an `end` below `begin` is a pair the wrap came between, whose
/// length is their difference modulo 2^bits. A 64-bit counter does not wrap in centuries: there,
/// and where the width is not known (`None`), an `end` below `begin` is a bogus pair. So is a
/// stamp with bits above the valid ones set, and any pair of a counter of 0 bits. Callers drop
/// such pairs: read as 0 ns (saturating), they used to pull means and medians down and make the
/// candidate autotune was timing look free.
pub fn timestamp_ticks(begin: u64, end: u64, valid_bits: Option<u32>) -> Option<u64> {
    match valid_bits {
        Some(0) => None,
        Some(bits @ 1..64) => {
            let mask = (1u64 << bits) - 1;
            ((begin | end) & !mask == 0).then(|| end.wrapping_sub(begin) & mask)
        }
        _ => end.checked_sub(begin),
    }
}

/// How many low bits of a timestamp of `queue` count (for [`timestamp_ticks`]): the Vulkan
/// queue family's `timestampValidBits`, which wgpu does not report, asked through its hal.
/// `None` where that is not known: off Vulkan (Metal and D3D12 timestamps are 64-bit), and on a
/// device of an instance with `InstanceFlags::AUTOMATIC_TIMESTAMP_NORMALIZATION`, whose resolved
/// stamps are nanoseconds (its queue's period reads 1.0 where the driver's does not), which do
/// not wrap at a power of two.
#[cfg(all(not(target_arch = "wasm32"), not(target_vendor = "apple")))]
pub fn timestamp_valid_bits(device: &wgpu::Device, queue: &wgpu::Queue) -> Option<u32> {
    // SAFETY: the hal device is only read (its instance and physical device handles, its queue
    // family index) to query properties, which changes no state of the device wgpu owns.
    let hal = unsafe { device.as_hal::<wgpu::hal::api::Vulkan>() }?;
    let instance = hal.shared_instance().raw_instance();
    // SAFETY: the physical device belongs to this instance.
    let (families, limits) = unsafe {
        let pd = hal.raw_physical_device();
        (
            instance.get_physical_device_queue_family_properties(pd),
            instance.get_physical_device_properties(pd).limits,
        )
    };
    let normalized = queue.get_timestamp_period() == 1.0 && limits.timestamp_period != 1.0;
    let family = families.get(usize::try_from(hal.queue_family_index()).ok()?)?;
    (!normalized).then_some(family.timestamp_valid_bits)
}

/// Off Vulkan targets: not known (Metal timestamps are 64-bit).
#[cfg(not(all(not(target_arch = "wasm32"), not(target_vendor = "apple"))))]
pub fn timestamp_valid_bits(_device: &wgpu::Device, _queue: &wgpu::Queue) -> Option<u32> {
    None
}

#[cfg(test)]
#[path = "profiler_tests.rs"]
mod tests;
