//! Every tile of the tiled matmul against cpu-ref (the CPU engine), on shapes with partial tiles
//! in every direction: a test of the suite reaches only the tile its shape picks, and the larger
//! tiles only on outputs too large for lavapipe.

use half::f16;

use super::{TILES, Variant, tile_for};
use crate::engine::Engine;
use crate::error::Error;
use crate::tensor::DType;

/// `n` values in [-2, 2) from `seed`.
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
        })
        .collect()
}

/// `a · b` (b `[k, n]`, or `[n, k]` used transposed when `bt`) in f32 on `tile` of `gpu`.
fn f32_on_tile(
    gpu: &Engine,
    tile: &super::Tile,
    (a, b): (&[f32], &[f32]),
    (m, k, n): (usize, usize, usize),
    bt: bool,
) -> crate::Result<Vec<f32>> {
    let g = gpu.gpu_context().expect("a GPU engine");
    let b_shape = if bt { [n, k] } else { [k, n] };
    let v = Variant {
        op: if bt { "matmul_bt" } else { "matmul" },
        dtype: DType::F32,
        bt,
    };
    let (ga, gb) = (gpu.upload_f32(a, &[m, k])?, gpu.upload_f32(b, &b_shape)?);
    gpu.matmul_tiled(g, v, &ga, &gb, (m as u64, k as u64, n as u64), tile)?
        .read_f32()
}

/// The tiles whose kernels fit `gpu`'s workgroup memory; any other must refuse with
/// `LimitExceeded` rather than run.
fn tiles_that_fit(gpu: &Engine) -> Vec<&'static super::Tile> {
    let g = gpu.gpu_context().expect("a GPU engine");
    let storage = g.caps.limits.max_compute_workgroup_storage_size;
    let (fit, past): (Vec<_>, Vec<_>) = TILES.iter().partition(|t| t.workgroup_bytes <= storage);
    for tile in past {
        let got = f32_on_tile(gpu, tile, (&[1.0], &[1.0]), (1, 1, 1), true);
        assert!(
            matches!(got, Err(Error::LimitExceeded { .. })),
            "tile {}×{} past the limit: {got:?}",
            tile.rows,
            tile.cols
        );
    }
    fit
}

/// The same product by cpu-ref (the CPU engine).
fn f32_on_cpu(
    (a, b): (&[f32], &[f32]),
    (m, k, n): (usize, usize, usize),
    bt: bool,
) -> crate::Result<Vec<f32>> {
    let cpu = Engine::cpu();
    let b_shape = if bt { [n, k] } else { [k, n] };
    let (ca, cb) = (cpu.upload_f32(a, &[m, k])?, cpu.upload_f32(b, &b_shape)?);
    if bt {
        cpu.matmul_bt(&ca, &cb)
    } else {
        cpu.matmul(&ca, &cb)
    }?
    .read_f32()
}

/// Partial tiles in every direction; K from one partial chunk (33) to two rounds of the 4-row
/// tile's 16 chunks (2100), so every tile joins chunk sums and the 4-row tile folds rounds.
const SHAPES: [(usize, usize, usize); 5] = [
    (1, 1, 1),
    (37, 70, 150),
    (130, 33, 131),
    (5, 300, 257),
    (3, 2100, 41),
];

