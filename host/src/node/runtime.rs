//! The container runtime: WebAssembly components run in-process by wasmtime, on an Engine of
//! their own (not the plugins': no pooling allocator, so 10,000 idle pods cost only what
//! they hold). A component exporting `wasi:http/incoming-handler` is a server: the runtime
//! listens on the pod IP at each container port and runs each request on a fresh instance,
//! as `wasmtime serve` does. Otherwise one exporting `wasi:cli/run` is a command: it runs
//! once, and its exit code is the container's.
//!
//! Every store gets the container's memory limit (a [`wasmtime::ResourceLimiter`]: growing
//! past it traps, and the container is OOMKilled) and yields to the executor at every epoch
//! tick, so a guest that loops never holds a thread and a stopped container stops at the
//! next tick; every poll of a guest is counted (and throttled to `limits.cpu`) by the
//! container's [`Usage`]. WASI grants only what the pod spec says: arguments, environment,
//! stdout and stderr into the container's log (or an exec session's pipes). It knows
//! nothing of the API: the pod worker decides.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use parking_lot::Mutex;
use tokio::io::DuplexStream;
use tokio::sync::{watch, Semaphore};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::cli::{AsyncStdinStream, AsyncStdoutStream};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::logs::LogSink;
use super::usage::Usage;

/// How often the epoch advances: how long a guest runs before it yields.
const TICK: Duration = Duration::from_millis(10);
/// Requests one HTTP pod serves at once; more wait for a turn.
const CONCURRENT_REQUESTS: usize = 256;
/// How long one request may run before it is answered 504 and its instance dropped.
const REQUEST_DEADLINE: Duration = Duration::from_secs(60);
/// Bytes a guest may write to a pipe ahead of its reader.
const PIPE_BUDGET: usize = 64 << 10;

/// Why a container cannot be made from an image.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("the image is a core WebAssembly module, not a component: build it for wasm32-wasip2 (or adapt it with `wasm-tools component new`)")]
    CoreModule,
    #[error("the image is not WebAssembly (it does not start with \\0asm)")]
    NotWasm,
    #[error("the component does not compile: {0}")]
    Compile(String),
    #[error("the component exports neither wasi:cli/run nor wasi:http/incoming-handler, so it is neither a command nor an HTTP server")]
    NoEntryPoint,
    #[error("the component cannot be linked: {0}")]
    Link(String),
}

/// What a compiled image can do.
pub struct Compiled {
    /// Set when it exports `wasi:http/incoming-handler`.
    pub http: Option<ProxyPre<Guest>>,
    /// Set when it exports `wasi:cli/run`.
    pub command: Option<CommandPre<Guest>>,
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    /// It trapped (the message says where).
    Trap(String),
    /// It grew its memory past the limit.
    OutOfMemory,
    /// The node stopped it (a failed liveness or startup probe: the message says which).
    Killed(String),
}

/// What a container's instances are given.
#[derive(Clone)]
pub struct GuestSpec {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `limits.memory`, over all of the container's instances at once.
    pub memory_limit: Option<u64>,
    /// Directories preopened for the guest (the container's volume mounts).
    pub mounts: Vec<super::volumes::Mount>,
    pub stdout: LogSink,
    pub stderr: LogSink,
    /// The container's CPU and memory, which every instance counts into.
    pub usage: Arc<Usage>,
}

/// An instance's own stdio, instead of the container's log (an exec session's streams,
/// or a run's stdin when the container has `stdin: true`); each one absent goes to the log
/// (stdin: empty).
#[derive(Default)]
pub struct Pipes {
    pub stdin: Option<DuplexStream>,
    pub stdout: Option<DuplexStream>,
    pub stderr: Option<DuplexStream>,
}

/// A store's data: WASI, wasi-http, and the memory limiter.
pub struct Guest {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: MemoryLimit,
}

impl WasiView for Guest {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for Guest {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: wasmtime_wasi_http::default_hooks() }
    }
}

/// The container's memory limit over every memory of every instance it has: what this
/// instance holds is counted in the container's [`Usage`], and given back when it is dropped.
struct MemoryLimit {
    limit: Option<u64>,
    usage: Arc<Usage>,
    held: u64,
    exceeded: Arc<AtomicBool>,
}

impl Drop for MemoryLimit {
    fn drop(&mut self) {
        self.usage.release(self.held);
    }
}

