//! Running the MSL kernels on the emulated GPU the way the engine chains them: weight
//! quantization (abs-sum levels, then pack), activation quantization, and BitLinear through the
//! GEMV (f32 input) or the GEMM (quantized input). Shared by `emulated.rs` and `fast_math.rs`.

use bitnet_cpu_ref::TernaryMatrix;
use bitnet_kernels_msl::{
    ABS_SUM_BLOCKS, BITLINEAR_GEMM, BITLINEAR_GEMV, OutputMode, QUANTIZE_ACTIVATIONS,
    QUANTIZE_WEIGHTS, dispatch,
};

use super::harness::{Harness, f32_bytes, to_f32s, to_u32s, u32_bytes};

/// Groups per grid dimension when folding linear grids (small, to exercise the folded path).
pub const FOLD: u64 = 3;

/// Weight quantization on the emulated GPU: abs-sum levels, then quantize + pack.
/// Returns (packed words, s, status word of level 0, status word of the pack).
pub fn msl_quantize_weights(
    h: &Harness,
    w: &[f32],
    n: usize,
    k: usize,
) -> (Vec<u32>, f32, u32, u32) {
    let mut level = f32_bytes(w);
    let mut flagged = u32::MAX;
    for (i, &count) in dispatch::abs_sum_levels(n * k).unwrap().iter().enumerate() {
        let d = dispatch::abs_sum_level(count, i == 0).unwrap();
        let out = vec![0u8; 4 * count.div_ceil(4096)];
        let r = h.launch(&ABS_SUM_BLOCKS, &d, vec![level, out], FOLD);
        if i == 0 {
            flagged = r.status[0];
        }
        level = r.storage.into_iter().nth(1).unwrap();
    }
    assert_eq!(level.len(), 4, "the last level leaves one sum");
    let d = dispatch::quantize_weights(n, k).unwrap();
    let packed = vec![0u8; 4 * n * k.div_ceil(16)];
    let r = h.launch(
        &QUANTIZE_WEIGHTS,
        &d,
        vec![f32_bytes(w), level, packed, vec![0; 4]],
        FOLD,
    );
    let scale = to_f32s(&r.storage[3])[0];
    (to_u32s(&r.storage[2]), scale, flagged, r.status[0])
}

/// Activation quantization on the emulated GPU: (packed words, absmax, status word 0).
pub fn msl_quantize_activations(
    h: &Harness,
    x: &[f32],
    m: usize,
    k: usize,
) -> (Vec<u32>, Vec<f32>, u32) {
    let d = dispatch::quantize_activations(m, k).unwrap();
    let packed = vec![0u8; 4 * m * 4 * k.div_ceil(16)];
    let r = h.launch(
        &QUANTIZE_ACTIVATIONS,
        &d,
        vec![f32_bytes(x), packed, vec![0; 4 * m]],
        FOLD,
    );
    (to_u32s(&r.storage[1]), to_f32s(&r.storage[2]), r.status[0])
}

/// The BitLinear input of one kernel: f32 activations for the fused GEMV, or the activations
/// quantized by the MSL quantizer for the GEMM.
pub enum Input<'a> {
    Gemv(&'a [f32]),
    Gemm(&'a (Vec<u32>, Vec<f32>, u32)),
}

impl<'a> Input<'a> {
    /// The input `kernel` needs (quantizing on the emulated GPU for the GEMM into `cache`).
    pub fn new(
        h: &Harness,
        gemm: bool,
        x: &'a [f32],
        m: usize,
        k: usize,
        cache: &'a mut Option<(Vec<u32>, Vec<f32>, u32)>,
    ) -> Self {
        if gemm {
            Input::Gemm(cache.get_or_insert_with(|| msl_quantize_activations(h, x, m, k)))
        } else {
            Input::Gemv(x)
        }
    }
}

/// The BitLinear output of one kernel in one mode, as raw bits, plus its status words.
pub fn msl_bitlinear(
    h: &Harness,
    input: &Input,
    m: usize,
    w: &TernaryMatrix,
    mode: OutputMode,
) -> (Vec<u32>, [u32; 4]) {
    let (n, k) = (w.n(), w.k());
    let weights = u32_bytes(w.words());
    let scale = f32_bytes(&[w.scale()]);
    let y = vec![0u8; 4 * m * n];
    let r = match input {
        Input::Gemm((packed, absmax, _)) => {
            let d = dispatch::bitlinear_gemm(m, n, k, mode).unwrap();
            let storage = vec![u32_bytes(packed), f32_bytes(absmax), weights, scale, y];
            h.launch(&BITLINEAR_GEMM, &d, storage, FOLD)
        }
        Input::Gemv(x) => {
            let d = dispatch::bitlinear_gemv(m, n, k, mode).unwrap();
            h.launch(
                &BITLINEAR_GEMV,
                &d,
                vec![f32_bytes(x), weights, scale, y],
                FOLD,
            )
        }
    };
    (to_u32s(r.storage.last().unwrap()), r.status)
}
