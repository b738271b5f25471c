//! Tensors: a shape, a dtype, and storage on the host or on the device.
//!
//! A [`Tensor`] is immutable and cheap to clone (a counted handle, `counted.rs`): ops read
//! tensors and return new ones, so chaining ops records dispatches with no read-back. Device
//! storage is a pooled buffer that returns to the pool when the last clone drops. Packed ternary weights and quantized activations
//! carry a second buffer of scales (one per tensor / one per row).
//!
//! **A lost device.** Device storage is the only copy: the engine keeps no host copy of it and
//! no record of how to recompute it. Once the device is lost, every device tensor — an upload,
//! or an op's output not yet read, however far its launch got — reads as `Error::DeviceLost`;
//! tensors created afterwards are host tensors and their ops run on the CPU, so re-upload from
//! your own data. Only what the engine holds on the host survives: the host-facing ops
//! (`Engine::bitlinear`, [`crate::Linear`], [`crate::LinearChain`], ...) re-run on the CPU from
//! the caller's slices and the layers' host weights.
//!
//! **What a tensor costs.** A small op on the CPU engine (a 256-value ReLU: ~60 ns in cpu-ref)
//! costs little more than its allocations, so a tensor is one shared header holding its shape
//! (inline up to six axes, `dims.rs`), its engine (free to clone on the CPU engine), its
//! lineage and its storage (a host vector or a pooled buffer) in the same allocation; an op's
//! output is then as many allocations as a cpu-ref tensor (storage and header against storage
//! and shape). Views (`reshape`, the KV cache's prefix views) hold the header of the tensor they
//! view; storages shared outside tensors (RoPE's cached tables, a CPU engine's KV cache) sit
//! in an `Arc` of their own.
//!
//! Byte layouts (little-endian words; buffers are padded to a multiple of 4 bytes):
//!
//! | dtype | data | scales |
//! |---|---|---|
//! | `F32` / `U32` | `n` 4-byte values | – |
//! | `F16` | `n` halves, 2 per word | – |
//! | `I8` | `n` bytes, 4 per word, flat row-major | – |
//! | `Ternary` `[N, K]` | `N · words_per_row(K)` words (`layout.rs`) | 1 `f32`: the scale `s` |
//! | `QuantizedI8` `[M, K]` | `M · activation_words_per_row(K)` words (`layout.rs`) | `M` `f32`: row absmax |

use std::sync::Arc;

use crate::counted::Counted;
use crate::dims::Dims;
pub use crate::dtype::DType;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::fate::Lineage;
use crate::pool::PooledBuffer;

/// Where a tensor's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// Host memory (CPU engine, or a host-staged tensor).
    Host,
    /// A GPU buffer of the tensor's engine.
    Device,
}

/// One buffer of a tensor: host words or a pooled device buffer.
#[derive(Debug)]
pub(crate) enum Storage {
    /// Little-endian words, padded to whole words.
    Host(Vec<u32>),
    /// A ternary tensor's packed words on the host, as the validated matrix they came from (the
    /// CPU engine's weights, `Engine::upload_ternary`): its BitLinear runs on the matrix as it
    /// is, where converting the words back (a copy and a validation pass over every word) cost
    /// more than the product itself.
    HostTernary(Arc<bitnet_cpu_ref::TernaryMatrix>),
    /// A pooled device buffer, boxed: it is 80 bytes, and every tensor's header (the host
    /// tensors' too, whose fixed cost shows on small CPU ops) would otherwise carry its size.
    Device(Box<PooledBuffer>),
}

impl Storage {
    /// The words of a host storage (`None` on the device).
    pub fn host_words(&self) -> Option<&[u32]> {
        match self {
            Storage::Host(words) => Some(words),
            Storage::HostTernary(m) => Some(m.words()),
            Storage::Device(_) => None,
        }
    }
}

