//! Builds the Spin target worlds (`wit/targets/spin`) into one WIT package in binary form,
//! which `berth check --target spin` carries inside the binary.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new("../wit/targets/spin");
    println!("cargo::rerun-if-changed={}", dir.display());
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve.push_dir(dir)?;
    let wasm = wit_component::encode(&resolve, package)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("spin-target.wasm"), wasm)?;
    Ok(())
}
