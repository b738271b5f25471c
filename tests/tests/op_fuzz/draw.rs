//! The fuzzer's program state and random draws: values, shapes, and variables to work on (an
//! existing one that fits, or a new upload).

use bitnet_tests::Rng;
use bitnet_wgpu::{Calibration, Cost, DType, DispatchPolicy, Engine, Error, Tensor};

use super::faults::RETRIES;
use super::layers::Layers;
use super::program::{Mismatch, Program};

/// Live variables above this are dropped (at random) before the next step.
pub const MAX_VARS: usize = 24;
/// Row widths (the last dimension, BitLinear's K).
pub const WIDTHS: &[usize] = &[1, 2, 3, 4, 8, 16, 63, 64, 128, 256, 640];

/// A program being generated and run: the interpreter, the random stream and the objects each
/// engine has its own of.
pub struct Fuzz {
    pub p: Program,
    pub(super) r: Rng,
    pub(super) layers: Layers,
    /// The GPU engine's policy as this program last set it; `None`: the engine is shared with
    /// other programs, so this one leaves the policy alone.
    pub(super) policy: Option<DispatchPolicy>,
    /// Whether the program injects GPU faults (`faults.rs`).
    pub(super) inject: bool,
}

impl Fuzz {
    /// A program of its own on `p`'s GPU engine: it switches the engine's policy.
    pub fn new(p: Program) -> Fuzz {
        let policy = Some(p.gpu.dispatch_policy());
        Fuzz::with_policy(p, policy)
    }

    /// A program sharing `p`'s GPU engine with others: it never switches the policy.
    pub fn shared(p: Program) -> Fuzz {
        Fuzz::with_policy(p, None)
    }

    /// A program of its own that also injects GPU faults (the engine is left unusable for
    /// others: failed pipelines stay failed, a lost device stays lost).
    pub fn with_faults(p: Program) -> Fuzz {
        Fuzz {
            inject: true,
            ..Fuzz::new(p)
        }
    }

    fn with_policy(p: Program, policy: Option<DispatchPolicy>) -> Fuzz {
        let layers = Layers::new(&p.gpu, &p.cpu, p.seed);
        let r = Rng::new(p.seed);
        Fuzz {
            p,
            r,
            layers,
            policy,
            inject: false,
        }
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        self.r.below(n as u64) as usize
    }

    pub(super) fn one_of<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    /// A random `Auto` model: per op class, each backend fixed and per-unit costs from nothing to
    /// a millisecond, and transfers from 1 MB/s to 1 TB/s, so that the predicted winner changes
    /// with the op, its size and where its weights live (the engine then adapts the model to
    /// measured times, moving the routes further).
    pub(super) fn cost_model(&mut self) -> Calibration {
        let mut cost = || Cost {
            fixed_s: self.one_of(&[0.0, 1e-6, 1e-3]),
            per_unit_s: self.one_of(&[0.0, 1e-12, 1e-9, 1e-6]),
        };
        let (cpu, gpu) = ([(); 4].map(|()| cost()), [(); 4].map(|()| cost()));
        Calibration {
            key: "op_fuzz".into(),
            upload_bytes_per_s: self.one_of(&[1e6, 1e9, 1e12]),
            download_bytes_per_s: self.one_of(&[1e6, 1e9, 1e12]),
            cpu,
            gpu,
        }
    }

    /// Values for an upload: uniform, or small integers (quantization ties), sometimes with one
    /// NaN, infinity or huge value (errors that only the device sees).
    pub(super) fn values(&mut self, n: usize) -> Vec<f32> {
        let integers = self.below(5) == 0;
        let mut v: Vec<f32> = (0..n)
            .map(|_| {
                if integers {
                    self.r.below(17) as f32 - 8.0
                } else {
                    self.r.range_f32(-4.0, 4.0)
                }
            })
            .collect();
        if n > 0 && self.below(25) == 0 {
            let at = self.below(n);
            v[at] = self.one_of(&[f32::NAN, f32::INFINITY, -f32::INFINITY, 3e38]);
        }
        v
    }

    pub(super) fn rows(&mut self) -> usize {
        if self.below(6) == 0 {
            4 + self.below(9)
        } else {
            1 + self.below(3)
        }
    }

