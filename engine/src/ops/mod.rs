//! Ops, one file per family. Each op validates its input (typed errors), then runs on the GPU
//! through [`crate::launch::Launch`] or on the CPU through `bitnet-cpu-ref`.
//!
//! Families (owners in docs/ARCHITECTURE.md): `util` (fill, checked copy — infrastructure),
//! `stable` (the cpu-ref-compatible BitNet entry points), and the kernel families, which their
//! authors add here with one `mod` line each: `bitnet`, `matmul`, `elementwise`, `reduce`, `norm`,
//! `rope`.

mod stable;
mod util;
