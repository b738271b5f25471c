//! The two-engine interpreter of the fuzzer: every call runs on the GPU engine and on the CPU
//! engine, and the pair of results is held as one program variable. Call-time errors must be
//! identical; an error the GPU side only sees on the device (NaN/Inf, overflow: "errors follow
//! the data") must come back from reading the GPU tensor; values read must agree bit for bit
//! (NaN payloads aside — a GPU may return another NaN).

use bitnet_wgpu::{Engine, Error, Tensor};

use super::faults::FaultState;
use super::reads::Pending;
use super::values::{holds_tiny, is_value_error, stand_in};

/// Which engine a call runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Gpu,
    Cpu,
}

/// One program variable: what the same call returned on each engine.
pub struct Var {
    /// The GPU engine's tensor (a call that failed there made no variable).
    pub gpu: Tensor,
    /// The CPU engine's tensor, or the errors the GPU side may report for this value (one per
    /// failed input it was computed from: which of several failures a read reports is not
    /// specified).
    pub cpu: Result<Tensor, Vec<Error>>,
    /// The call that made it and its step, for messages.
    pub origin: String,
    /// It holds, or was computed from, values so small (nonzero, below 2^-100) that a device
    /// flushing subnormals to zero — documented as allowed (crate docs, "Subnormal floats";
    /// the H200's driver does) — computes other values and errors from here on: only its
    /// shape is compared.
    pub tiny: bool,
    /// Its value was read: an injected fault may hit a later read of it (which must then succeed
    /// when tried again), never the value (a lost device aside). A sync that succeeded proves
    /// nothing here: a failed submission is reported through the values it computed (crate docs,
    /// "Errors follow the data"), not by `Engine::sync`.
    pub safe: bool,
}

/// The GPU engine, the CPU engine, the live variables and the reads in flight.
pub struct Program {
    pub gpu: Engine,
    pub cpu: Engine,
    pub vars: Vec<Var>,
    /// Reads in flight.
    pub pending: Vec<Pending>,
    /// Step counter, for messages.
    pub step: usize,
    /// Faults injected so far.
    pub faults: FaultState,
    /// The GPU engine's storage bindings are capped (`EngineOptions::max_binding_bytes`), so it
    /// may refuse a call with `LimitExceeded` that the CPU engine runs.
    pub capped: bool,
    /// What was compared: (values read, errors read, calls that failed on both engines,
    /// reads of [`Var::tiny`] values, not compared).
    pub compared: (usize, usize, usize, usize),
    pub seed: u64,
}

/// A mismatch between the engines, described for the failure message.
pub type Mismatch = String;

impl Program {
    pub fn new(gpu: Engine, seed: u64) -> Program {
        let capped = gpu
            .info()
            .limits
            .is_some_and(|l| l.max_storage_buffer_binding_size < 1 << 20);
        Program {
            capped,
            faults: FaultState::default(),
            gpu,
            cpu: Engine::cpu(),
            vars: Vec::new(),
            pending: Vec::new(),
            step: 0,
            compared: (0, 0, 0, 0),
            seed,
        }
    }

    pub fn at(&self, what: &str) -> String {
        format!("seed {} step {} ({what})", self.seed, self.step)
    }

    /// Runs `f` on both engines with the variables `ids` as inputs and keeps what it returned
    /// (one variable per output) when the GPU side returned tensors. A CPU-side input that failed
    /// fails the call there with its error(s); its GPU tensor is passed on (a launch on an input
    /// whose failure is not known yet succeeds, and reading its outputs reports the failure).
    /// What the call itself must reject (shapes, dtypes, arguments) is found by running it on
    /// the CPU engine with stand-ins of the inputs' shapes: the GPU side must then fail, with
    /// that error or one of the value errors.
    pub fn run(
        &mut self,
        what: &str,
        ids: &[usize],
        f: impl Fn(&Engine, &[&Tensor]) -> Result<Vec<Tensor>, Error>,
    ) -> Result<(), Mismatch> {
        self.run_sided(what, ids, |_, e, t| f(e, t))
    }