    /// Uploads random `F32` values of `shape`; the new variable's index.
    pub(super) fn upload(&mut self, shape: &[usize]) -> Result<usize, Mismatch> {
        let v = self.values(shape.iter().product());
        let shape = shape.to_vec();
        self.upload_with("upload_f32", |e| e.upload_f32(&v, &shape))
    }

    /// Runs `upload` on both engines until the GPU side makes a variable (injected faults may
    /// fail it, see `RETRIES`); the variable's index.
    pub(super) fn upload_with(
        &mut self,
        what: &str,
        upload: impl Fn(&Engine) -> Result<Tensor, Error>,
    ) -> Result<usize, Mismatch> {
        for _ in 0..RETRIES {
            if let Some(i) = self.p.run_new(what, &[], |e, _| Ok(vec![upload(e)?]))? {
                return Ok(i);
            }
        }
        Err(self
            .p
            .at(&format!("{what}: failed on the GPU side {RETRIES} times")))
    }

    /// A variable passing `ok`, if any.
    pub(super) fn pick(&mut self, ok: impl Fn(&Tensor) -> bool) -> Option<usize> {
        let found: Vec<usize> = (0..self.p.vars.len())
            .filter(|&i| ok(&self.p.vars[i].gpu))
            .collect();
        (!found.is_empty()).then(|| found[self.below(found.len())])
    }

    /// An `F32` matrix (an existing one, or a new upload), optionally with K columns.
    pub(super) fn matrix(&mut self, k: Option<usize>) -> Result<usize, Mismatch> {
        let fits = |t: &Tensor| {
            t.dtype() == DType::F32 && t.shape().len() == 2 && k.is_none_or(|k| t.shape()[1] == k)
        };
        match self.pick(fits) {
            Some(i) if self.below(3) > 0 => Ok(i),
            _ => {
                let width = match k {
                    Some(k) => k,
                    None => self.one_of(WIDTHS),
                };
                let rows = self.rows();
                self.upload(&[rows, width])
            }
        }
    }

    /// An `F32` tensor of any rank.
    pub(super) fn float(&mut self) -> Result<usize, Mismatch> {
        match self.pick(|t| t.dtype() == DType::F32) {
            Some(i) if self.below(4) > 0 => Ok(i),
            _ => self.matrix(None),
        }
    }

    /// A tensor of the same shape as variable `a` (sometimes another shape, for the errors).
    pub(super) fn like(&mut self, a: usize) -> Result<usize, Mismatch> {
        let shape = self.p.vars[a].gpu.shape().to_vec();
        if self.below(12) == 0 {
            return self.float();
        }
        match self.pick(|t| t.dtype() == DType::F32 && t.shape() == shape) {
            Some(i) if self.below(2) == 0 => Ok(i),
            _ => self.upload(&shape),
        }
    }

    /// Ternary weights `[N, K]`: an existing matrix or a new one quantized on both engines.
    pub(super) fn weights(&mut self, k: Option<usize>) -> Result<Option<usize>, Mismatch> {
        let fits = |t: &Tensor| t.dtype() == DType::Ternary && k.is_none_or(|k| t.shape()[1] == k);
        if let Some(i) = self.pick(fits).filter(|_| self.below(3) > 0) {
            return Ok(Some(i));
        }
        let n = self.one_of(&[1, 3, 4, 8, 16, 64]);
        let k = match k {
            Some(k) => k,
            None => self.one_of(WIDTHS),
        };
        let w = self.upload(&[n, k])?;
        self.p.run_new("quantize_weights_tensor", &[w], |e, t| {
            Ok(vec![e.quantize_weights_tensor(t[0])?])
        })
    }

    /// Drops a variable, reading it first half the time (so most values computed are compared,
    /// while the other half of the drops leave their buffers to the pool unread).
    pub(super) fn drop_one(&mut self) -> Result<(), Mismatch> {
        if !self.p.vars.is_empty() {
            let i = self.below(self.p.vars.len());
            if self.below(2) == 0 {
                self.p.read(i)?;
            }
            self.p.vars.swap_remove(i);
        }
        Ok(())
    }
}
