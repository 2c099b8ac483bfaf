//! Core modules made components, as Spin makes them: a module built by wit-bindgen (for
//! `wasm32-unknown-unknown`, say) carries its component type in a custom section, and a
//! module built for WASI preview 1 (older Spin SDKs, most published Spin apps) also imports
//! `wasi_snapshot_preview1`, which wasmtime's adapter turns into WASI 0.2 imports.
//!
//! This runs only when the compiled artifact is not already in the cache, whose key is the
//! module's own digest: a module is made a component once, and then never again.

use anyhow::{Context as _, bail};
use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
    WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};
use wasmtime::wasmparser::{ExternalKind, Parser, Payload};

/// What the encoder needs to know about a module before it starts.
#[derive(Debug, Default, PartialEq, Eq)]
struct Shape {
    /// A `component-type*` section: what wit-bindgen writes.
    has_component_type: bool,
    /// Imports `wasi_snapshot_preview1` functions.
    imports_preview1: bool,
    /// Exports `_start`: a command, which gets the command adapter.
    is_command: bool,
}

fn shape(module: &[u8]) -> anyhow::Result<Shape> {
    let mut shape = Shape::default();
    for payload in Parser::new(0).parse_all(module) {
        match payload.context("it is not a valid core module")? {
            Payload::CustomSection(section) if section.name().starts_with("component-type") => {
                shape.has_component_type = true;
            }
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    let import = import.context("its import section is malformed")?;
                    if import.module == WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME {
                        shape.imports_preview1 = true;
                    }
                }
            }
            Payload::ExportSection(exports) => {
                for export in exports {
                    let export = export.context("its export section is malformed")?;
                    if export.name == "_start" && export.kind == ExternalKind::Func {
                        shape.is_command = true;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(shape)
}

/// Why a core module cannot be made a component.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct Error(anyhow::Error);

/// The component a core module stands for. Fails, saying what to do, for a module that does
/// not say which interfaces it implements.
pub fn componentize(module: &[u8]) -> Result<Vec<u8>, Error> {
    encode(module).map_err(Error)
}

fn encode(module: &[u8]) -> anyhow::Result<Vec<u8>> {
    let shape = shape(module)?;
    if !shape.has_component_type {
        bail!(
            "it has no component type section, so nothing says which interfaces it exports; build it with spin-sdk or wit-bindgen, or for the wasm32-wasip2 target"
        );
    }
    let mut encoder = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(module)
        .context("its component type does not match its imports and exports")?;
    if shape.imports_preview1 {
        let adapter = if shape.is_command {
            WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER
        } else {
            WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER
        };
        encoder = encoder
            .adapter(WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, adapter)
            .context("wasmtime's WASI preview 1 adapter cannot be used")?;
    }
    encoder
        .encode()
        .context("its WASI preview 1 imports cannot all be adapted to WASI 0.2")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_without_a_component_type_is_refused_with_what_to_do() {
        // (module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))))
        let module = wat_module();
        let shape = shape(&module).unwrap();
        assert_eq!(
            shape,
            Shape {
                has_component_type: false,
                imports_preview1: true,
                is_command: true,
            }
        );
        let error = componentize(&module).unwrap_err().to_string();
        assert!(error.contains("no component type section"), "{error}");
    }

    #[test]
    fn garbage_is_not_a_module() {
        let error = componentize(b"\0asm\x01\0\0\0\x99").unwrap_err();
        assert!(
            error.to_string().contains("not a valid core module"),
            "{error}"
        );
    }

    /// A hand-assembled module: one preview 1 import, `_start` exported.
    fn wat_module() -> Vec<u8> {
        let mut module = wasm_encoder::Module::new();
        let mut types = wasm_encoder::TypeSection::new();
        use wasm_encoder::ValType::I32;
        types.ty().function([I32, I32, I32, I32], [I32]);
        types.ty().function([], []);
        module.section(&types);
        let mut imports = wasm_encoder::ImportSection::new();
        imports.import(
            "wasi_snapshot_preview1",
            "fd_write",
            wasm_encoder::EntityType::Function(0),
        );
        module.section(&imports);
        let mut functions = wasm_encoder::FunctionSection::new();
        functions.function(1);
        module.section(&functions);
        let mut exports = wasm_encoder::ExportSection::new();
        exports.export("_start", wasm_encoder::ExportKind::Func, 1);
        module.section(&exports);
        let mut code = wasm_encoder::CodeSection::new();
        let mut body = wasm_encoder::Function::new([]);
        body.instructions().end();
        code.function(&body);
        module.section(&code);
        module.finish()
    }
}
