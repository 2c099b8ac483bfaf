//! The wasmtime engine, one per process: the pooling allocator with copy-on-write memory
//! images, epoch interruption driven by a single ticker thread, and the on-disk cache of
//! compiled components keyed by the wasm's sha256 and the engine's compatibility hash.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Enabled, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of deadlines and of the yields that keep a
/// busy guest from starving the other tasks on its worker thread.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Component instances alive at once across the process (the pool's size).
const MAX_INSTANCES: u32 = 1000;

/// How much of a freed slot's memory stays mapped for the next instance, reset in place
/// instead of returned to the kernel. Returning it costs an madvise, a TLB shootdown on
/// every core and then a page fault per page touched again: most of the cost of a small
/// request. With PAGEMAP_SCAN only the dirtied pages are reset, so the region can be large;
/// without it the whole region is memset each time, so it stays small.
const KEEP_RESIDENT_SCANNED: usize = 2 << 20;
const KEEP_RESIDENT_MEMSET: usize = 64 << 10;

/// The engine's configuration; `pagemap_scan` says whether to rely on PAGEMAP_SCAN.
fn config(pagemap_scan: Enabled) -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .parallel_compilation(true);
    let keep_resident = match pagemap_scan {
        Enabled::Yes => KEEP_RESIDENT_SCANNED,
        _ => KEEP_RESIDENT_MEMSET,
    };
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(MAX_INSTANCES)
        // A Rust component is a main module plus small shim modules.
        .total_core_instances(MAX_INSTANCES * 4)
        .total_memories(MAX_INSTANCES)
        .total_tables(MAX_INSTANCES * 2)
        .total_stacks(MAX_INSTANCES)
        .max_memory_size(
            usize::try_from(crate::config::berth::MAX_MEMORY_LIMIT_MB << 20).unwrap_or(usize::MAX),
        )
        .pagemap_scan(pagemap_scan)
        .linear_memory_keep_resident(keep_resident)
        .table_keep_resident(keep_resident.min(64 << 10));
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

#[derive(Clone)]
pub struct Engine {
    inner: wasmtime::Engine,
    cache_dir: PathBuf,
    /// Part of every cache file name: artifacts of another wasmtime build or config are
    /// never loaded.
    compat: Arc<str>,
    /// Compiles at once: one per core. The compiler already uses every core for one
    /// component, and each extra compiling thread keeps its own allocator arena and
    /// compiler scratch space resident.
    compiling: Arc<tokio::sync::Semaphore>,
}

/// A compiled component and where it came from.
pub struct Compiled {
    pub component: Component,
    /// `sha256:<hex>` of the wasm bytes.
    pub digest: String,
    pub from_cache: bool,
    pub took: Duration,
}