    /// [`Program::run`], returning the first new variable's index, if the call made one (an
    /// injected fault may fail it on the GPU side).
    pub fn run_new(
        &mut self,
        what: &str,
        ids: &[usize],
        f: impl Fn(&Engine, &[&Tensor]) -> Result<Vec<Tensor>, Error>,
    ) -> Result<Option<usize>, Mismatch> {
        let before = self.vars.len();
        self.run(what, ids, f)?;
        Ok((self.vars.len() > before).then_some(before))
    }

    /// [`Program::run`] for calls on objects each engine has its own of (layers): `f` learns
    /// which side it runs on.
    pub fn run_sided(
        &mut self,
        what: &str,
        ids: &[usize],
        f: impl Fn(Side, &Engine, &[&Tensor]) -> Result<Vec<Tensor>, Error>,
    ) -> Result<(), Mismatch> {
        let gpu_inputs: Vec<&Tensor> = ids.iter().map(|&i| &self.vars[i].gpu).collect();
        let gpu = f(Side::Gpu, &self.gpu, &gpu_inputs);
        let failed: Vec<Error> = ids
            .iter()
            .filter_map(|&i| self.vars[i].cpu.as_ref().err())
            .flatten()
            .cloned()
            .collect();
        let cpu = if failed.is_empty() {
            let inputs: Vec<&Tensor> = ids
                .iter()
                .map(|&i| self.vars[i].cpu.as_ref().unwrap())
                .collect();
            f(Side::Cpu, &self.cpu, &inputs).map_err(|e| vec![e])
        } else {
            Err(failed)
        };
        // A value error (a NaN input, an overflow) is only safe on the device, so the GPU side
        // may report another error first: what the call's shapes and arguments alone make
        // wrong (found by the call on stand-ins of every input's shape, which must then fail
        // the call itself), or a value error of an input that holds values here while another
        // failed (the call with stand-ins for the failed inputs only).
        let (cpu, must_fail) = match cpu {
            Ok(ts) => (Ok(ts), false),
            Err(errs) if !errs.iter().all(is_value_error) => (Err(errs), true),
            Err(mut errs) => {
                let mut must_fail = false;
                for keep_values in [true, false] {
                    let inputs: Vec<Tensor> = ids
                        .iter()
                        .map(|&i| match &self.vars[i].cpu {
                            Ok(t) if keep_values => t.clone(),
                            _ => stand_in(&self.cpu, &self.vars[i].gpu),
                        })
                        .collect();
                    if let Err(e) = f(Side::Cpu, &self.cpu, &inputs.iter().collect::<Vec<_>>()) {
                        must_fail |= !is_value_error(&e);
                        errs.push(e);
                    }
                }
                (Err(errs), must_fail)
            }
        };
        self.settle(what, gpu, cpu, must_fail, self.tiny(ids))
    }

