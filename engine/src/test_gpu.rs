//! Test support: the GPU engines the unit tests run on. Without an adapter they fail loudly
//! (CI installs lavapipe) instead of skipping, which would hide breakage.

use crate::engine::{Engine, EngineOptions};

/// A GPU engine with `options`.
pub(crate) fn gpu_with(options: EngineOptions) -> Engine {
    Engine::gpu_with(options)
        .expect("GPU adapter required (CI has lavapipe); failing, not skipping")
}

/// A GPU engine with the default options.
pub(crate) fn gpu() -> Engine {
    gpu_with(EngineOptions::default())
}

/// Checks that `key` — a cache key of measured times — tells engine options apart where they
/// change the times: two default engines share it; a 64 KiB binding cap (every op chunked)
/// changes it, so does forcing uniform params where that changes the params mode, and so does
/// an engine without subgroups.
pub(crate) fn assert_key_follows_engine_options(key: impl Fn(&crate::context::Gpu) -> String) {
    let key = |e: &Engine| key(e.gpu_context().unwrap());
    let plain = gpu();
    assert_eq!(key(&plain), key(&gpu()), "two default engines");
    let capped = gpu_with(EngineOptions {
        max_binding_bytes: Some(64 << 10),
        ..Default::default()
    });
    assert_ne!(key(&plain), key(&capped), "a binding cap");
    let uniform = gpu_with(EngineOptions {
        force_uniform_params: true,
        ..Default::default()
    });
    let modes = |e: &Engine| e.gpu_context().unwrap().caps.params_mode;
    assert_eq!(
        key(&plain) != key(&uniform),
        modes(&plain) != modes(&uniform),
        "uniform params"
    );
    // Without subgroups (disabled here; the layout self-test drops them the same way) other
    // kernels run and are timed.
    let no_subgroups = gpu_with(EngineOptions {
        disabled_features: wgpu::Features::SUBGROUP,
        ..Default::default()
    });
    assert_ne!(key(&plain), key(&no_subgroups), "no subgroups");
}

/// A submitted, unread copy of `[1, NaN]` whose launch flags the NaN, on an engine without idle
/// flushes: the engine, the copy, and its launch's pending fate (with its status slot), for tests
/// of how reads resolve a fate.
pub(crate) fn flagged_copy() -> (
    Engine,
    crate::tensor::Tensor,
    std::sync::Arc<crate::fate::Fate>,
) {
    let e = gpu_with(EngineOptions {
        idle_flush: None,
        ..Default::default()
    });
    let x = e.upload_f32(&[1.0, f32::NAN], &[2]).unwrap();
    let y = e.copy(&x).unwrap();
    e.sync().unwrap();
    let fate = y
        .lineage()
        .snapshot()
        .pop()
        .expect("the copy's fate is pending");
    (e, y, fate)
}

/// An application's buffer on the engine's device, mapped with a callback that panics (an
/// application's, on a shared device); the flag is set when the callback ran. Keep the buffer
/// alive until then.
pub(crate) fn panicking_map(
    g: &crate::context::Gpu,
) -> (wgpu::Buffer, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let fired = std::sync::Arc::new(AtomicBool::new(false));
    let buf = g.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("application buffer"),
        size: 256,
        usage: wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    let f = std::sync::Arc::clone(&fired);
    buf.slice(..).map_async(wgpu::MapMode::Read, move |_| {
        f.store(true, Ordering::SeqCst);
        panic!("an application's map callback");
    });
    (buf, fired)
}