impl wasmtime::ResourceLimiter for MemoryLimit {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let by = desired.saturating_sub(current) as u64;
        match self.usage.grow(by, self.limit) {
            Ok(_) => {
                self.held += by;
                Ok(true)
            }
            Err(grown) => {
                self.exceeded.store(true, Ordering::Relaxed);
                Err(wasmtime::Error::msg(format!(
                    "memory limit exceeded: growing to {grown} bytes, the limit is {}",
                    self.limit.unwrap_or_default()
                )))
            }
        }
    }

    fn table_growing(&mut self, _current: usize, _desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

/// The engine, the linker, compiled images by layer digest, and the epoch ticker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<Guest>,
    compiled: Mutex<HashMap<String, Arc<Compiled>>>,
    ticking: Arc<AtomicBool>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::Relaxed);
    }
}

impl Runtime {
    pub fn new() -> Result<Arc<Self>, String> {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| format!("{e:#}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| format!("{e:#}"))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(|e| format!("{e:#}"))?;
        let ticking = Arc::new(AtomicBool::new(true));
        {
            let (engine, ticking) = (engine.clone(), ticking.clone());
            std::thread::Builder::new()
                .name("wasmkube-pod-epoch".into())
                .spawn(move || {
                    while ticking.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| format!("cannot start the epoch ticker: {e}"))?;
        }
        Ok(Arc::new(Self { engine, linker, compiled: Mutex::default(), ticking }))
    }

    /// Whether the image with this layer digest is compiled already.
    pub fn is_compiled(&self, digest: &str) -> bool {
        self.compiled.lock().contains_key(digest)
    }

    /// Compile `bytes` (cached by `digest`), off the executor.
    pub async fn compile(self: &Arc<Self>, digest: &str, bytes: Vec<u8>) -> Result<Arc<Compiled>, CreateError> {
        if let Some(compiled) = self.compiled.lock().get(digest) {
            return Ok(compiled.clone());
        }
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(CreateError::NotWasm);
        }
        if bytes[4..8] == [1, 0, 0, 0] {
            return Err(CreateError::CoreModule);
        }
        let runtime = self.clone();
        let compiled = tokio::task::spawn_blocking(move || runtime.prepare(&bytes))
            .await
            .map_err(|e| CreateError::Compile(format!("the compiler's task failed: {e}")))??;
        let compiled = Arc::new(compiled);
        self.compiled.lock().insert(digest.to_string(), compiled.clone());
        Ok(compiled)
    }

    fn prepare(&self, bytes: &[u8]) -> Result<Compiled, CreateError> {
        let component = Component::new(&self.engine, bytes).map_err(|e| CreateError::Compile(format!("{e:#}")))?;
        let exports: Vec<String> =
            component.component_type().exports(&self.engine).map(|(name, _)| name.to_string()).collect();
        let exports_any = |interface: &str| exports.iter().any(|e| e.starts_with(interface));
        let (serves, runs) = (exports_any("wasi:http/incoming-handler@"), exports_any("wasi:cli/run@"));
        if !serves && !runs {
            return Err(CreateError::NoEntryPoint);
        }
        let pre = self.linker.instantiate_pre(&component).map_err(|e| CreateError::Link(format!("{e:#}")))?;
        let http = if serves {
            Some(ProxyPre::new(pre.clone()).map_err(|e| CreateError::Link(format!("{e:#}")))?)
        } else {
            None
        };
        let command =
            if runs { Some(CommandPre::new(pre).map_err(|e| CreateError::Link(format!("{e:#}")))?) } else { None };
        Ok(Compiled { http, command })
    }

    fn store(&self, spec: &GuestSpec, exceeded: Arc<AtomicBool>, pipes: Pipes) -> Result<Store<Guest>, String> {
        let mut wasi = WasiCtx::builder();
        wasi.args(&spec.args).envs(&spec.env);
        match pipes.stdout {
            Some(pipe) => wasi.stdout(AsyncStdoutStream::new(PIPE_BUDGET, pipe)),
            None => wasi.stdout(spec.stdout.clone()),
        };
        match pipes.stderr {
            Some(pipe) => wasi.stderr(AsyncStdoutStream::new(PIPE_BUDGET, pipe)),
            None => wasi.stderr(spec.stderr.clone()),
        };
        if let Some(pipe) = pipes.stdin {
            wasi.stdin(AsyncStdinStream::new(pipe));
        }
        for mount in &spec.mounts {
            let perms =
                if mount.read_only { wasmtime_wasi::FsPerms::ReadOnly } else { wasmtime_wasi::FsPerms::ReadWrite };
            wasi.preopened_dir(&mount.host, &mount.guest, perms)
                .map_err(|e| format!("cannot open {} for {}: {e:#}", mount.host.display(), mount.guest))?;
        }
        let guest = Guest {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: MemoryLimit { limit: spec.memory_limit, usage: spec.usage.clone(), held: 0, exceeded },
        };
        let mut store = Store::new(&self.engine, guest);
        store.limiter(|guest| &mut guest.limits);
        store.epoch_deadline_async_yield_and_update(1);
        Ok(store)
    }

    /// Run a command to its end, its stdio the container's log or `pipes`. Dropping the
    /// future stops it (at the next tick).
    pub async fn run_command(&self, pre: &CommandPre<Guest>, spec: &GuestSpec, pipes: Pipes) -> Exit {
        let exceeded = Arc::new(AtomicBool::new(false));
        let mut store = match self.store(spec, exceeded.clone(), pipes) {
            Ok(store) => store,
            Err(why) => return Exit::Trap(why),
        };
        let outcome = spec
            .usage
            .meter(async {
                match pre.instantiate_async(&mut store).await {
                    Ok(command) => command.wasi_cli_run().call_run(&mut store).await,
                    Err(e) => Err(e),
                }
            })
            .await;
        drop(store);
        match outcome {
            Ok(Ok(())) => Exit::Code(0),
            Ok(Err(())) => Exit::Code(1),
            Err(e) => {
                if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                    Exit::Code(exit.0)
                } else if exceeded.load(Ordering::Relaxed) {
                    Exit::OutOfMemory
                } else {
                    Exit::Trap(format!("{e:#}"))
                }
            }
        }
    }

    /// Listen on `address` and serve each request on a fresh instance until `stop`.
    /// Binding is done before this returns (a port in use is the caller's error).
    pub async fn serve_http(
        self: &Arc<Self>,
        pre: ProxyPre<Guest>,
        address: SocketAddr,
        spec: GuestSpec,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let server =
            Arc::new(HttpServer { runtime: self.clone(), pre, spec, permits: Semaphore::new(CONCURRENT_REQUESTS) });
        Ok(tokio::spawn(server.accept(listener, stop)))
    }
}

struct HttpServer {
    runtime: Arc<Runtime>,
    pre: ProxyPre<Guest>,
    spec: GuestSpec,
    permits: Semaphore,
}

impl HttpServer {
    async fn accept(self: Arc<Self>, listener: tokio::net::TcpListener, mut stop: watch::Receiver<bool>) {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.wait_for(|s| *s) => break,
            };
            let (stream, _) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(error = %e, "pod listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let server = self.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let server = server.clone();
                    async move { Ok::<_, std::convert::Infallible>(server.handle(request).await) }
                });
                let _ = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service).await;
            });
            while connections.try_join_next().is_some() {}
        }
        // Stop accepting; connections under way end with the pod.
        connections.abort_all();
    }

    async fn handle(
        self: Arc<Self>,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<HyperOutgoingBody> {
        let Ok(_permit) = self.permits.acquire().await else {
            return plain(503, "the pod is stopping");
        };
        let exceeded = Arc::new(AtomicBool::new(false));
        let mut store = match self.runtime.store(&self.spec, exceeded.clone(), Pipes::default()) {
            Ok(store) => store,
            Err(why) => return plain(500, &format!("{why}\n")),
        };
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let prepared = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .and_then(|request| Ok((request, store.data_mut().http().new_response_outparam(sender)?)));
        let (incoming, out) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => return plain(400, &format!("cannot read the request: {e}")),
        };
        let pre = self.pre.clone();
        let stderr = self.spec.stderr.clone();
        let task = tokio::spawn(self.spec.usage.meter(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy.wasi_http_incoming_handler().call_handle(&mut store, incoming, out).await
        }));
        let abort = task.abort_handle();
        match tokio::time::timeout(REQUEST_DEADLINE, receiver).await {
            Ok(Ok(Ok(response))) => response,
            Ok(Ok(Err(e))) => plain(500, &format!("the component answered with an error: {e:?}")),
            Ok(Err(_)) => {
                let why = match task.await {
                    Ok(Ok(())) => "the component never set a response".to_string(),
                    Ok(Err(e)) if exceeded.load(Ordering::Relaxed) => format!("out of memory: {e:#}"),
                    Ok(Err(e)) => format!("the component trapped: {e:#}"),
                    Err(e) => format!("the request's task failed: {e}"),
                };
                stderr.write_line(&format!("wasmkube: request failed: {why}"));
                plain(500, &format!("{why}\n"))
            }
            Err(_) => {
                abort.abort();
                stderr.write_line("wasmkube: request took longer than 60 s; its instance was dropped");
                plain(504, "the component did not answer within 60 s\n")
            }
        }
    }
}

fn plain(status: u16, text: &str) -> hyper::Response<HyperOutgoingBody> {
    use http_body_util::BodyExt;
    let body =
        http_body_util::Full::new(bytes::Bytes::from(text.to_string())).map_err(|never| match never {}).boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response
}
