//! Mapping a read's staging buffer once its submission completed: the map callback copies the
//! bytes out (as words) and hands them on, and the buffer goes back to the pool unmapped whether
//! the callback ran or wgpu dropped it unrun (`Staging`).

use std::sync::Arc;

use crate::context::Gpu;
use crate::error::{Error, Result};
use crate::poller::{Abort, Completion};
use crate::pool::PooledBuffer;

/// Maps the first `len` bytes of `staging` once `index` completed and passes a copy of them, as
/// little-endian words (the last one zero-padded), to `then` inside the map callback (so the
/// result is stored even if the future is dropped). Words, not bytes: `f32` and `u32` reads take
/// the vector as it is (`readback.rs`), so the one copy out of mapped memory is the only one.
pub(crate) fn map_then<T, F>(
    gpu: &Gpu,
    staging: PooledBuffer,
    len: u64,
    index: wgpu::SubmissionIndex,
    then: F,
) -> impl Future<Output = Result<T>> + Send + 'static + use<T, F>
where
    T: Send + 'static,
    F: FnOnce(Result<Vec<u32>>) -> Result<T> + Send + 'static,
{
    let (done, rx) = Completion::new();
    let in_callback = Arc::clone(&done);
    let len4 = len.next_multiple_of(4);
    let buffer = staging.buffer().clone();
    let staging = Staging {
        buffer: Some(staging),
        device: gpu.device.clone(),
    };
    buffer
        .slice(0..len4)
        .map_async(wgpu::MapMode::Read, move |r| {
            let staging = staging.into_inner();
            let bytes = r.map_err(|e| Error::Map(e.to_string())).and_then(|()| {
                let b = staging.buffer();
                let copied = b
                    .slice(0..len4)
                    .get_mapped_range()
                    .map(|view| words_of(&view))
                    .map_err(|e| Error::Map(e.to_string()));
                b.unmap();
                copied
            });
            drop(staging); // back to the pool, unmapped
            in_callback.complete(then(bytes));
        });
    let _ = index; // the map callback runs once this submission completed
    let waiter: Arc<dyn Abort> = done;
    gpu.poller.watch(&waiter);
    drop(waiter);
    async move {
        rx.recv_async()
            .await
            .unwrap_or_else(|_| Err(Error::Map("the read-back was lost".into())))
    }
}

/// A read's staging buffer, lent to its map callback. A callback that panics during a poll
/// (an application's, on a shared device) makes wgpu drop that poll's remaining callbacks
/// without running them; their buffers are mapped by then, and one that went back to the pool
/// mapped would fail every later read that drew it. Dropped unrun, this unmaps its buffer first
/// (inside an error scope: whether wgpu had mapped it is not known here).
struct Staging {
    buffer: Option<PooledBuffer>,
    device: wgpu::Device,
}

impl Staging {
    /// The buffer, for the callback that runs (and unmaps it itself).
    fn into_inner(mut self) -> PooledBuffer {
        self.buffer.take().expect("taken only here, once")
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(staging) = self.buffer.take() {
            let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
            staging.buffer().unmap();
            drop(scope.pop());
        }
    }
}

/// `bytes` (a multiple of 4 long) as little-endian words: one copy where the mapping is
/// word-aligned (wgpu maps at `MAP_ALIGNMENT`), a copy through a zeroed vector otherwise.
fn words_of(bytes: &[u8]) -> Vec<u32> {
    match bytemuck::try_cast_slice::<u8, u32>(bytes) {
        Ok(words) => words.to_vec(),
        Err(_) => bytemuck::pod_collect_to_vec(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::BufferKind;

    /// Maps `buffer` and polls until its callback ran, returning the map's outcome.
    fn map_now(device: &wgpu::Device, buffer: &wgpu::Buffer) -> std::result::Result<(), String> {
        let (tx, rx) = flume::bounded(1);
        buffer.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r.map_err(|e| e.to_string()));
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let _ = device.poll(wgpu::PollType::Poll);
            if let Ok(r) = rx.try_recv() {
                return r;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the map never completed"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// A staging buffer whose map callback wgpu dropped unrun (another callback of the poll
    /// panicked) goes back to the pool unmapped: the next read that draws it can map it. An
    /// unmapped one dropped the same way raises no device error.
    #[test]
    fn a_staging_buffer_dropped_unread_goes_back_unmapped() {
        let e = crate::test_gpu::gpu();
        let g = e.gpu_context().unwrap();
        let staging = g
            .pool
            .alloc(BufferKind::Readback, 256, "test staging")
            .unwrap();
        let buffer = staging.buffer().clone();
        map_now(&g.device, &buffer).unwrap();
        drop(Staging {
            buffer: Some(staging),
            device: g.device.clone(),
        });
        assert_eq!(map_now(&g.device, &buffer), Ok(()));
        buffer.unmap();
        let idle = g
            .pool
            .alloc(BufferKind::Readback, 256, "test staging")
            .unwrap();
        drop(Staging {
            buffer: Some(idle),
            device: g.device.clone(),
        });
        assert!(g.take_uncaptured().is_none());
    }

    /// End to end, a read whose map callback wgpu drops unrun (an application's callback
    /// panicked first in the completion thread's poll) fails with a typed error, and its staging
    /// buffer serves the next read.
    #[test]
    fn a_read_dropped_by_a_panicking_poll_fails_and_its_buffer_serves_again() {
        let e = crate::test_gpu::gpu_with(crate::engine::EngineOptions {
            idle_flush: None,
            ..Default::default()
        });
        e.sync().unwrap();
        let g = e.gpu_context().unwrap();
        let index = g.queue.submit([]);
        let (_app, _) = crate::test_gpu::panicking_map(g);
        let staging = g
            .pool
            .alloc(BufferKind::Readback, 256, "test staging")
            .unwrap();
        let raw = staging.buffer().clone();
        let r = pollster::block_on(map_then(g, staging, 256, index.clone(), |r| r));
        assert!(matches!(r, Err(Error::Map(_))), "{r:?}");
        let again = g
            .pool
            .alloc(BufferKind::Readback, 256, "test staging")
            .unwrap();
        assert!(
            again.buffer() == &raw,
            "the pool hands the same buffer out again"
        );
        let r = pollster::block_on(map_then(g, again, 256, index, |r| r));
        assert_eq!(r.map(|w| w.len()), Ok(64));
        assert!(g.take_uncaptured().is_none());
    }
}
