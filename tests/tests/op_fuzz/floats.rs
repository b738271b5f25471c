//! Steps on the float ops that agree with cpu-ref within a stated tolerance
//! (`bitnet_tests::TOLERANCES`) rather than bit for bit: compared at once and not kept
//! (`Program::run_close`).

use bitnet_tests::tolerance;
use bitnet_wgpu::{DType, Tensor};

use super::draw::Fuzz;
use super::layers::{HEAD_DIM, KV_HEADS};
use super::program::Mismatch;

/// Attention's score scale.
const SCALE: f32 = 0.5;

/// RoPE's head dimensions and base.
pub const ROPE_DIMS: [usize; 4] = [2, 4, 8, 64];
pub const ROPE_THETA: f32 = 10_000.0;

impl Fuzz {
    /// `matmul` or `matmul_bt` of a matrix and a new right-hand side, against a rounding bound
    /// rather than the suite's output-relative tolerance: with cancellation (random signs, K up
    /// to 640) a result far smaller than its terms carries their rounding, and the H200's
    /// driver (fused multiply-adds, its own order) differs from cpu-ref by more than 1e-4 of
    /// such a result. Any order of K products and sums is within `γ_K · Σ|a||b|` of the exact
    /// value (Higham, `γ_K = K u / (1 - K u)`), so two are within twice that.
    pub(super) fn matmul(&mut self) -> Result<(), Mismatch> {
        let a = self.matrix(None)?;
        let k = self.p.vars[a].gpu.shape()[1];
        let n = self.one_of(&[1, 5, 16, 64]);
        let transposed = self.below(2) == 0;
        let b = if transposed {
            self.upload(&[n, k])?
        } else {
            self.upload(&[k, n])?
        };
        let bounds = match (&self.p.vars[a].cpu, &self.p.vars[b].cpu) {
            (Ok(a), Ok(b)) => rounding_bounds(a, b, transposed),
            _ => return Ok(()),
        };
        self.p.run_close(
            "matmul",
            |i, _| bounds[i],
            &[a, b],
            |e, t| {
                let y = if transposed {
                    e.matmul_bt(t[0], t[1])?
                } else {
                    e.matmul(t[0], t[1])?
                };
                Ok(vec![y])
            },
        )
    }

    pub(super) fn softmax(&mut self) -> Result<(), Mismatch> {
        let a = self.float()?;
        self.p
            .run_close("softmax_last", within("softmax", 1.0), &[a], |e, t| {
                Ok(vec![e.softmax_last(t[0])?])
            })
    }

    /// RoPE on a `[T, H, D]` tensor (an existing one or a new one) at spread-out positions.
    pub(super) fn rope(&mut self) -> Result<(), Mismatch> {
        // (D odd is an error; other even D would add frequency tables the pool check does not
        // expect.)
        let three = |t: &bitnet_wgpu::Tensor| {
            let d = t.shape().last().copied().unwrap_or(0);
            t.dtype() == DType::F32
                && t.shape().len() == 3
                && (d % 2 == 1 || ROPE_DIMS.contains(&d))
        };
        let x = match self.pick(three) {
            Some(i) if self.below(2) == 0 => i,
            _ => {
                let shape = [
                    self.rows(),
                    self.one_of(&[1, 2, 4]),
                    self.one_of(&ROPE_DIMS),
                ];
                self.upload(&shape)?
            }
        };
        let t = self.p.vars[x].gpu.shape()[0];
        let (first, stride) = (self.r.below(100_000) as u32, 1 + self.r.below(1000) as u32);
        let positions: Vec<u32> = (0..t as u32).map(|i| first + i * stride).collect();
        let pos = self.upload_with("upload_u32", |e| e.upload_u32(&positions, &[t]))?;
        let scale = self.magnitude(x);
        self.p
            .run_close("rope", within("rope", scale), &[x, pos], |e, t| {
                Ok(vec![e.rope(t[0], t[1], ROPE_THETA)?])
            })
    }

