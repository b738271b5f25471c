//! The fuzzer's reads: what a variable must read as, blocking and pending reads, checks — and a
//! read that an injected fault hit, tried again: the value must come back (`faults.rs`).

use bitnet_wgpu::{Error, Tensor};

use super::faults::RETRIES;
use super::program::{Mismatch, Program};
use super::values::{PendingRead, Value, read_async, read_now};

/// A read in flight: what it reads, its future, what it must give, and whether its value was
/// safe when it started (`Var::safe`).
pub struct Pending {
    what: String,
    tensor: Tensor,
    read: PendingRead,
    want: Result<Value, Vec<Error>>,
    safe: bool,
}

impl Program {
    /// `got`, a read of `t`: where an injected fault hit it although the value is safe, the read
    /// again — the fault hit the read, and the value must come back.
    fn again_after_faults(
        &self,
        t: &Tensor,
        got: Result<Value, Error>,
        safe: bool,
    ) -> Result<Value, Error> {
        let mut got = got;
        for _ in 0..RETRIES {
            match &got {
                Err(e) if safe && self.faults.transient(e) => got = read_now(t),
                _ => break,
            }
        }
        got
    }

    /// What reading variable `id` must give.
    fn expected(&self, id: usize) -> Result<Value, Vec<Error>> {
        match &self.vars[id].cpu {
            Ok(t) => Ok(read_now(t).expect("reading a CPU engine tensor")),
            Err(errs) => Err(errs.clone()),
        }
    }

    /// Compares a read with what it must give; `Ok(true)`: the value itself came back. Unless
    /// `safe`, an injected fault's error may stand for the value.
    fn compare(
        &mut self,
        what: &str,
        got: Result<Value, Error>,
        want: &Result<Value, Vec<Error>>,
        safe: bool,
    ) -> Result<bool, Mismatch> {
        let same = match (&got, want) {
            (Ok(g), Ok(w)) => g == w,
            (Err(e), Err(errs)) => errs.contains(e) || self.faults.excuses(e, safe),
            (Err(e), Ok(_)) => self.faults.excuses(e, safe),
            _ => false,
        };
        if same {
            match got {
                Ok(_) => self.compared.0 += 1,
                Err(_) => self.compared.1 += 1,
            }
            return Ok(got.is_ok());
        }
        let words = |v: &Value| match v {
            Value::F32(w) | Value::U32(w) => Some(w.clone()),
            _ => None,
        };
        let why = match (&got, want) {
            (Ok(g), Ok(w)) => match (words(g), words(w)) {
                (Some(g), Some(w)) => match (0..g.len().min(w.len())).find(|&i| g[i] != w[i]) {
                    Some(i) => format!(
                        "word {i} of {}: GPU {:#010x}, want {:#010x}",
                        w.len(),
                        g[i],
                        w[i]
                    ),
                    None => format!("{} words, want {}", g.len(), w.len()),
                },
                _ => format!(
                    "GPU {:.300}, want {:.300}",
                    format!("{g:?}"),
                    format!("{w:?}")
                ),
            },
            (got, Ok(_)) => format!("GPU read {got:?}, want values"),
            (got, Err(errs)) => {
                format!("GPU read {:.300}, want one of {errs:?}", format!("{got:?}"))
            }
        };
        Err(self.at(&format!("{what}: {why}")))
    }

    /// Reads variable `id` on the GPU side now and compares.
    pub fn read(&mut self, id: usize) -> Result<(), Mismatch> {
        if self.vars[id].tiny {
            self.compared.3 += 1;
            return Ok(());
        }
        let safe = self.vars[id].safe;
        let got = read_now(&self.vars[id].gpu);
        let got = self.again_after_faults(&self.vars[id].gpu, got, safe);
        let want = self.expected(id);
        let what = format!("read of var {id} ({})", self.vars[id].origin);
        if self.compare(&what, got, &want, safe)? {
            self.vars[id].safe = true;
        }
        Ok(())
    }

    /// `Tensor::check` of variable `id` on the GPU side: its value's error, or none.
    pub fn check(&mut self, id: usize) -> Result<(), Mismatch> {
        if self.vars[id].tiny {
            return Ok(());
        }
        let mut got = self.vars[id].gpu.check();
        for _ in 0..RETRIES {
            match &got {
                Err(e) if self.vars[id].safe && self.faults.transient(e) => {
                    got = self.vars[id].gpu.check();
                }
                _ => break,
            }
        }
        match (&got, &self.vars[id].cpu) {
            (Ok(()), Ok(_)) => Ok(()),
            (Err(e), Err(errs)) if errs.contains(e) => Ok(()),
            (Err(e), _) if self.faults.excuses(e, self.vars[id].safe) => Ok(()),
            (_, want) => Err(self.at(&format!(
                "check of var {id}: GPU {got:?}, want {:?}",
                want.as_ref().map(|_| ())
            ))),
        }
    }

    /// Starts a read of variable `id` and leaves it pending.
    pub fn read_later(&mut self, id: usize) {
        if self.vars[id].tiny {
            return;
        }
        let f = read_async(&self.vars[id].gpu);
        let want = self.expected(id);
        let what = format!(
            "pending read of var {id} ({}) from step {}",
            self.vars[id].origin, self.step
        );
        let safe = self.vars[id].safe;
        self.pending.push(Pending {
            what,
            tensor: self.vars[id].gpu.clone(),
            read: f,
            want,
            safe,
        });
    }

    /// Completes the pending read `i`.
    pub fn finish_read(&mut self, i: usize) -> Result<(), Mismatch> {
        let p = self.pending.swap_remove(i);
        let got = self.again_after_faults(&p.tensor, bitnet_tests::block_on(p.read), p.safe);
        self.compare(&p.what, got, &p.want, p.safe).map(|_| ())
    }

    /// Reads every variable and completes every pending read.
    pub fn read_all(&mut self) -> Result<(), Mismatch> {
        while !self.pending.is_empty() {
            self.finish_read(self.pending.len() - 1)?;
        }
        for id in 0..self.vars.len() {
            self.read(id)?;
        }
        Ok(())
    }
}