#[test]
fn every_tile_gives_cpu_refs_bits() {
    let (gpu, cpu) = (crate::test_gpu::gpu(), Engine::cpu());
    let g = gpu.gpu_context().expect("a GPU engine");
    for tile in tiles_that_fit(&gpu) {
        for (m, k, n) in SHAPES {
            for bt in [false, true] {
                let a = values(m as u64, m * k);
                let b = values(n as u64 + 7, k * n);
                let b_shape = if bt { [n, k] } else { [k, n] };
                let what = format!(
                    "tile {}×{}, M={m} K={k} N={n} bt={bt}",
                    tile.rows, tile.cols
                );
                // f32: the same bits.
                let got = f32_on_tile(&gpu, tile, (&a, &b), (m, k, n), bt).unwrap();
                let want = f32_on_cpu((&a, &b), (m, k, n), bt).unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "f32, {what}");
                // f16: within one f16 ulp (WGSL may round the final conversion either way).
                if !g.caps.has(wgpu::Features::SHADER_F16) {
                    continue;
                }
                let h = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>();
                let v = Variant {
                    op: if bt { "matmul_bt_f16" } else { "matmul_f16" },
                    dtype: DType::F16,
                    bt,
                };
                let (ga, gb) = (
                    gpu.upload_f16(&h(&a), &[m, k]).unwrap(),
                    gpu.upload_f16(&h(&b), &b_shape).unwrap(),
                );
                let got = gpu
                    .matmul_tiled(g, v, &ga, &gb, (m as u64, k as u64, n as u64), tile)
                    .unwrap()
                    .read_f16()
                    .unwrap();
                let (ca, cb) = (
                    cpu.upload_f16(&h(&a), &[m, k]).unwrap(),
                    cpu.upload_f16(&h(&b), &b_shape).unwrap(),
                );
                let want = if bt {
                    cpu.matmul_bt_f16(&ca, &cb)
                } else {
                    cpu.matmul_f16(&ca, &cb)
                };
                let want = want.unwrap().read_f16().unwrap();
                for (i, (x, y)) in got.iter().zip(&want).enumerate() {
                    let d = (i32::from(x.to_bits() as i16) - i32::from(y.to_bits() as i16)).abs();
                    assert!(d <= 1, "f16, {what}: output {i}: {x} against {y}");
                }
            }
        }
    }
}

/// A non-finite input (A, B in either layout) or output is reported with cpu-ref's error by
/// every tile.
#[test]
fn every_tile_reports_cpu_refs_non_finite_input() {
    let gpu = crate::test_gpu::gpu();
    let (m, k, n) = (37, 70, 150);
    // A NaN in A; an infinity in B, stored [K,N] and [N,K]; an output that overflows from
    // finite inputs (row 30 of A at 3e38 against B's first row of twos).
    let poisoned = |seed, len, at: usize, bad| {
        let mut v = values(seed, len);
        v[at] = bad;
        v
    };
    let mut huge = values(1, m * k);
    huge[30 * k..31 * k].fill(3e38);
    let twos = |len| vec![2.0f32; len];
    let cases = [
        (
            "a",
            poisoned(1, m * k, 20 * k + 33, f32::NAN),
            values(2, k * n),
            false,
        ),
        (
            "b",
            values(1, m * k),
            poisoned(2, k * n, 5 * n + 77, f32::INFINITY),
            false,
        ),
        (
            "b, transposed",
            values(1, m * k),
            poisoned(2, k * n, 99 * k + 3, f32::NAN),
            true,
        ),
        ("output", huge, twos(k * n), false),
    ];
    for (what, a, b, bt) in cases {
        let want = f32_on_cpu((&a, &b), (m, k, n), bt).unwrap_err();
        assert!(matches!(want, Error::NonFinite { .. }), "{what}: {want}");
        for tile in tiles_that_fit(&gpu) {
            let got = f32_on_tile(&gpu, tile, (&a, &b), (m, k, n), bt).unwrap_err();
            assert_eq!(got, want, "{what}, tile {}×{}", tile.rows, tile.cols);
        }
    }
}

