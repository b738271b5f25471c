//! [`Counted`]: a shared, immutable value with an atomic count and no weak references, the
//! tensor header's pointer.
//!
//! Why not `Arc`: dropping the last `Arc` decrements the strong count and then the weak one,
//! two atomic read-modify-writes, and a small op on the CPU engine drops a header per call
//! (perf, a 256-value ReLU on the lavapipe host: the weak decrement alone was ~7 % of the
//! call). Without weak references a handle that finds the count at 1 is the only one: no
//! other handle exists to clone it, so the last drop is a load, not a read-modify-write, and
//! a fresh allocation's count is a plain store.
//!
//! The memory-ordering argument is `Arc`'s: clones increment with `Relaxed` (a clone needs a
//! live handle, which already keeps the value alive); every drop that is not the last
//! decrements with `Release`; the last drop's `Acquire` (the load that saw 1, or the fence
//! after the decrement that reached 0) orders every other handle's uses before the value is
//! dropped.

use std::alloc::{Layout, dealloc, handle_alloc_error};
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering, fence};

/// A value shared by counted handles; see the module docs.
pub(crate) struct Counted<T> {
    ptr: NonNull<Block<T>>,
    /// This handle owns a share of a `Block<T>` (for drop checking and auto traits).
    owns: PhantomData<Block<T>>,
}

/// An allocated block not yet holding a value ([`Counted::uninit`]); dropped unwritten, it is
/// freed.
pub(crate) struct Uninit<T> {
    ptr: NonNull<Block<T>>,
}

impl<T> Uninit<T> {
    /// Writes `value` in and returns its first handle (count 1).
    #[inline(always)]
    pub fn write(self, value: T) -> Counted<T> {
        let this = std::mem::ManuallyDrop::new(self);
        let raw = this.ptr.as_ptr();
        // SAFETY: `raw` is a fresh allocation of `Block<T>`'s layout that nothing else
        // points to; both fields are written before any handle reads them.
        unsafe {
            (&raw mut (*raw).count).write(AtomicUsize::new(1));
            (&raw mut (*raw).value).write(value);
        }
        Counted {
            ptr: this.ptr,
            owns: PhantomData,
        }
    }
}

impl<T> Drop for Uninit<T> {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout by `Counted::uninit`, and holding no value.
        unsafe { dealloc(self.ptr.as_ptr().cast(), Layout::new::<Block<T>>()) }
    }
}

/// The allocation: the count, then the value.
struct Block<T> {
    count: AtomicUsize,
    value: T,
}

/// Beyond this many handles the count could wrap (as `Arc`, abort rather than risk a
/// use-after-free: only leaked handles can get here).
const MAX_COUNT: usize = isize::MAX as usize;

// SAFETY: as `Arc<T>`: handles on several threads share `&T` (so `T: Sync`) and the last one,
// on any thread, drops `T` (so `T: Send`).
unsafe impl<T: Send + Sync> Send for Counted<T> {}
// SAFETY: as above; `&Counted<T>` hands out `&T` and clones.
unsafe impl<T: Send + Sync> Sync for Counted<T> {}

impl<T> Counted<T> {
    /// A block for a value, allocated: [`Uninit::write`] then puts the value in and makes the
    /// handle. Two steps so that the allocation happens before the value expression is built:
    /// `Counted::uninit().write(T { .. })` builds it straight in the allocation, where a value
    /// passed in (`Arc::new`'s way) is built on the stack before the allocation call and copied
    /// over, a `memcpy` of a tensor header per op.
    #[inline(always)]
    pub fn uninit() -> Uninit<T> {
        let layout = Layout::new::<Block<T>>();
        // SAFETY: the layout is not zero-sized (it holds the count).
        let raw = unsafe { std::alloc::alloc(layout) }.cast::<Block<T>>();
        let Some(ptr) = NonNull::new(raw) else {
            handle_alloc_error(layout)
        };
        Uninit { ptr }
    }

    fn block(&self) -> &Block<T> {
        // SAFETY: a live handle keeps the block allocated and initialized.
        unsafe { self.ptr.as_ref() }
    }

