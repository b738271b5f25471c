//! Small inputs whose output the host cannot hold: a typed error, never an aborted process.
//!
//! Each case asks for `2^24 · 2^24` four-byte outputs (1 PiB) from inputs of 64 MiB (the RoPE
//! table from one number): more than any host's address space, so the allocation fails even where the kernel overcommits memory.
//! Before outputs were allocated fallibly, each of these aborted the test binary with
//! `memory allocation of … bytes failed`.

use bitnet_cpu_ref::ops::{BinaryOp, binary, matmul, matmul_bt, rope_freqs};
use bitnet_cpu_ref::{
    Error, QuantizedActivations, TernaryMatrix, bitlinear, bitlinear_accumulate,
    bitlinear_quantized,
};

/// Rows (and columns) of every case: the output has `BIG²` elements.
const BIG: usize = 1 << 24;

/// Asserts `r` is the host running out of memory for `op`'s output.
fn assert_oom<T: std::fmt::Debug>(r: Result<T, Error>, expected_op: &str) {
    match r {
        Err(Error::OutOfMemory { op, bytes, .. }) => {
            assert_eq!(op, expected_op);
            assert_eq!(bytes, BIG * BIG * 4);
        }
        other => panic!("{expected_op}: expected OutOfMemory, got {other:?}"),
    }
}

fn column(len: usize) -> bitnet_cpu_ref::Tensor<f32> {
    bitnet_cpu_ref::Tensor::new(vec![1.0; len], &[len, 1]).unwrap()
}

fn row(len: usize) -> bitnet_cpu_ref::Tensor<f32> {
    bitnet_cpu_ref::Tensor::new(vec![1.0; len], &[1, len]).unwrap()
}

#[test]
fn broadcast_output_too_large_is_an_error() {
    assert_oom(binary(BinaryOp::Add, &column(BIG), &row(BIG)), "binary");
}

#[test]
fn matmul_output_too_large_is_an_error() {
    // [M, 1] · [1, N] and [M, 1] · [N, 1]^T.
    assert_oom(matmul(&column(BIG), &row(BIG)), "matmul");
    assert_oom(matmul_bt(&column(BIG), &column(BIG)), "matmul_bt");
}

#[test]
fn bitlinear_output_too_large_is_an_error() {
    // M activation rows against N weight rows, K = 1 (one packed word per weight row).
    let w = TernaryMatrix::from_i8(&vec![1; BIG], BIG, 1, 1.0).unwrap();
    let xq = QuantizedActivations::from_parts(vec![1; BIG], vec![1.0; BIG], BIG, 1).unwrap();
    assert_oom(bitlinear_accumulate(&xq, &w), "bitlinear_accumulate");
    assert_oom(bitlinear_quantized(&xq, &w), "bitlinear");
    assert_oom(bitlinear(&vec![1.0; BIG], BIG, &w), "bitlinear");
}

#[test]
fn rope_table_too_large_is_an_error() {
    // The table has D / 2 entries: D = 2 · BIG² asks for the same 1 PiB from one number.
    assert_oom(rope_freqs(2 * BIG * BIG, 10_000.0), "rope_freqs");
    // D / 2 four-byte entries past isize::MAX (the most any allocation may hold).
    let r = rope_freqs(usize::MAX - 1, 10_000.0);
    assert!(
        matches!(
            r,
            Err(Error::SizeOverflow {
                op: "rope_freqs",
                ..
            })
        ),
        "{r:?}"
    );
}
