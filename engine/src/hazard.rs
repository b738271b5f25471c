//! Which launches will wait behind a pipeline barrier: wgpu's barrier rule, predicted on the host
//! so that a kernel plan can suit where its dispatch will run.
//!
//! wgpu orders a dispatch after every earlier one in the pass when it binds a buffer an earlier
//! dispatch wrote (read after write) or binds for writing a buffer an earlier one used (write
//! after read or write), and the Vulkan barrier it records waits for *all* earlier work. On the
//! H200 a dispatch behind a barrier starts on an empty GPU (2.0 µs dispatch floor, then its own
//! ramp-up), while one without overlaps the dispatches before it. The two want different kernels:
//! a GEMV on an empty GPU is latency-bound and wants many workgroups; a GEMV overlapping others
//! is throughput-bound and wants few, wide ones that amortize their per-workgroup prologue. On
//! the H200, forcing either plan on every GEMV lost one decode stack: the throughput plan made the
//! independent stack 176 µs (latency plan: 331 µs) but the chained one 1115 µs (924 µs); choosing
//! per dispatch gets 176 and 936 µs.
//!
//! Every pooled buffer carries [`UseMarks`]: the launch numbers (`Gpu::next_seq`, plus one) of
//! the last launch that wrote it and the last one that bound it at all; they stay with the wgpu
//! buffer through the pool's free list, as wgpu's own tracking does. A mark above
//! [`Submitted`] belongs to work not yet submitted — work the new dispatch will share a command
//! buffer with, behind a barrier. Work already submitted counts as done: it is ahead in the queue
//! and usually finished by the time the next batch is encoded.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::context::Gpu;
use crate::tensor::{Storage, Tensor};

/// Launch marks of one buffer (0 = never used by a launch).
#[derive(Debug, Default)]
pub(crate) struct UseMarks {
    last_write: AtomicU64,
    last_use: AtomicU64,
}

impl UseMarks {
    /// Records that launch `seq` binds the buffer (`writes`: for writing).
    pub fn stamp(&self, seq: u64, writes: bool) {
        let mark = seq + 1;
        self.last_use.fetch_max(mark, Ordering::Relaxed);
        if writes {
            self.last_write.fetch_max(mark, Ordering::Relaxed);
        }
    }
}

/// The highest launch mark that has left the pending batch (submitted, or failed on the way).
#[derive(Debug, Default)]
pub(crate) struct Submitted(AtomicU64);

impl Submitted {
    /// Records that the launches up to number `seq` left the pending batch.
    pub fn advance(&self, seq: u64) {
        self.0.fetch_max(seq + 1, Ordering::Relaxed);
    }

    /// Whether a launch reading a buffer with `marks` would wait for unsubmitted work.
    pub fn read_waits(&self, marks: &UseMarks) -> bool {
        marks.last_write.load(Ordering::Relaxed) > self.0.load(Ordering::Relaxed)
    }

    /// Whether a launch writing a buffer with `marks` would wait for unsubmitted work.
    pub fn write_waits(&self, marks: &UseMarks) -> bool {
        marks.last_use.load(Ordering::Relaxed) > self.0.load(Ordering::Relaxed)
    }
}

/// Whether a launch reading `reads` and writing `writes` would run with no barrier before it,
/// alongside earlier work (kernels with a latency and a throughput variant pick by this).
pub(crate) fn launch_overlaps(gpu: &Gpu, reads: &[&Tensor], writes: &[&Tensor]) -> bool {
    !(reads.iter().any(|t| tensor_waits(gpu, t, false))
        || writes.iter().any(|t| tensor_waits(gpu, t, true)))
}

/// Whether a launch binding `t` (`writes`: for writing) would wait for unsubmitted work on `gpu`
/// (host tensors never do: uploading them is a separate step).
pub(crate) fn tensor_waits(gpu: &Gpu, t: &Tensor, writes: bool) -> bool {
    match t.data() {
        Storage::Device(b) if writes => gpu.submitted.write_waits(b.marks()),
        Storage::Device(b) => gpu.submitted.read_waits(b.marks()),
        Storage::Host(_) | Storage::HostTernary(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_wait_until_their_launch_is_submitted() {
        let (marks, done) = (UseMarks::default(), Submitted::default());
        assert!(!done.read_waits(&marks) && !done.write_waits(&marks));
        marks.stamp(5, false);
        assert!(
            !done.read_waits(&marks),
            "a read after a read needs no barrier"
        );
        assert!(
            done.write_waits(&marks),
            "a write after a pending read does"
        );
        marks.stamp(7, true);
        assert!(done.read_waits(&marks));
        done.advance(6);
        assert!(done.read_waits(&marks) && done.write_waits(&marks));
        done.advance(7);
        assert!(!done.read_waits(&marks) && !done.write_waits(&marks));
        done.advance(3);
        assert!(!done.write_waits(&marks), "submission marks never go back");
    }

    /// The marks follow real launches: an op's output waits until its batch is submitted, and
    /// its input then waits for a write (its reader) but not for a read.
    #[test]
    fn launch_outputs_wait_until_submitted() {
        let e = crate::test_gpu::gpu_with(crate::engine::EngineOptions {
            idle_flush: None,
            ..Default::default()
        });
        let g = e.gpu_context().unwrap();
        let x = e.upload_f32(&[1.0, -2.0, 3.0, 0.5], &[1, 4]).unwrap();
        e.sync().unwrap();
        assert!(!tensor_waits(g, &x, false) && !tensor_waits(g, &x, true));
        let y = e.binary_scalar(crate::BinaryOp::Mul, &x, 2.0).unwrap();
        assert!(
            tensor_waits(g, &y, false),
            "y is written by a pending launch"
        );
        assert!(tensor_waits(g, &x, true), "x is read by a pending launch");
        assert!(
            !tensor_waits(g, &x, false),
            "reading x again needs no barrier"
        );
        e.sync().unwrap();
        assert!(!tensor_waits(g, &y, false) && !tensor_waits(g, &x, true));
        assert_eq!(y.read_f32().unwrap(), vec![2.0, -4.0, 6.0, 1.0]);
    }

    /// A launch overlaps the pending ones unless it reads what they write or writes what they
    /// use: writing a buffer a pending launch only reads (write after read) waits too.
    #[test]
    fn a_launch_writing_a_pending_input_does_not_overlap() {
        let e = crate::test_gpu::gpu_with(crate::engine::EngineOptions {
            idle_flush: None,
            ..Default::default()
        });
        let g = e.gpu_context().unwrap();
        let x = e.upload_f32(&[1.0; 4], &[4]).unwrap();
        let z = e.upload_f32(&[0.0; 4], &[4]).unwrap();
        e.sync().unwrap();
        let y = e.binary_scalar(crate::BinaryOp::Mul, &x, 2.0).unwrap();
        assert!(launch_overlaps(g, &[&x], &[&z]), "read after read");
        assert!(!launch_overlaps(g, &[&y], &[&z]), "read after write");
        assert!(!launch_overlaps(g, &[&z], &[&x]), "write after read");
        assert!(!launch_overlaps(g, &[&z], &[&y]), "write after write");
        e.sync().unwrap();
        assert!(launch_overlaps(g, &[&y], &[&x]), "all of it submitted");
    }
}
