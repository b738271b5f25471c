//! `slice` and `concat` against `bitnet_cpu_ref::ops::{slice, concat}`, bit for bit: ranks 1-4,
//! every axis, ranges at the start, middle and end (single elements included), 1-5 inputs of
//! different lengths along the axis, `F32` and `U32`, NaN payloads and infinities moved as they
//! are. Their paths (chaining, host operands, the CPU engine, a small binding limit) are in
//! `shape_paths.rs`.

use bitnet_tests::Rng;
use bitnet_wgpu::cpu_ref::Tensor as Host;
use bitnet_wgpu::cpu_ref::ops as cpu;
use bitnet_wgpu::{Engine, Tensor};

use super::common::{engine, values};

/// Shapes whose axes have odd lengths, so runs start at offsets that are not multiples of 64
/// words (nor of any binding alignment).
pub const SHAPES: [&[usize]; 4] = [&[70], &[5, 67], &[3, 4, 33], &[2, 3, 5, 13]];

/// `n` f32 values with a NaN payload, infinities, -0.0 and a subnormal mixed in: their bits must
/// survive both ops.
pub fn odd_f32(seed: u64, n: usize) -> Vec<f32> {
    let mut v = values(seed, n, -4.0, 4.0);
    let odd = [
        f32::from_bits(0x7fc0_1234),
        f32::INFINITY,
        -0.0,
        f32::NEG_INFINITY,
        f32::from_bits(0xffa0_0001),
        f32::from_bits(1),
    ];
    for (i, x) in odd.into_iter().enumerate() {
        let at = (i * 7 + seed as usize) % n;
        v[at] = x;
    }
    v
}

/// `n` random words.
pub fn words(seed: u64, n: usize) -> Vec<u32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.next_u64() as u32).collect()
}

/// Non-empty ranges of an axis of length `len` (the whole axis left out): the start, the end, a
/// single element at each end and in the middle, and the interior.
pub fn ranges(len: usize) -> Vec<std::ops::Range<usize>> {
    let mut r = vec![0..1, len - 1..len, len / 2..len / 2 + 1, 1..len, 0..len - 1];
    if len > 2 {
        r.extend([1..len - 1, len / 3..2 * len / 3 + 1]);
    }
    r.retain(|r| r.start < r.end && r.end - r.start < len);
    r.dedup();
    r
}

/// The words of an `F32` or `U32` tensor (f32 as bits).
pub fn bits(t: &Tensor) -> Vec<u32> {
    match t.dtype() {
        bitnet_wgpu::DType::F32 => t.read_f32().unwrap().iter().map(|v| v.to_bits()).collect(),
        _ => t.read_u32().unwrap(),
    }
}

/// A word tensor on `e` (`f32` from the same bits when `float`) and its cpu-ref twin.
pub fn pair(e: &Engine, float: bool, w: &[u32], shape: &[usize]) -> (Tensor, Host<u32>) {
    let t = if float {
        let f: Vec<f32> = w.iter().map(|&b| f32::from_bits(b)).collect();
        e.upload_f32(&f, shape).unwrap()
    } else {
        e.upload_u32(w, shape).unwrap()
    };
    (t, Host::new(w.to_vec(), shape).unwrap())
}

/// The data of `n` elements of one test input: odd floats as bits, or random words.
fn data(float: bool, seed: u64, n: usize) -> Vec<u32> {
    if float {
        odd_f32(seed, n).iter().map(|v| v.to_bits()).collect()
    } else {
        words(seed, n)
    }
}

/// Asserts `got` holds exactly cpu-ref's `want` (shape and words).
pub fn same(what: &str, got: &Tensor, want: &Host<u32>) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    assert_eq!(bits(got), want.data(), "{what}: values");
}

/// Every slice of `ranges` on every axis of every shape, on `e`, matches cpu-ref.
pub fn check_slices(e: &Engine, label: &str) {
    for (s, shape) in SHAPES.iter().enumerate() {
        let n = shape.iter().product();
        for float in [true, false] {
            let (x, hx) = pair(e, float, &data(float, s as u64, n), shape);
            for axis in 0..shape.len() {
                for r in ranges(shape[axis]) {
                    let what = format!("{label}: slice {shape:?} axis {axis} {r:?} f32 {float}");
                    let got = e.slice(&x, axis, r.clone()).unwrap();
                    assert_eq!(got.dtype(), x.dtype(), "{what}");
                    same(&what, &got, &cpu::slice(&hx, axis, r).unwrap());
                }
            }
        }
    }
}

/// Concats of 1-5 inputs of lengths 3, 1, 5, 2, 7 along every axis of every shape, on `e`, match
/// cpu-ref.
pub fn check_concats(e: &Engine, label: &str) {
    const LENS: [usize; 5] = [3, 1, 5, 2, 7];
    for (s, shape) in SHAPES.iter().enumerate() {
        for axis in 0..shape.len() {
            for float in [true, false] {
                let inputs: Vec<(Tensor, Host<u32>)> = (0..LENS.len())
                    .map(|i| {
                        let mut sh = shape.to_vec();
                        sh[axis] = LENS[i];
                        let n = sh.iter().product();
                        pair(e, float, &data(float, 100 * s as u64 + i as u64, n), &sh)
                    })
                    .collect();
                for count in 1..=LENS.len() {
                    let what = format!("{label}: concat {count} x {shape:?} axis {axis} {float}");
                    let xs: Vec<&Tensor> = inputs[..count].iter().map(|p| &p.0).collect();
                    let hs: Vec<&Host<u32>> = inputs[..count].iter().map(|p| &p.1).collect();
                    let got = e.concat(&xs, axis).unwrap();
                    same(&what, &got, &cpu::concat(&hs, axis).unwrap());
                }
            }
        }
    }
}

#[test]
fn slices_of_every_axis_match_cpu_ref_bit_for_bit() {
    check_slices(engine(), "gpu");
}

#[test]
fn concats_of_one_to_five_inputs_match_cpu_ref_bit_for_bit() {
    check_concats(engine(), "gpu");
}

#[test]
fn a_whole_axis_and_a_single_input_are_the_input_itself() {
    let e = engine();
    let (x, hx) = pair(e, true, &data(true, 9, 5 * 67), &[5, 67]);
    for axis in 0..2 {
        let whole = e.slice(&x, axis, 0..x.shape()[axis]).unwrap();
        same("whole slice", &whole, &hx);
        same("one input", &e.concat(&[&x], axis).unwrap(), &hx);
    }
    // Slices along an axis concatenate back to the tensor.
    let parts: Vec<Tensor> = [0..2, 2..3, 3..5]
        .into_iter()
        .map(|r| e.slice(&x, 0, r).unwrap())
        .collect();
    let back = e.concat(&parts.iter().collect::<Vec<_>>(), 0).unwrap();
    same("slices joined", &back, &hx);
}