impl Engine {
    pub fn new(cache_dir: PathBuf) -> anyhow::Result<Engine> {
        // Resetting only the pages an instance dirtied needs PAGEMAP_SCAN (Linux 6.7+);
        // without it, a large keep-resident region would be memset whole on every reuse.
        let pagemap_scan = if PoolingAllocationConfig::is_pagemap_scan_available() {
            Enabled::Yes
        } else {
            Enabled::No
        };
        let inner = wasmtime::Engine::new(&config(pagemap_scan))
            .map_err(anyhow::Error::from)
            .context("cannot create the wasm engine")?;

        let mut hasher = Sha256Hasher(Sha256::new());
        inner.precompile_compatibility_hash().hash(&mut hasher);
        let compat = hex::encode(&hasher.0.finalize()[..8]).into();

        let weak = inner.weak();
        std::thread::Builder::new()
            .name("berth-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .context("cannot start the epoch ticker")?;

        Ok(Engine {
            inner,
            cache_dir,
            compat,
            compiling: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, usize::from),
            )),
        })
    }

    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner
    }

    /// Compiles `wasm`, a component or a core module made one (see [`crate::componentize`]),
    /// or loads the artifact an earlier run left in the cache. Runs on the compiler's own
    /// low-priority threads ([`compiler`]): compiling takes seconds and must not stall the
    /// request workers, nor take their cores while they are busy.
    pub async fn compile(&self, wasm: bytes::Bytes) -> anyhow::Result<Compiled> {
        let turn = self
            .compiling
            .clone()
            .acquire_owned()
            .await
            .context("the engine is shutting down")?;
        let engine = self.clone();
        let compiler = compiler()?;
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            compiler.install(|| engine.compile_blocking(&wasm))
        })
        .await
        .context("the compiler thread panicked")?
    }

    fn compile_blocking(&self, wasm: &[u8]) -> anyhow::Result<Compiled> {
        let started = Instant::now();
        let sha = hex::encode(Sha256::digest(wasm));
        let digest = format!("sha256:{sha}");
        let path = self.cache_dir.join(format!("{sha}-{}.cwasm", self.compat));
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of an engine with the
            // same compatibility hash (it is in the name), into the data dir, which berth
            // trusts like its own binary. wasmtime still checks the header and version.
            match unsafe { Component::deserialize_file(&self.inner, &path) } {
                Ok(component) => {
                    return Ok(Compiled {
                        component,
                        digest,
                        from_cache: true,
                        took: started.elapsed(),
                    });
                }
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    "ignoring an unusable cached artifact ({e}); compiling again"
                ),
            }
        }
        let compiled = if wasmtime::wasmparser::Parser::is_core_wasm(wasm) {
            Component::new(&self.inner, crate::componentize::componentize(wasm)?)?
        } else {
            Component::new(&self.inner, wasm)?
        };
        // Served from the artifact just written, like a cached one: its code is then a
        // file mapping the kernel can share and page out, not anonymous memory.
        let component = match self.store_artifact(&path, &compiled) {
            Ok(()) => {
                drop(compiled);
                release_freed_memory();
                // SAFETY: as above; this engine wrote the file a moment ago.
                unsafe { Component::deserialize_file(&self.inner, &path) }?
            }
            Err(e) => {
                tracing::warn!("could not cache the compiled component: {e:#}");
                compiled
            }
        };
        Ok(Compiled {
            component,
            digest,
            from_cache: false,
            took: started.elapsed(),
        })
    }

    fn store_artifact(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        let bytes = component.serialize()?;
        crate::files::write_atomic(path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Returns the memory the compiler freed to the OS. Compiling leaves megabytes of freed
/// scratch space in glibc's per-thread arenas, which glibc keeps: 200 components compiled
/// at start held 560 MB resident where loading the same from the cache takes 60 MB.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Feeds `Hash` output into sha256, for a hash that is stable across runs.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        unreachable!("only the sha256 digest is read")
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The compiler's threads: a rayon pool of their own, one per core, at the lowest CPU
/// priority (nice 19), shared by every engine of the process. wasmtime compiles a
/// component's functions in parallel on the current rayon pool, so a deploy under load
/// takes longer rather than taking cores from the requests; on an idle machine (at start)
/// it runs at full speed.
fn compiler() -> anyhow::Result<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    if let Some(pool) = POOL.get() {
        return Ok(pool);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("berth-compile-{i}"))
        .start_handler(|_| lowest_priority())
        .build()
        .context("cannot start the compiler's threads")?;
    Ok(POOL.get_or_init(|| pool))
}

/// Lowers the calling thread's CPU priority: on Linux each thread has its own nice value,
/// and `who = 0` names the caller. A refusal leaves the thread as it was.
fn lowest_priority() {
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let refused = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } != 0;
    if refused {
        tracing::debug!(
            "cannot lower the compiler thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiler_runs_at_the_lowest_priority_and_the_caller_keeps_its_own() {
        // SAFETY (both): getpriority takes plain integers and touches no memory of ours.
        let caller = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let compiling = compiler()
            .unwrap()
            .install(|| unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) });
        assert_eq!(compiling, 19);
        assert_eq!(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }, caller);
    }
}
