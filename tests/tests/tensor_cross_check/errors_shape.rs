//! Errors of `slice` and `concat` (kept apart from `errors.rs` for its size): bad axes, ranges
//! and shapes give the very error cpu-ref returns, on the GPU and the CPU engine; dtypes and
//! engines are rejected by name; and a value is never an error, but an error a tensor's lineage
//! carries surfaces when the output is read. Uses its own engines so the deferred non-finite
//! flags stay inside these tests.

use bitnet_tests::gpu_engine;
use bitnet_wgpu::cpu_ref::ops as cpu;
use bitnet_wgpu::cpu_ref::{self, Tensor as Host};
use bitnet_wgpu::{DType, Engine, Error};

use super::common::{cpu_error, gpu_error, up, values};

fn same(what: &str, gpu: Error, cpu: Error) {
    assert_eq!(gpu, cpu, "{what}: engine and cpu-ref errors differ");
}

#[test]
fn bad_axes_ranges_and_shapes_give_cpu_ref_errors() {
    for e in [gpu_engine(), Engine::cpu()] {
        let v = values(1, 2 * 3 * 4, -1.0, 1.0);
        let x = up(&e, &v, &[2, 3, 4]);
        let hx = Host::new(v.clone(), &[2, 3, 4]).unwrap();
        #[allow(clippy::reversed_empty_ranges)]
        let slices = [(3, 0..1), (0, 1..1), (2, 3..1), (2, 2..5), (1, 3..4)];
        for (axis, r) in slices {
            same(
                &format!("slice axis {axis} {r:?}"),
                gpu_error(e.slice(&x, axis, r.clone())),
                cpu_error(cpu::slice(&hx, axis, r)),
            );
        }
        let (y, hy) = (
            up(&e, &v[..8], &[2, 4]),
            Host::new(v[..8].to_vec(), &[2, 4]).unwrap(),
        );
        let (z, hz) = (
            up(&e, &v[..12], &[3, 4]),
            Host::new(v[..12].to_vec(), &[3, 4]).unwrap(),
        );
        same(
            "concat of nothing",
            gpu_error(e.concat(&[], 0)),
            cpu_error(cpu::concat::<f32>(&[], 0)),
        );
        same(
            "concat axis",
            gpu_error(e.concat(&[&y, &z], 2)),
            cpu_error(cpu::concat(&[&hy, &hz], 2)),
        );
        // z is [3, 4]: on axis 1 it needs y's 2 rows with its own 4 columns, so the error names
        // [2, 4] as expected and [3, 4] as given (not the first input's shape).
        let err = gpu_error(e.concat(&[&y, &y, &z], 1));
        same(
            "concat rows",
            err.clone(),
            cpu_error(cpu::concat(&[&hy, &hy, &hz], 1)),
        );
        assert!(
            format!("{err:?}").contains("expected: [2, 4], got: [3, 4]"),
            "{err:?}"
        );
        same(
            "concat rank",
            gpu_error(e.concat(&[&y, &x], 0)),
            cpu_error(cpu::concat(&[&hy, &hx], 0)),
        );
    }
}

#[test]
fn dtypes_and_engines_are_rejected_by_name() {
    let e = gpu_engine();
    let f = up(&e, &[1.0; 8], &[2, 4]);
    let u = e.upload_u32(&[1; 8], &[2, 4]).unwrap();
    let w = cpu_ref::quantize_weights(&values(2, 2 * 16, -1.0, 1.0), 2, 16).unwrap();
    let xq = cpu_ref::quantize_activations(&values(3, 2 * 16, -1.0, 1.0), 2, 16).unwrap();
    let others = [
        e.upload_f16(&[bitnet_wgpu::half::f16::ONE; 8], &[2, 4])
            .unwrap(),
        e.upload_i8(&[1; 8], &[2, 4]).unwrap(),
        e.upload_ternary(&w).unwrap(),
        e.upload_activations(&xq).unwrap(),
    ];
    for t in &others {
        let want = |op| Error::DTypeMismatch {
            op,
            expected: DType::F32,
            got: t.dtype(),
        };
        assert_eq!(e.slice(t, 0, 0..1).unwrap_err(), want("slice"));
        assert_eq!(e.concat(&[t, t], 0).unwrap_err(), want("concat"));
        // After a word tensor, a tensor of another dtype is a mismatch with the first's dtype.
        let err = e.concat(&[&u, t], 0).unwrap_err();
        assert_eq!(
            err,
            Error::DTypeMismatch {
                op: "concat",
                expected: DType::U32,
                got: t.dtype()
            }
        );
    }
    let mixed = |a, b| Error::DTypeMismatch {
        op: "concat",
        expected: a,
        got: b,
    };
    assert_eq!(
        e.concat(&[&f, &u], 0).unwrap_err(),
        mixed(DType::F32, DType::U32)
    );
    assert_eq!(
        e.concat(&[&u, &u, &f], 1).unwrap_err(),
        mixed(DType::U32, DType::F32)
    );
    // Tensors of another engine, either way round and in any position.
    let cpu = Engine::cpu();
    let foreign = up(&cpu, &[1.0; 8], &[2, 4]);
    let mismatch = |op| Error::EngineMismatch { op };
    assert_eq!(e.slice(&foreign, 0, 0..1).unwrap_err(), mismatch("slice"));
    assert_eq!(
        e.concat(&[&f, &foreign], 0).unwrap_err(),
        mismatch("concat")
    );
    assert_eq!(
        cpu.concat(&[&foreign, &f], 0).unwrap_err(),
        mismatch("concat")
    );
    assert_eq!(cpu.slice(&f, 1, 0..1).unwrap_err(), mismatch("slice"));
    let other_gpu = gpu_engine();
    assert_eq!(other_gpu.concat(&[&f], 0).unwrap_err(), mismatch("concat"));
}

#[test]
fn values_are_never_errors_but_a_poisoned_lineage_is_reported() {
    let e = gpu_engine();
    let mut v = values(4, 2 * 8, -1.0, 1.0);
    v[5] = f32::NAN;
    v[11] = f32::INFINITY;
    // Moving NaN and infinity is no error: they come back as they went in.
    let x = up(&e, &v, &[2, 8]);
    let s = e.slice(&x, 1, 3..6).unwrap();
    let got = s.read_f32().unwrap();
    assert!(got[2].is_nan() && got[3] == f32::INFINITY, "{got:?}");
    assert!(e.concat(&[&x, &s], 1).unwrap().read_f32().is_ok());
    // A copy flags the NaN: everything moved out of it reads as the copy's error, whether the
    // flag is known when the op is recorded or only when its output is read.
    let want = Error::NonFinite {
        op: "copy",
        tensor: "x",
        index: 5,
    };
    let y = e.copy(&x).unwrap();
    let clean = up(&e, &v[..8], &[1, 8]);
    for (what, t) in [
        ("slice", e.slice(&y, 1, 0..2)),
        (
            "slice of a reshape",
            e.slice(&y.reshape(&[4, 4]).unwrap(), 0, 3..4),
        ),
        ("concat", e.concat(&[&clean, &y], 0)),
        (
            "slice of a concat",
            e.concat(&[&clean, &y], 0)
                .and_then(|c| e.slice(&c, 0, 0..1)),
        ),
    ] {
        assert_eq!(gpu_error(t), want, "{what}");
    }
    // The poisoned tensor stays poisoned once known; the clean one is untouched.
    assert_eq!(gpu_error(e.slice(&y, 0, 1..2)), want);
    assert_eq!(
        e.slice(&clean, 1, 0..3).unwrap().read_f32().unwrap(),
        v[..3]
    );
}
