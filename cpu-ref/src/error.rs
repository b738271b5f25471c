//! The one error type of `bitnet-cpu-ref`.
//!
//! Every fallible entry point validates its input up front and reports what is wrong and where, so a
//! caller never gets a panic, a NaN, or a silently wrong result from bad input.

/// Everything that can go wrong in `bitnet-cpu-ref`. Each variant names the operation (`op`) that
/// rejected its input, and what and where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A buffer's length (or one dimension) disagrees with what the other arguments imply.
    #[error("{op}: {what} has length {got}, expected {expected}")]
    LengthMismatch {
        /// The operation that rejected its input.
        op: &'static str,
        /// Which buffer or dimension is wrong.
        what: &'static str,
        /// The length the other arguments require.
        expected: usize,
        /// The length that was given.
        got: usize,
    },
    /// Two shapes are incompatible (matmul inner dimensions, broadcasting, rank requirements).
    #[error("{op}: {what}: expected shape {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// The operation that rejected its input.
        op: &'static str,
        /// What the shapes describe and which rule they break.
        what: &'static str,
        /// The shape the rule requires (or the left operand's shape for broadcasting).
        expected: Vec<usize>,
        /// The shape that was given (or the right operand's shape for broadcasting).
        got: Vec<usize>,
    },
    /// A tensor has the wrong number of dimensions (e.g. a rank-2 `x` where RoPE needs
    /// `[S, H, D]`).
    #[error("{op}: {tensor} must have rank {expected}, got shape {got:?}")]
    RankMismatch {
        /// The operation that rejected its input.
        op: &'static str,
        /// Which tensor has the wrong rank.
        tensor: &'static str,
        /// The rank the operation needs.
        expected: usize,
        /// The shape that was given.
        got: Vec<usize>,
    },
    /// A dimension is zero where the operation needs at least one element (e.g. `K = 0`).
    #[error("{op}: dimension {dim} is zero")]
    ZeroDimension {
        /// The operation that rejected its input.
        op: &'static str,
        /// The name of the zero dimension (`"K"`, `"N"`, `"M"`, `"shape[1]"`, ...).
        dim: &'static str,
    },
    /// A value is NaN or infinite: in an input tensor, or in an output that overflowed
    /// (`tensor` then says `"output"` or names the intermediate).
    #[error("{op}: non-finite value in {tensor} at flat index {index}")]
    NonFinite {
        /// The operation that rejected its input or produced the value.
        op: &'static str,
        /// Which tensor holds the value.
        tensor: &'static str,
        /// Row-major flat index of the first non-finite value found.
        index: usize,
    },
    /// A size computation overflows `usize`, or a dimension exceeds what exact arithmetic allows.
    #[error("{op}: size overflow: {what}")]
    SizeOverflow {
        /// The operation that rejected its input.
        op: &'static str,
        /// Which size overflowed and why it matters.
        what: &'static str,
    },
    /// A packed ternary word holds code 3 (which no weight maps to), or a padding position that is
    /// not code 1 (weight 0), so the words are not a valid [`crate::TernaryMatrix`].
    #[error("{op}: invalid packed code {code} in word {word} at weight {position} of that word")]
    InvalidPackedCode {
        /// The operation that rejected its input.
        op: &'static str,
        /// Index of the offending `u32` in the packed buffer.
        word: usize,
        /// Weight position `0..16` inside the word (in `k` order, not bit order).
        position: usize,
        /// The 2-bit code found there.
        code: u32,
    },
    /// The host could not allocate an output whose size the input shapes imply (e.g. a broadcast
    /// of `[2^24, 1]` with `[1, 2^24]`, 1 PiB of f32). Reported instead of aborting the process;
    /// sizes that do not even fit `isize::MAX` bytes are [`Error::SizeOverflow`] instead.
    #[error("{op}: out of memory allocating {bytes} bytes for {what}")]
    OutOfMemory {
        /// The operation whose output could not be allocated.
        op: &'static str,
        /// Which buffer.
        what: &'static str,
        /// The size of the failed allocation in bytes.
        bytes: usize,
    },
    /// An axis argument is not below the rank of the tensor it indexes (`slice`, `concat`).
    #[error("{op}: axis {axis} is out of range for a tensor of rank {rank}")]
    AxisOutOfRange {
        /// The operation that rejected its input.
        op: &'static str,
        /// The axis given.
        axis: usize,
        /// The rank of the tensor (of the first input for `concat`).
        rank: usize,
    },
    /// A range along an axis is empty, reversed, or ends past the axis length (`slice`): tensors
    /// are never empty, so a slice must keep at least one element.
    #[error("{op}: range {start}..{end} of axis {axis} is not a non-empty range within 0..{len}")]
    InvalidRange {
        /// The operation that rejected its input.
        op: &'static str,
        /// The axis the range indexes.
        axis: usize,
        /// The range's start.
        start: usize,
        /// The range's end (exclusive).
        end: usize,
        /// The axis length.
        len: usize,
    },
    /// A scalar argument is outside its valid range (e.g. a non-positive scale, an odd RoPE
    /// head dimension, an unavailable SIMD level).
    #[error("{op}: invalid argument {what}: {reason}")]
    InvalidArgument {
        /// The operation that rejected its input.
        op: &'static str,
        /// The argument's name.
        what: &'static str,
        /// Why it is invalid.
        reason: &'static str,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