    /// How many handles share the value (a snapshot: other threads may clone or drop theirs).
    pub fn count(this: &Counted<T>) -> usize {
        this.block().count.load(Ordering::Relaxed)
    }

    /// The value, when `this` is its only handle; `this` back otherwise.
    pub fn try_unwrap(this: Counted<T>) -> Result<T, Counted<T>> {
        if this.block().count.load(Ordering::Acquire) != 1 {
            return Err(this);
        }
        let this = std::mem::ManuallyDrop::new(this);
        // SAFETY: the only handle (count 1, and no weak references exist), so no other thread
        // can reach the block; the value is moved out once and the block freed without
        // dropping it again.
        unsafe {
            let value = (&raw const (*this.ptr.as_ptr()).value).read();
            dealloc(this.ptr.as_ptr().cast(), Layout::new::<Block<T>>());
            Ok(value)
        }
    }

    /// Drops the value and frees the block: the last handle's drop.
    #[inline(never)]
    fn drop_last(&mut self) {
        // SAFETY: called once, by the last handle, after the `Acquire` that orders every
        // other handle's uses before it.
        unsafe {
            std::ptr::drop_in_place(&raw mut (*self.ptr.as_ptr()).value);
            dealloc(self.ptr.as_ptr().cast(), Layout::new::<Block<T>>());
        }
    }
}

impl<T> Clone for Counted<T> {
    #[inline]
    fn clone(&self) -> Counted<T> {
        let old = self.block().count.fetch_add(1, Ordering::Relaxed);
        if old > MAX_COUNT {
            std::process::abort();
        }
        Counted {
            ptr: self.ptr,
            owns: PhantomData,
        }
    }
}

impl<T> Drop for Counted<T> {
    #[inline]
    fn drop(&mut self) {
        let count = &self.block().count;
        // Count 1 seen with `Acquire`: this is the only handle, and the last one.
        if count.load(Ordering::Acquire) != 1 {
            if count.fetch_sub(1, Ordering::Release) != 1 {
                return;
            }
            fence(Ordering::Acquire);
        }
        self.drop_last();
    }
}

impl<T> Deref for Counted<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.block().value
    }
}

impl<T: fmt::Debug> fmt::Debug for Counted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::Counted;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its drops.
    struct Tracked<'a>(&'a AtomicUsize, u64);

    impl Drop for Tracked<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_value_drops_once_after_the_last_handle() {
        let drops = AtomicUsize::new(0);
        let a = Counted::uninit().write(Tracked(&drops, 7));
        let b = a.clone();
        assert_eq!(Counted::count(&a), 2);
        drop(a);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        assert_eq!(b.1, 7);
        assert_eq!(Counted::count(&b), 1);
        drop(b);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn handles_dropped_on_many_threads_drop_the_value_once() {
        let drops = AtomicUsize::new(0);
        for round in 0..50u64 {
            let first = Counted::uninit().write(Tracked(&drops, round));
            std::thread::scope(|s| {
                for _ in 0..4 {
                    let mine = first.clone();
                    s.spawn(move || {
                        let more: Vec<_> = (0..100).map(|_| mine.clone()).collect();
                        assert!(more.iter().all(|h| h.1 == round));
                    });
                }
            });
            assert_eq!(Counted::count(&first), 1);
            drop(first);
        }
        assert_eq!(drops.load(Ordering::SeqCst), 50);
    }

    /// A block dropped before its value was written is freed without dropping a value (under
    /// AddressSanitizer, also without a leak).
    #[test]
    fn an_unwritten_block_drops_no_value() {
        let drops = AtomicUsize::new(0);
        drop(Counted::<Tracked<'_>>::uninit());
        let written = Counted::uninit().write(Tracked(&drops, 1));
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(written);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn try_unwrap_takes_the_value_only_from_the_only_handle() {
        let drops = AtomicUsize::new(0);
        let a = Counted::uninit().write(Tracked(&drops, 3));
        let b = a.clone();
        let a = Counted::try_unwrap(a).err().expect("shared: refused");
        drop(b);
        let value = Counted::try_unwrap(a).ok().expect("only handle: taken");
        assert_eq!((value.1, drops.load(Ordering::SeqCst)), (3, 0));
        drop(value);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }
}
