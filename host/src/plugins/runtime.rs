//! The engine every plugin runs on, and what each call's store holds.
//!
//! - One `wasmtime::Engine` with the component model, the pooling allocator (instance
//!   slots made once, reused) and epoch interruption; a ticker thread advances the epoch
//!   every [`TICK`], and each call's store traps once its deadline has passed, yielding
//!   to the executor at every tick in between so a slow plugin never holds a thread.
//! - Every WASI interface is linked, nothing is granted: no files, sockets, environment
//!   or arguments, so components from any toolchain instantiate and none reaches out.
//! - Compiled artifacts are cached on disk by module digest and engine compatibility
//!   hash, shared by every data dir on the machine: a restart never recompiles.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::error::LoadError;
use super::state::HostState;

/// How often the epoch advances: the resolution of call deadlines.
pub const TICK: Duration = Duration::from_millis(2);

/// How the runtime is set up.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Where compiled artifacts are cached (None: not cached).
    pub cache_dir: Option<PathBuf>,
    /// Instance slots the pooling allocator keeps.
    pub instance_slots: u32,
    /// The most memory any one instance may have (the manifest may ask for less).
    pub max_memory: usize,
    /// Which compiler makes machine code.
    pub compiler: Compiler,
}

/// wasmtime's two compilers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compiler {
    /// Cranelift: optimizing; what a plugin runs on once compiled.
    Optimizing,
    /// Winch: a single-pass baseline compiler, several times faster to compile and slower
    /// to run; a new module serves on it while Cranelift compiles it.
    Baseline,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: default_cache_dir(),
            instance_slots: 1024,
            max_memory: 256 << 20,
            compiler: Compiler::Optimizing,
        }
    }
}

impl RuntimeConfig {
    /// The baseline runtime beside this one: Winch, fewer slots (modules serve on it only
    /// until Cranelift is done), no artifact cache (the optimized artifact is what is kept).
    pub fn baseline(&self) -> Self {
        Self {
            cache_dir: None,
            instance_slots: (self.instance_slots / 8).max(16),
            max_memory: self.max_memory,
            compiler: Compiler::Baseline,
        }
    }
}

/// `$XDG_CACHE_HOME/wasmkube/artifacts`, else `~/.cache/wasmkube/artifacts`.
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("wasmkube").join("artifacts"))
}

/// The engine, the linker every component is instantiated with, and the epoch ticker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    config: RuntimeConfig,
    /// The engine's compatibility hash, part of every cached artifact's name.
    engine_hash: String,
    ticking: Arc<AtomicBool>,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Arc<Self>, LoadError> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true).epoch_interruption(true);
        if config.compiler == Compiler::Baseline {
            wasm.strategy(wasmtime::Strategy::Winch);
        }
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(config.instance_slots)
            .total_core_instances(config.instance_slots * 4)
            .total_memories(config.instance_slots * 2)
            .total_tables(config.instance_slots * 4)
            .total_stacks(config.instance_slots)
            .max_memory_size(config.max_memory);
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(|e| LoadError::Runtime(format!("cannot start wasmtime: {e}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| LoadError::Runtime(format!("cannot link WASI: {e}")))?;
        super::host::add_to_linker(&mut linker)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = format!("{:016x}", hasher.finish());
        let ticking = Arc::new(AtomicBool::new(true));
        {
            let (engine, ticking) = (engine.clone(), ticking.clone());
            std::thread::Builder::new()
                .name("wasmkube-epoch".into())
                .spawn(move || {
                    while ticking.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| LoadError::Runtime(format!("cannot start the epoch ticker: {e}")))?;
        }
        Ok(Arc::new(Self { engine, linker, config, engine_hash, ticking }))
    }

    pub(super) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(super) fn linker(&self) -> &Linker<HostState> {
        &self.linker
    }

    pub fn max_memory(&self) -> usize {
        self.config.max_memory
    }

    pub fn compiler(&self) -> Compiler {
        self.config.compiler
    }

    fn artifact_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.trim_start_matches("sha256:");
        self.config.cache_dir.as_ref().map(|dir| dir.join(format!("{hex}-{}.cwasm", self.engine_hash)))
    }

    /// Whether a compiled artifact of the module `digest` is cached (loading it is fast).
    pub fn is_cached(&self, digest: &str) -> bool {
        self.artifact_path(digest).is_some_and(|p| p.exists())
    }

    /// Compile `bytes` (or load its cached artifact). Returns the component and the
    /// module's digest (`sha256:<hex>`). Blocking: call it off the async executor.
    pub fn compile(&self, bytes: &[u8]) -> Result<(Component, String), LoadError> {
        let digest = digest(bytes);
        let cached = self.artifact_path(&digest);
        if let Some(path) = cached.as_ref().filter(|p| p.exists()) {
            // SAFETY: the file is an artifact this runtime wrote for this engine's
            // compatibility hash (named by it), in a cache directory of ours.
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(component) => return Ok((component, digest)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "a cached plugin artifact is unusable; compiling again")
                }
            }
        }
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::NotAComponent("it does not start with the WebAssembly magic number".into()));
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| LoadError::NotAComponent(format!("{e:#}")))?;
        if let Some(path) = cached {
            if let Err(e) = write_artifact(&path, &component) {
                tracing::debug!(path = %path.display(), error = %e, "cannot cache a compiled plugin");
            }
        }
        Ok((component, digest))
    }
}

impl Runtime {
    /// [`Runtime::compile`] on a blocking thread (compiling takes seconds, never the
    /// executor's), logged with the plugin's name and how long it took.
    pub(super) async fn compile_off_executor(
        self: &Arc<Self>,
        bytes: Vec<u8>,
        plugin: &str,
    ) -> Result<(Component, String), LoadError> {
        let compiling = self.clone();
        let started = Instant::now();
        let (component, digest) = tokio::task::spawn_blocking(move || compiling.compile(&bytes))
            .await
            .map_err(|e| LoadError::Runtime(format!("the compile task failed: {e}")))??;
        tracing::info!(%plugin, %digest, elapsed = ?started.elapsed(), "plugin compiled (or read from the artifact cache)");
        Ok((component, digest))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::Relaxed);
    }
}

fn write_artifact(path: &std::path::Path, component: &Component) -> std::io::Result<()> {
    let bytes = component.serialize().map_err(std::io::Error::other)?;
    let dir = path.parent().ok_or_else(|| std::io::Error::other("artifact path has no parent"))?;
    std::fs::create_dir_all(dir)?;
    let temp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(temp.path(), bytes)?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// `sha256:<hex>` of a module.
pub fn digest(bytes: &[u8]) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The baseline compiler (Winch) takes the default plugins as they are, with the same
    /// epoch deadlines and memory caps, and compiles them faster than Cranelift.
    #[test]
    fn the_baseline_compiler_takes_the_default_plugins() {
        let Some(module) = crate::plugins::builtin::module("pod_security.wasm") else {
            eprintln!("skipped: this binary was built without its default plugins");
            return;
        };
        let optimizing = RuntimeConfig { cache_dir: None, instance_slots: 16, ..RuntimeConfig::default() };
        let baseline = Runtime::new(optimizing.baseline()).expect("a Winch runtime");
        let started = std::time::Instant::now();
        baseline.compile(module).expect("Winch compiles pod-security");
        let winch = started.elapsed();
        let cranelift = Runtime::new(optimizing).expect("a Cranelift runtime");
        let started = std::time::Instant::now();
        cranelift.compile(module).expect("Cranelift compiles pod-security");
        eprintln!("winch {winch:?}, cranelift {:?}", started.elapsed());
    }
}