    /// Like [`Program::run`], for float ops whose results agree within a bound rather than bit
    /// for bit (`allowed(i, want)`: the largest difference element `i` of the CPU engine's
    /// `want` allows): inputs must hold values on both sides (else nothing runs); the outputs
    /// are read at once, compared and dropped — an inexact value would fail every later exact
    /// comparison.
    pub fn run_close(
        &mut self,
        what: &str,
        allowed: impl Fn(usize, f32) -> f32,
        ids: &[usize],
        f: impl Fn(&Engine, &[&Tensor]) -> Result<Vec<Tensor>, Error>,
    ) -> Result<(), Mismatch> {
        if ids.iter().any(|&i| self.vars[i].cpu.is_err()) || self.tiny(ids) {
            return Ok(());
        }
        let before = self.vars.len();
        self.run(what, ids, f)?;
        for v in self.vars.split_off(before) {
            if v.tiny {
                self.compared.3 += 1;
                continue;
            }
            let got = v.gpu.read_f32();
            let want = v
                .cpu
                .map(|t| t.read_f32().expect("reading a CPU engine tensor"));
            let close = |i: usize, a: f32, b: f32| {
                a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= allowed(i, b)
            };
            let verdict = match (&got, &want) {
                (Ok(g), Ok(w)) if g.len() != w.len() => {
                    Some(format!("{} vs {} values", g.len(), w.len()))
                }
                (Ok(g), Ok(w)) => (0..g.len()).find(|&i| !close(i, g[i], w[i])).map(|i| {
                    let bound = allowed(i, w[i]);
                    format!(
                        "element {i}: GPU {} CPU {} (allowed ±{bound:e})",
                        g[i], w[i]
                    )
                }),
                (Err(e), Err(errs)) if errs.contains(e) => None,
                (Err(e), _) if self.faults.excuses(e, false) => None,
                (g, w) => Some(format!(
                    "GPU read {:?}, want {:?}",
                    g.as_ref().map(|_| ()),
                    w.as_ref().map(|_| ())
                )),
            };
            if let Some(why) = verdict {
                return Err(self.at(&format!("{what}: {why}")));
            }
            match got {
                Ok(_) => self.compared.0 += 1,
                Err(_) => self.compared.1 += 1,
            }
        }
        Ok(())
    }

    /// Compares one call's results and stores them as variables; `must_fail`: the CPU side's
    /// errors include one the call itself must return (not one only reading finds).
    pub fn settle(
        &mut self,
        what: &str,
        gpu: Result<Vec<Tensor>, Error>,
        cpu: Result<Vec<Tensor>, Vec<Error>>,
        must_fail: bool,
        tiny: bool,
    ) -> Result<(), Mismatch> {
        match (gpu, cpu) {
            (Ok(g), Ok(c)) => {
                if g.len() != c.len() {
                    return Err(self.at(&format!("{what}: {} vs {} outputs", g.len(), c.len())));
                }
                for (g, c) in g.into_iter().zip(c) {
                    if g.shape() != c.shape() || g.dtype() != c.dtype() {
                        return Err(self.at(&format!(
                            "{what}: GPU {:?} {:?}, CPU {:?} {:?}",
                            g.dtype(),
                            g.shape(),
                            c.dtype(),
                            c.shape()
                        )));
                    }
                    self.push(what, g, Ok(c), tiny);
                }
                Ok(())
            }
            (Ok(g), Err(errs)) if !must_fail => {
                for g in g {
                    self.push(what, g, Err(errs.clone()), tiny);
                }
                Ok(())
            }
            (Err(e), Err(errs)) if errs.contains(&e) => {
                self.compared.2 += 1;
                Ok(())
            }
            (Err(e), _)
                if self.refused(&e)
                    || (tiny && is_value_error(&e))
                    || self.faults.excuses(&e, false) =>
            {
                Ok(())
            }
            (gpu, cpu) => Err(self.at(&format!(
                "{what}: GPU returned {:?}, CPU {:?}",
                gpu.map(|_| "tensors"),
                cpu.map(|_| "tensors")
            ))),
        }
    }

    /// A refusal the GPU engine may give where the CPU engine runs: a capped binding.
    pub fn refused(&self, e: &Error) -> bool {
        self.capped && matches!(e, Error::LimitExceeded { .. })
    }

    fn push(&mut self, what: &str, gpu: Tensor, cpu: Result<Tensor, Vec<Error>>, tiny: bool) {
        let origin = format!("{what} at step {}", self.step);
        let tiny = tiny || cpu.as_ref().is_ok_and(holds_tiny);
        self.vars.push(Var {
            gpu,
            cpu,
            origin,
            tiny,
            safe: false,
        });
    }

    /// Whether any of the variables `ids` is [`Var::tiny`].
    pub fn tiny(&self, ids: &[usize]) -> bool {
        ids.iter().any(|&i| self.vars[i].tiny)
    }
}
