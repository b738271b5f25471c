//! naga 30 parse + validate of every float tensor kernel (no GPU needed), so a broken shader fails
//! `cargo test` everywhere.

use bitnet_kernels_wgsl::tensor;
use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator};

#[test]
fn every_tensor_kernel_parses_and_validates() {
    let mut failures = Vec::new();
    for kernel in tensor::ALL {
        let module = match naga::front::wgsl::parse_str(kernel.source) {
            Ok(module) => module,
            Err(e) => {
                failures.push(format!("{}: parse: {}", kernel.name, e.emit_to_string(kernel.source)));
                continue;
            }
        };
        let mut validator = Validator::new(
            ValidationFlags::all(),
            Capabilities::SHADER_FLOAT16 | Capabilities::SUBGROUP | Capabilities::IMMEDIATES,
        );
        validator
            .subgroup_stages(ShaderStages::COMPUTE)
            .subgroup_operations(SubgroupOperationSet::all());
        if let Err(e) = validator.validate(&module) {
            failures.push(format!("{}: validate: {}", kernel.name, e.emit_to_string(kernel.source)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn tensor_kernel_names_are_unique() {
    let mut names: Vec<_> = tensor::ALL.iter().map(|k| k.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), tensor::ALL.len());
}