    /// Grouped-query attention of new queries over the KV caches' keys and values (views taken
    /// now, so later appends and truncations must not change what this read).
    pub(super) fn attention(&mut self) -> Result<(), Mismatch> {
        let before = self.p.vars.len();
        let (g, c) = (
            (self.layers.kv.0.keys(), self.layers.kv.0.values()),
            (self.layers.kv.1.keys(), self.layers.kv.1.values()),
        );
        let must_fail = c.0.is_err() || c.1.is_err();
        let gpu = g.0.and_then(|k| Ok(vec![k, g.1?]));
        let cpu = c.0.and_then(|k| Ok(vec![k, c.1?])).map_err(|e| vec![e]);
        self.p.settle("kv views", gpu, cpu, must_fail, false)?;
        if self.p.vars.len() != before + 2 {
            return Ok(());
        }
        let (tq, groups, causal) = (1 + self.below(3), self.one_of(&[1, 2]), self.below(2) == 0);
        let q = self.upload(&[tq, KV_HEADS * groups, HEAD_DIM])?;
        let ids = [q, before, before + 1];
        // The suite's tolerance holds for scores of a few units; a score of magnitude S carries
        // about S ulp-sized errors into its weight's exp, so each weight may be off by
        // ~u (S + 1) relative, and the output by that times max|v| (u = 2^-24, 8x margin).
        let (mq, mk, mv) = (
            self.magnitude(q),
            self.magnitude(before),
            self.magnitude(before + 1),
        );
        let score = 16.0 * mq * mk * HEAD_DIM as f32 * SCALE;
        let weights = 8.0 * f32::EPSILON / 2.0 * (score + 1.0) * 4.0 * mv;
        let tol = within("attention", mv);
        self.p.run_close(
            "attention",
            move |i, want| tol(i, want) + weights,
            &ids,
            |e, t| Ok(vec![e.attention(t[0], t[1], t[2], SCALE, causal)?]),
        )
    }
}

/// The suite's stated tolerance of `op` (`bitnet_tests::TOLERANCES`) as a bound, its absolute
/// part times `scale`: RoPE's and attention's absolute errors grow with the inputs' magnitude,
/// and the suite states them for |x| <= 4.
fn within(op: &str, scale: f32) -> impl Fn(usize, f32) -> f32 {
    let tol = tolerance(op);
    move |_, want| tol.abs * scale + tol.rel * want.abs()
}

impl Fuzz {
    /// How far variable `id`'s finite values exceed the suite's |x| <= 4: max(1, max|x| / 4).
    fn magnitude(&self, id: usize) -> f32 {
        let values = match &self.p.vars[id].cpu {
            Ok(t) => t.read_f32().unwrap(),
            Err(_) => return 1.0,
        };
        let top = values
            .iter()
            .filter(|v| v.is_finite())
            .fold(0.0f32, |m, v| m.max(v.abs()));
        (top / 4.0).max(1.0)
    }
}

/// Per output of `a · b` (`a` `[M, K]`, `b` `[K, N]`, or `[N, K]` when `transposed`): twice
/// `γ_K · Σ_k |a[m, k]| |b[k, n]|`, the most two summation orders can differ. Empty for
/// shapes the call rejects.
fn rounding_bounds(a: &Tensor, b: &Tensor, transposed: bool) -> Vec<f32> {
    let (Ok(av), Ok(bv)) = (a.read_f32(), b.read_f32()) else {
        return Vec::new();
    };
    let (m, k) = (a.shape()[0], a.shape()[1]);
    let n = if transposed {
        b.shape()[0]
    } else {
        b.shape()[1]
    };
    if b.shape().len() != 2
        || (if transposed {
            b.shape()[1]
        } else {
            b.shape()[0]
        }) != k
    {
        return Vec::new();
    }
    let u = f64::from(f32::EPSILON) / 2.0;
    let gamma = k as f64 * u / (1.0 - k as f64 * u);
    let mut bounds = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let b_at = |l: usize| {
                if transposed {
                    bv[j * k + l]
                } else {
                    bv[l * n + j]
                }
            };
            let sum: f64 = (0..k)
                .map(|l| f64::from(av[i * k + l].abs() * b_at(l).abs()))
                .sum();
            bounds.push((2.0 * gamma * sum) as f32 + f32::MIN_POSITIVE);
        }
    }
    bounds
}
