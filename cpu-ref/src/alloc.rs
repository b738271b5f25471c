//! Fallible allocation of outputs whose size derives from input shapes.
//!
//! A few small inputs can describe a huge output (a broadcast of `[M, 1]` with `[1, N]`, a
//! `[M, 1] · [1, N]` matmul, BitLinear with `K = 1`). Allocating such an output with `vec![..]`
//! aborts the process when the host refuses it; every op allocates it here instead, so the caller
//! gets an error. Buffers sized like an input that already exists keep plain allocation.

use crate::error::{Error, Result};

/// A `Vec` of `len` zeros, or [`Error::SizeOverflow`] if its byte size does not fit
/// `isize::MAX` (the most any allocation may hold), or [`Error::OutOfMemory`] if the host cannot
/// provide it.
///
/// A large block is allocated zeroed (as `vec![0; len]` is), not filled: it comes from the OS
/// as zero pages that are only faulted in where the op writes, so an op split into tasks faults
/// them in on all its threads. Filled on the calling thread, a 32 MB output cost 12 ms before
/// any task ran (H200 host, 2026-12-01), more than the op. A small one is filled ([`zeros`]).
pub(crate) fn zeroed<T: bytemuck::Zeroable + Copy>(
    op: &'static str,
    what: &'static str,
    len: usize,
) -> Result<Vec<T>> {
    let bytes = byte_size::<T>(op, len)?;
    if bytes == 0 {
        return Ok(Vec::new());
    }
    if bytes < FILL_BELOW_BYTES {
        let mut v = with_capacity(op, what, len)?;
        v.resize(len, T::zeroed());
        return Ok(v);
    }
    let layout = std::alloc::Layout::array::<T>(len).map_err(|_| Error::SizeOverflow {
        op,
        what: "output bytes exceed isize::MAX",
    })?;
    // SAFETY: `layout` has a nonzero size (checked above).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        return Err(Error::OutOfMemory { op, what, bytes });
    }
    // SAFETY: `ptr` was allocated by the global allocator with the layout of `len` `T`s (what a
    // `Vec` of capacity `len` owns), and all `len` values are initialized: all-zero bytes are a
    // valid `T` (`Zeroable`).
    Ok(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// Below this many bytes a zeroed buffer is allocated and then filled, not allocated zeroed:
/// glibc's `calloc` never takes a block from the per-thread cache that `malloc` and `free` use,
/// and in a loop of small ops its way through the arena consolidated the fast bins on every
/// call. That was over half of a 256-value activation quantization (lavapipe host, interleaved:
/// 120-123 ns with `vec![0; len]`, 53-55 ns filled). Past this size `calloc` serves large
/// blocks from fresh zero pages (glibc maps blocks of 128 KiB and more on their own).
const FILL_BELOW_BYTES: usize = 64 << 10;

/// `len` zeros, as `vec![T::zeroed(); len]` but allocated by [`FILL_BELOW_BYTES`]'s rule: for
/// buffers sized like an input that already exists (the module docs), where a refused
/// allocation cannot come from the shapes alone.
pub(crate) fn zeros<T: bytemuck::Zeroable + Copy>(len: usize) -> Vec<T> {
    if len.saturating_mul(size_of::<T>()) < FILL_BELOW_BYTES {
        let mut v = Vec::with_capacity(len);
        v.resize(len, T::zeroed());
        v
    } else {
        vec![T::zeroed(); len]
    }
}

/// `len` values of `T` in bytes, or [`Error::SizeOverflow`] past `isize::MAX`.
fn byte_size<T>(op: &'static str, len: usize) -> Result<usize> {
    len.checked_mul(size_of::<T>())
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or(Error::SizeOverflow {
            op,
            what: "output bytes exceed isize::MAX",
        })
}

/// An empty `Vec` with room for exactly `len` values (for outputs filled by `extend`), with
/// [`zeroed`]'s errors.
pub(crate) fn with_capacity<T>(op: &'static str, what: &'static str, len: usize) -> Result<Vec<T>> {
    let bytes = byte_size::<T>(op, len)?;
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| Error::OutOfMemory { op, what, bytes })?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(zeroed::<u32>("t", "x", 3), Ok(vec![0; 3]));
        assert_eq!(zeroed::<f32>("t", "x", 0), Ok(vec![]));
        let too_big = Error::SizeOverflow {
            op: "t",
            what: "output bytes exceed isize::MAX",
        };
        // Byte size overflows usize; byte size just above isize::MAX.
        assert_eq!(zeroed::<f32>("t", "x", usize::MAX), Err(too_big.clone()));
        assert_eq!(
            zeroed::<u32>("t", "x", isize::MAX as usize / 4 + 1),
            Err(too_big)
        );
    }

    /// Both allocation routes, below and past `FILL_BELOW_BYTES`, return zeros of the length asked.
    #[test]
    fn small_and_large_buffers_are_zeros() {
        for len in [
            1,
            255,
            FILL_BELOW_BYTES / 4 - 1,
            FILL_BELOW_BYTES / 4,
            1 << 20,
        ] {
            let a = zeroed::<f32>("t", "x", len).unwrap();
            let b = zeros::<f32>(len);
            assert_eq!((a.len(), b.len()), (len, len));
            assert!(a.iter().chain(&b).all(|&v| v.to_bits() == 0));
        }
    }

    #[test]
    fn refused_allocation_is_out_of_memory() {
        // 2^60 bytes: within isize::MAX but beyond any host's address space.
        let r = zeroed::<u8>("t", "x", 1 << 60);
        assert_eq!(
            r,
            Err(Error::OutOfMemory {
                op: "t",
                what: "x",
                bytes: 1 << 60
            })
        );
    }
}
