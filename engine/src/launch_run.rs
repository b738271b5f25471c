//! [`Launch::run`]: the execution side of a launch built in `launch.rs` — checks it against the
//! kernel's declaration (buffer count, access, a grid set), then records it: the compiled
//! pipeline, the group-0 bind group (cached), a fate and status slot, the dispatch handed to the
//! submission thread, and the outputs' lineage (the inputs' plus this launch's fate).

use std::sync::Arc;

use super::Launch;
use crate::batch::Dispatch;
use crate::error::{Error, Result};
use crate::fate::{Fate, inputs_lineage};
use crate::pipelines::Access;

impl Launch<'_> {
    /// Validates and records the dispatch into the pending batch.
    pub fn run(mut self) -> Result<()> {
        if let Some(e) = self.err.take() {
            return Err(e);
        }
        self.gpu.check_health()?;
        let decl = self.kernel.bindings;
        if self.bound.len() != decl.len() {
            return Err(Error::KernelMisuse {
                kernel: self.kernel.name(),
                message: format!(
                    "{} buffers bound, {} declared",
                    self.bound.len(),
                    decl.len()
                ),
            });
        }
        if let Some(i) = self
            .bound
            .iter()
            .zip(decl)
            .position(|(b, a)| b.writes && *a == Access::Read)
        {
            return Err(Error::KernelMisuse {
                kernel: self.kernel.name(),
                message: format!("binding {i} is written but declared Access::Read"),
            });
        }
        let Some(groups) = self.groups else {
            return Err(Error::KernelMisuse {
                kernel: self.kernel.name(),
                message: "no workgroup count set".into(),
            });
        };
        if groups.contains(&0) {
            return Ok(());
        }
        // The outputs' lineage: every fate the inputs depend on, plus this launch's (below).
        let ancestry = inputs_lineage(&self.inputs)?;
        let compiled = self.gpu.pipelines.get(self.kernel, &self.constants)?;
        let buffers: Vec<_> = self
            .bound
            .iter()
            .map(|b| (b.buffer, b.offset, b.size))
            .collect();
        // Reused when the same buffers were bound the same way before (`bind_cache.rs`).
        let group0 = self
            .gpu
            .pool
            .binds
            .get_or_create(&compiled.group0, &buffers, || {
                compiled.bind(&self.gpu.device, self.kernel.name(), &buffers)
            })?;
        let seq = self.gpu.next_seq();
        let group = self.group.unwrap_or(seq);
        let fate = Fate::in_group(seq, group, self.check, &self.gpu.slots);
        for b in &self.bound {
            b.marks.stamp(fate.seq(), b.writes);
        }
        Dispatch {
            kernel: self.kernel.name(),
            compiled,
            group0,
            params: self.params,
            groups,
            fate: Arc::clone(&fate),
            invalid: self.gpu.faults.take_validation(),
        }
        .post(self.gpu)?;
        let node = ancestry.with(fate);
        for t in &self.outputs {
            t.lineage().push(&node);
        }
        Ok(())
    }
}
