//! berth: a host that runs microservices as sandboxed WebAssembly components.
//!
//! - [`config`]: `spin.toml` and the runtime config, checked and resolved at load
//! - [`engine`]: wasmtime with pooling, epoch deadlines and the compiled-artifact cache
//! - [`linker`], [`state`]: the host interfaces and the Store's per-invocation data
//! - [`components`]: the registry of loaded versions and the load pipeline
//! - [`capabilities`]: one module per capability, backends side by side
//! - [`control`]: the admin API
//! - [`host`]: all of it assembled and served
//! - [`telemetry`]: logs, traces, guest output

pub mod bindings;
pub mod capabilities;
pub mod components;
pub mod config;
pub mod control;
pub mod engine;
mod files;
pub mod host;
pub mod linker;
pub mod state;
pub mod telemetry;