/// A tensor's bytes: its own, another tensor's, or a storage shared outside tensors.
#[derive(Debug)]
enum Bytes {
    /// Storage of this tensor's own (an op's output, an upload), in the header's allocation:
    /// one allocation fewer than an `Arc`ed storage, which was a tenth of a 256-value ReLU's
    /// time on the CPU engine.
    Own {
        data: Storage,
        /// Boxed: only packed dtypes have scales.
        scales: Option<Box<Storage>>,
    },
    /// The bytes of a tensor with [`Bytes::Own`] or [`Bytes::Shared`] ones, viewed under another
    /// shape (reshapes, prefix views): the view keeps that tensor's header, and so its
    /// storage, alive.
    View(Counted<Inner>),
    /// A storage shared outside tensors (RoPE's cached tables, a CPU engine's KV cache), never
    /// written while a tensor over it lives.
    Shared(Arc<Storage>),
}

#[derive(Debug)]
struct Inner {
    shape: Dims,
    dtype: DType,
    /// Before `engine`: a device storage returns to the pool while the engine is still held.
    bytes: Bytes,
    engine: Engine,
    /// The launches this tensor's bytes depend on (see `fate.rs`); empty for uploads.
    lineage: Lineage,
}

impl Inner {
    /// The header holding this tensor's storage (itself, or the tensor it views): a view of a
    /// view points at the first one's owner, so views never chain.
    fn owner(this: &Counted<Inner>) -> &Counted<Inner> {
        match &this.bytes {
            Bytes::View(owner) => owner,
            Bytes::Own { .. } | Bytes::Shared(_) => this,
        }
    }

    #[inline]
    fn data(&self) -> &Storage {
        match &self.bytes {
            Bytes::Own { data, .. } => data,
            Bytes::Shared(data) => data,
            Bytes::View(owner) => owner.data(),
        }
    }

    fn scales(&self) -> Option<&Storage> {
        match &self.bytes {
            Bytes::Own { scales, .. } => scales.as_deref(),
            Bytes::Shared(_) => None,
            Bytes::View(owner) => owner.scales(),
        }
    }
}

/// A tensor of one engine; see the module docs for layouts.
#[derive(Debug, Clone)]
pub struct Tensor {
    inner: Counted<Inner>,
}

impl Tensor {
    /// Assembles a tensor (storage already sized for `shape` and `dtype`).
    #[inline(always)]
    pub(crate) fn from_parts(
        engine: Engine,
        shape: &[usize],
        dtype: DType,
        data: Storage,
        scales: Option<Storage>,
    ) -> Tensor {
        let scales = scales.map(Box::new);
        Tensor::with_bytes(engine, shape, dtype, Bytes::Own { data, scales })
    }

    /// A tensor over a storage other tensors may share (a cached, never-written table).
    pub(crate) fn from_shared(
        engine: Engine,
        shape: &[usize],
        dtype: DType,
        data: Arc<Storage>,
    ) -> Tensor {
        Tensor::with_bytes(engine, shape, dtype, Bytes::Shared(data))
    }

    /// Builds the header in its allocation, the one way every header is made (`Counted::uninit`
    /// then `write`). Built on the stack and copied over (as `Arc::new(Inner { .. })` did), a
    /// 256-value ReLU on the CPU engine paid a `memcpy` call and stalls where the copy read back
    /// in 16-byte loads what had just been stored in 8-byte ones (lavapipe host, interleaved
    /// rounds: 94-97 ns that way, 72-77 ns in place). Always inlined, with `from_parts`: passed
    /// in by pointer, the storage met the same stall (ReLU 51 → 46 ns).
    #[inline(always)]
    fn with_bytes(engine: Engine, shape: &[usize], dtype: DType, bytes: Bytes) -> Tensor {
        Tensor {
            inner: Counted::uninit().write(Inner {
                shape: Dims::new(shape),
                dtype,
                bytes,
                engine,
                lineage: Lineage::default(),
            }),
        }
    }

    /// This tensor's data storage as a shareable one, for a cache that outlives it; the tensor
    /// back when another holds its storage too (a clone, a view) or it has scales.
    pub(crate) fn into_shared_storage(self) -> std::result::Result<Arc<Storage>, Tensor> {
        let inner = Counted::try_unwrap(self.inner).map_err(|inner| Tensor { inner })?;
        match inner.bytes {
            Bytes::Own { data, scales: None } => Ok(Arc::new(data)),
            Bytes::Shared(data) => Ok(data),
            bytes => Err(Tensor {
                inner: Counted::uninit().write(Inner { bytes, ..inner }),
            }),
        }
    }

