//! How the attention section is timed: [`Engine::attention`] on the GPU as every case is
//! ([`crate::timing::time_calls`]: a batch of back-to-back calls ÷ the calls), the KV cache's
//! append the same way, and cpu-ref's attention with wall time (as [`crate::cpu`]).
//!
//! GPU calls rotate through resident (q, k, v) sets until they exceed `--cold-bytes`, as the
//! other cases rotate their weights (the PyTorch peers use the same rule), and drop each output
//! at once: the next call's write waits behind it, as a dependent op in a decode step would.

use crate::attention::AttentionSpec;
use crate::data;
use crate::measure::{Measurement, RepeatPolicy, time_cpu};
use crate::timing::{MIN_GROUP, group, time_calls};
use bitnet_wgpu::{CpuTensor, Engine, Tensor};
use std::hint::black_box;

/// The (q, k, v) sets a case rotates through: enough that they exceed `cold_bytes`, at least
/// one, at most `crate::gpu::MAX_COPIES` (512), as the other cases.
pub fn copies(spec: &AttentionSpec, cold_bytes: u64) -> usize {
    cold_bytes
        .div_ceil(spec.input_bytes().max(1))
        .clamp(1, crate::gpu::MAX_COPIES) as usize
}

/// Host values of q, k and v for `spec` (seeded by the shape, so GPU and CPU see the same).
fn host_inputs(spec: &AttentionSpec) -> [Vec<f32>; 3] {
    let seed = (spec.tq as u64) << 40 ^ (spec.tk as u64) << 20 ^ spec.layout.hq as u64;
    let len = |s: [usize; 3]| s.iter().product::<usize>();
    [
        data::floats(len(spec.q_shape()), seed),
        data::floats(len(spec.kv_shape()), seed + 1),
        data::floats(len(spec.kv_shape()), seed + 2),
    ]
}

/// GPU time per call of `Engine::attention` for `spec` on `e` (`timestamps`: its profiler is
/// on), over `copies` resident input sets. One call's output is read back first: a kernel that
/// fails (a non-finite input or score, a lost device) is an error here, not a fast figure.
pub fn time_gpu(
    e: &Engine,
    timestamps: bool,
    policy: RepeatPolicy,
    spec: &AttentionSpec,
    copies: usize,
) -> Result<Measurement, String> {
    let err = |x: bitnet_wgpu::Error| x.to_string();
    let [q, k, v] = host_inputs(spec);
    let (qs, kvs) = (spec.q_shape(), spec.kv_shape());
    let sets = (0..copies.max(1))
        .map(|_| {
            Ok::<_, bitnet_wgpu::Error>((
                e.upload_f32(&q, &qs)?,
                e.upload_f32(&k, &kvs)?,
                e.upload_f32(&v, &kvs)?,
            ))
        })
        .collect::<Result<Vec<(Tensor, Tensor, Tensor)>, _>>()
        .map_err(err)?;
    let call = |i: usize| {
        let (q, k, v) = &sets[i % sets.len()];
        e.attention(q, k, v, spec.scale(), true)
    };
    call(0).and_then(|out| out.read_f32()).map_err(err)?;
    time_calls(e, timestamps, policy, group(sets.len()), |i| {
        call(i).map(drop).map_err(err)
    })
}

/// GPU time per call of one KV append: k and v of one position (`[1, Hkv, D]`) appended to a
/// cache holding `spec.tk` positions, then truncated back to `spec.tk` — every call writes the
/// same position, no view of the cache is alive (so no copy on write), and each append waits
/// for the one before it (serial, as in a decode loop).
pub fn time_append(
    e: &Engine,
    timestamps: bool,
    policy: RepeatPolicy,
    spec: &AttentionSpec,
) -> Result<Measurement, String> {
    let err = |x: bitnet_wgpu::Error| x.to_string();
    let (hkv, d, tk) = (spec.layout.hkv, spec.layout.d, spec.tk);
    let mut cache = e.kv_cache(tk + 1, hkv, d).map_err(err)?;
    {
        // The Tk positions already held (their upload is dropped once copied in).
        let [_, k, v] = host_inputs(spec);
        let kvs = spec.kv_shape();
        let k = e.upload_f32(&k, &kvs).map_err(err)?;
        let v = e.upload_f32(&v, &kvs).map_err(err)?;
        cache.append(&k, &v).map_err(err)?;
    }
    let row = data::floats(hkv * d, tk as u64);
    let k1 = e.upload_f32(&row, &[1, hkv, d]).map_err(err)?;
    let v1 = e.upload_f32(&row, &[1, hkv, d]).map_err(err)?;
    let m = time_calls(e, timestamps, policy, MIN_GROUP, |_| {
        cache.append(&k1, &v1).map_err(err)?;
        cache.truncate(tk);
        Ok(())
    })?;
    if cache.len() != tk {
        return Err(format!(
            "the cache holds {} positions, not {tk}",
            cache.len()
        ));
    }
    Ok(m)
}

/// cpu-ref's attention for `spec` on all host cores: resident inputs, wall time, median.
pub fn time_cpu_ref(spec: &AttentionSpec, policy: RepeatPolicy) -> Result<Measurement, String> {
    let err = |x: bitnet_cpu_ref::Error| x.to_string();
    let [q, k, v] = host_inputs(spec);
    let q = CpuTensor::new(q, &spec.q_shape()).map_err(err)?;
    let k = CpuTensor::new(k, &spec.kv_shape()).map_err(err)?;
    let v = CpuTensor::new(v, &spec.kv_shape()).map_err(err)?;
    time_cpu(policy, || {
        bitnet_cpu_ref::ops::attention(&q, &k, &v, spec.scale(), true).map(|o| drop(black_box(o)))
    })
    .map_err(err)
}