/// The tile follows the output's size: the largest that leaves enough workgroups to fill a
/// large GPU.
#[test]
fn the_tile_follows_the_outputs_size() {
    let h100 = 49_152;
    let rows = |m, n| tile_for(m, n, true, h100).rows;
    let cols = |m, n| tile_for(m, n, true, h100).cols;
    assert_eq!(
        (rows(1, 128_256), cols(1, 128_256)),
        (4, 256),
        "a decode step's logits"
    );
    assert_eq!((rows(4, 32_000), cols(4, 32_000)), (4, 16));
    assert_eq!(
        (rows(1, 2560), cols(1, 2560)),
        (4, 16),
        "the 4 × 16 tile shares each column's k: any N"
    );
    assert_eq!(rows(4, 1), 4);
    assert_eq!(rows(8, 2560), 4, "two groups of 4 rows read B twice");
    assert_eq!(rows(16, 4096), 4);
    assert_eq!(rows(16, 4097), 16);
    assert_eq!((rows(8, 128_256), cols(8, 128_256)), (4, 256));
    let kn = |m, n| {
        let t = tile_for(m, n, false, h100);
        (t.rows, t.cols)
    };
    assert_eq!(
        kn(1, 128_256),
        (4, 16),
        "B stored [K,N] is read directly, 16 lanes"
    );
    assert_eq!(
        kn(8, 128_256),
        (4, 16),
        "read directly, 8 rows beat 16 × 64 at any N"
    );
    assert_eq!(kn(8, 2560), (4, 16));
    assert_eq!(kn(16, 6912), (4, 16));
    assert_eq!(kn(16, 32_000), (16, 64));
    assert_eq!(kn(32, 2560), (4, 16));
    assert_eq!(kn(32, 6912), (16, 64));
    assert_eq!(kn(33, 64), (16, 64));
    let webgpu_default = 16_384;
    let logits = tile_for(1, 128_256, true, webgpu_default);
    assert_eq!(
        (logits.rows, logits.cols),
        (4, 16),
        "the 4 × 256 kernel needs more workgroup memory than WebGPU's default"
    );
    assert_eq!(rows(9, 128_256), 16, "B read three times");
    assert_eq!(
        rows(12, 6912),
        16,
        "B read three times costs more than 16 × 64"
    );
    assert_eq!(rows(17, 64), 16);
    assert_eq!(
        rows(64, 2560),
        16,
        "40 tiles of 64 × 64 would leave most SMs idle"
    );
    assert_eq!(rows(256, 2560), 16);
    assert_eq!(rows(512, 2560), 64);
    assert_eq!(rows(512, 6912), 64);
    assert_eq!(rows(4096, 4096), 64);
    assert_eq!(
        rows(4100, 4096),
        64,
        "a partial tile of 4 rows is within a quarter"
    );
}

/// The CPU adapters' loop estimate counts every loop of each tile's kernel as not unrolled.
#[test]
fn the_loop_estimates_count_every_loop() {
    let [wide, narrow, few, few_wide] = &TILES;
    // Per 16 k: 16 products, 4 + 4 loads and as many checks, 2 exit tests; 16 stores.
    assert_eq!(wide.loops(32), 2 * 34 + 16);
    // Per 16 k: 16 products, 1 + 4 loads and as many checks, 2 exit tests; 4 stores.
    assert_eq!(narrow.loops(17), 2 * 28 + 4);
    // Per round of 16 chunks of 64 k, the longer of the two ways to walk a chunk: with B stored
    // [K,N], per 4 k, 4 loads of B with 4 rows of A each and as many checks and sums, and an exit
    // test (656); with B stored [N,K], 8 steps of 8 k: 8 loads of B and 2 of A and as many checks
    // and stores, 8 sums each reading 4 rows of A and an exit test, 6 exit tests (592). Then a
    // fold of 16 chunk sums and 2 exit tests; 4 stores.
    let direct = 16 * (2 * (4 + 16) + 1);
    assert!(direct > 8 * (2 * (8 + 2) + 8 * (1 + 4 + 1) + 6));
    let round = direct + 16 + 2;
    assert_eq!(few.loops(8), round + 4);
    assert_eq!(few.loops(1025), 2 * round + 4);
    // One lane: rounds of one chunk (4 staged steps of 16 k, shorter than the direct walk); a
    // fold of 1.
    let round = direct + 1 + 2;
    assert_eq!(few_wide.loops(64), round + 4);
    assert_eq!(few_wide.loops(65), 2 * round + 4);
}