    /// A tensor of `shape` over this tensor's bytes (a view: no copy) with an empty lineage.
    fn view(&self, shape: &[usize]) -> Tensor {
        Tensor::with_bytes(
            self.inner.engine.clone(),
            shape,
            self.inner.dtype,
            Bytes::View(Inner::owner(&self.inner).clone()),
        )
    }

    /// The same bytes under another shape (no copy, no GPU work): same dtype, same byte sizes;
    /// packed dtypes (`Ternary`, `QuantizedI8`) keep their row length `K` (the last dimension).
    /// Errors carried by the tensor's lineage stay with the view.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        const OP: &str = "reshape";
        let d = self.inner.dtype;
        let (old, new) = (d.data_bytes(&self.inner.shape), d.data_bytes(shape));
        let same =
            new.is_some() && old == new && d.scale_bytes(shape) == d.scale_bytes(self.shape());
        // Packed rows are padded to whole words: another K would read padding as values (or drop
        // values), so a packed tensor keeps its row length and only regroups its rows.
        let packed = matches!(d, DType::Ternary | DType::QuantizedI8);
        let same_k = !packed || shape.last() == self.inner.shape.last();
        if shape.contains(&0) || !same || !same_k {
            return Err(Error::ShapeMismatch {
                op: OP,
                detail: format!("cannot view {d} {:?} as {shape:?}", self.inner.shape),
            });
        }
        let view = self.view(shape);
        view.lineage().share(self.lineage());
        Ok(view)
    }

    /// A tensor of `shape` over the leading bytes of this tensor's data (the same storage, no
    /// copy, no GPU work) carrying exactly the lineages of `sources`. The KV cache's views and
    /// write targets: the caller guarantees `shape` fits the storage and keeps the bytes a view
    /// covers unchanged while the view lives.
    pub(crate) fn prefix_view(&self, shape: &[usize], sources: &[&Lineage]) -> Tensor {
        let view = self.view(shape);
        for l in sources {
            view.lineage().share(l);
        }
        view
    }

    /// Whether this tensor views another's bytes (a reshape, a prefix view): its storage may be
    /// larger than its own bytes.
    pub(crate) fn is_view(&self) -> bool {
        matches!(self.inner.bytes, Bytes::View(_))
    }

    /// Whether another tensor (a view, a reshape, a clone) shares this tensor's data storage.
    pub(crate) fn storage_shared(&self) -> bool {
        match &self.inner.bytes {
            Bytes::Own { .. } => Counted::count(&self.inner) > 1,
            Bytes::View(_) => true,
            Bytes::Shared(data) => Arc::strong_count(data) > 1,
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.inner.shape
    }

    /// The dtype.
    pub fn dtype(&self) -> DType {
        self.inner.dtype
    }

    /// Number of logical elements (product of the shape).
    pub fn len(&self) -> usize {
        self.inner.shape.iter().product()
    }

    /// Whether the tensor has no elements (never true for tensors the engine creates).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of data plus scales (before buffer padding and pool rounding).
    pub fn byte_size(&self) -> u64 {
        let d = self.inner.dtype;
        d.data_bytes(&self.inner.shape).unwrap_or(0) + d.scale_bytes(&self.inner.shape)
    }

    /// Where the bytes live.
    pub fn location(&self) -> Location {
        match *self.data() {
            Storage::Host(_) | Storage::HostTernary(_) => Location::Host,
            Storage::Device(_) => Location::Device,
        }
    }

    /// The engine that owns this tensor.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The data storage.
    #[inline]
    pub(crate) fn data(&self) -> &Storage {
        self.inner.data()
    }

    /// The scales storage (packed dtypes only).
    pub(crate) fn scales(&self) -> Option<&Storage> {
        self.inner.scales()
    }

    /// The launches this tensor's bytes depend on.
    pub(crate) fn lineage(&self) -> &Lineage {
        &self.inner.lineage
    }

    /// `Err(DTypeMismatch)` unless the dtype is `expected`.
    pub fn expect_dtype(&self, op: &'static str, expected: DType) -> Result<()> {
        if self.dtype() == expected {
            Ok(())
        } else {
            Err(Error::DTypeMismatch {
                op,
                expected,
                got: self.dtype(),
            })
        }
    }
}
