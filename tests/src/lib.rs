//! Shared harness for the end-to-end tests: the real `wasmkube` binary, a real `etcd`
//! started on free loopback ports in a temp dir, and waiting on conditions with deadlines.

pub mod registry;

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use wasmkube::storage::{embedded::EmbeddedStore, etcd::EtcdStore, local_etcd::LocalEtcd, StorageMetrics, Store};

/// A free TCP port on 127.0.0.1 (bound and released; the OS does not hand it out again soon).
pub fn free_port() -> u16 {
    wasmkube::storage::local_etcd::free_port().expect("binding 127.0.0.1:0 must work on a test machine")
}

/// The `wasmkube` binary built beside this test (`target/<profile>/wasmkube`).
pub fn wasmkube_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let bin = profile_dir.join("wasmkube");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p wasmkube`; the README's test command does)",
        bin.display()
    );
    bin
}

/// Poll `check` until it returns `Some` or `deadline` passes; panics naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A real etcd (Debian's etcd-server) on free loopback ports, in a temp dir; killed on drop.
pub struct Etcd {
    local: LocalEtcd,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub async fn start() -> Etcd {
        Self::start_on(0).await
    }

    /// Start etcd serving clients on `client_port` (0: a free one).
    pub async fn start_on(client_port: u16) -> Etcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let local = LocalEtcd::start(dir.path(), client_port).await.unwrap_or_else(|e| panic!("{e}"));
        let endpoint = local.endpoint().to_string();
        Etcd { local, endpoint, _dir: dir }
    }

    /// A store on this etcd under the `/test` prefix.
    pub async fn store(&self) -> Arc<dyn Store> {
        let store =
            EtcdStore::connect(&[self.local.endpoint().to_string()], "/test".into(), StorageMetrics::unregistered())
                .await
                .expect("connecting to etcd");
        Arc::new(store)
    }
}

/// Which backend a conformance test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Embedded,
    Etcd,
}

/// A store of either backend, and what keeps it alive (temp dir or etcd process).
pub struct TestStore {
    pub store: Arc<dyn Store>,
    _keep: Box<dyn std::any::Any + Send>,
}

impl std::ops::Deref for TestStore {
    type Target = dyn Store;
    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

impl TestStore {
    pub async fn open(backend: Backend) -> TestStore {
        match backend {
            Backend::Embedded => {
                let dir = tempfile::tempdir().expect("temp dir");
                let store = EmbeddedStore::open(dir.path(), StorageMetrics::unregistered())
                    .await
                    .expect("opening the embedded store");
                TestStore { store: Arc::new(store), _keep: Box::new(dir) }
            }
            Backend::Etcd => {
                let etcd = Etcd::start().await;
                let store = etcd.store().await;
                TestStore { store, _keep: Box::new(etcd) }
            }
        }
    }
}

/// A `wasmkube` process started by a test; killed on drop if still running.
pub struct Process {
    pub child: Child,
    /// What it has written to stderr so far (drained as it comes: a server that logs more
    /// than a pipe holds must never block on it).
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Process {
    /// Start `wasmkube` with `args`: stdout piped (for the test to read), stderr collected.
    pub fn start(args: &[&str]) -> Process {
        let mut child = Command::new(wasmkube_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting wasmkube");
        let stderr = child.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                use std::io::Read;
                let mut said = Vec::new();
                let _ = pipe.read_to_end(&mut said);
                String::from_utf8_lossy(&said).into_owned()
            })
        });
        Process { child, stderr }
    }

    /// Start a long-running `wasmkube` with its stdout and stderr appended to `log`, so a
    /// chatty server never blocks on a full pipe and a failing test can show what it said.
    pub fn start_logged(args: &[&str], log: &std::path::Path) -> Process {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("server log file");
        let child = Command::new(wasmkube_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file handle"))
            .stderr(file)
            .spawn()
            .expect("starting wasmkube");
        Process { child, stderr: None }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to our own child process.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill({}) failed", self.child.id());
    }

    /// Wait for the process to exit within `deadline`; returns its exit code and stderr.
    pub async fn wait_exit(&mut self, deadline: Duration) -> (Option<i32>, String) {
        let status = wait_for("wasmkube to exit", deadline, || {
            let status = self.child.try_wait().expect("try_wait");
            async move { status }
        })
        .await;
        // The pipe closes when the process (and anything it started) exits.
        let stderr = self.stderr.take().map(|reader| reader.join().unwrap_or_default()).unwrap_or_default();
        (status.code(), stderr)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTPS client for a server started on `data_dir` at `listen`: it trusts the
/// cluster's CA and presents the admin certificate, as kubectl does with the kubeconfig serve wrote.
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub kubeconfig: PathBuf,
}

impl Api {
    /// Wait for the server to write its certificates, then build the client.
    pub async fn connect(data_dir: &std::path::Path, listen: &str) -> Api {
        let tls = data_dir.join("tls");
        let ca = wait_for("the server to write its CA", Duration::from_secs(30), || {
            let path = tls.join("ca.crt");
            async move { std::fs::read(path).ok() }
        })
        .await;
        let mut identity = std::fs::read(tls.join("admin.crt")).expect("admin.crt");
        identity.extend(std::fs::read(tls.join("admin.key")).expect("admin.key"));
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
            .identity(reqwest::Identity::from_pem(&identity).expect("admin PEM"))
            .build()
            .expect("HTTPS client");
        Api { base: format!("https://{listen}"), client, kubeconfig: data_dir.join("kubeconfig") }
    }

    /// GET `path`; the status code and body, or `None` if nothing answered.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        // Bounded: a connection that never answers is retried, not waited on forever.
        let response =
            self.client.get(format!("{}{path}", self.base)).timeout(Duration::from_secs(10)).send().await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// Wait (without a deadline of its own) until `/readyz` answers 200.
    pub async fn wait_ready_quietly(&self) {
        while self.get("/readyz").await.filter(|(code, _)| *code == 200).is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        wait_for("/readyz to answer 200", Duration::from_secs(60), || async {
            self.get("/readyz").await.filter(|(code, _)| *code == 200)
        })
        .await;
    }
}

/// Turn each `async fn case(store: TestStore)` named into two tests, `embedded::case` and
/// `etcd::case`: one suite, written once, run against both backends.
#[macro_export]
macro_rules! both_backends {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                super::$case($crate::TestStore::open($crate::Backend::Embedded).await).await
            })*
        }
        mod etcd {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                super::$case($crate::TestStore::open($crate::Backend::Etcd).await).await
            })*
        }
    };
}

/// Turn each `async fn case(backend: Backend)` named into two tests, `embedded::case` and
/// `etcd::case`: a scenario against the real server, written once, on both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                super::$case($crate::Backend::Embedded).await
            })*
        }
        mod etcd {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                super::$case($crate::Backend::Etcd).await
            })*
        }
    };
}

/// A plugin component built by scripts/build-plugins (`name` as cargo names the file,
/// e.g. "misbehave"), from `$WASMKUBE_PLUGINS_TARGET` or the workspace's plugins/target.
pub fn plugin_component(name: &str) -> PathBuf {
    let target = std::env::var_os("WASMKUBE_PLUGINS_TARGET")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target"));
    let path = target.join("wasm32-wasip2/release").join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the plugins first (scripts/build-plugins; the README's test command does)",
        path.display()
    );
    path
}

/// A workload component built by scripts/build-examples (examples/workloads: "hello-command",
/// "hello-http").
pub fn workload_component(name: &str) -> PathBuf {
    plugin_component(name)
}

/// Leader election fast enough for a test: a 3 s lease, 2 s renew deadline, 500 ms retries.
pub const FAST_ELECTION: [&str; 6] = [
    "--leader-elect-lease-duration",
    "3s",
    "--leader-elect-renew-deadline",
    "2s",
    "--leader-elect-retry-period",
    "500ms",
];

/// The real kubectl binaries the tests run (the dispatcher at /usr/bin/kubectl picks by
/// the server's /version; these are named explicitly).
pub const KUBECTLS: [&str; 2] =
    ["/usr/lib/google-cloud-sdk/bin/kubectl.1.33", "/usr/lib/google-cloud-sdk/bin/kubectl.1.32"];

/// A `wasmkube serve` on a free port with its own data dir, and clients for it.
pub struct Cluster {
    _serve: Process,
    pub dir: tempfile::TempDir,
    pub api: Api,
    /// The etcd the server stores in, for a cluster on the etcd backend that started it.
    _etcd: Option<Etcd>,
    etcd_endpoint: Option<String>,
    /// The pod address range this cluster's node holds (claimed; see [`AddressRange`]).
    pub range: Option<AddressRange>,
}

/// A /16 of loopback addresses one test's node agent uses for its node and pods, claimed
/// with a lock file so tests running at once never share addresses: 127.N.0.0/16 with N in
/// 100..=239 (clear of 127.0.0.0/16, the default cluster and service ranges).
pub struct AddressRange {
    pub second_octet: u8,
    _lock: std::fs::File,
}

impl AddressRange {
    pub fn claim() -> AddressRange {
        use std::os::fd::AsRawFd;
        let dir = std::env::temp_dir().join("wasmkube-test-ranges");
        std::fs::create_dir_all(&dir).expect("a dir for range locks");
        let start = (std::process::id() as usize + free_port() as usize) % 140;
        for i in 0..140 {
            let octet = 100 + ((start + i) % 140) as u8;
            let file = std::fs::File::create(dir.join(format!("{octet}.lock"))).expect("a range lock file");
            // SAFETY: flock on a descriptor this File owns; released when it is dropped.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return AddressRange { second_octet: octet, _lock: file };
            }
        }
        panic!("every test address range 127.100-239.0.0/16 is claimed");
    }

    /// `127.N.0.0/16`.
    pub fn cidr(&self) -> String {
        format!("127.{}.0.0/16", self.second_octet)
    }
}

/// A test that fails prints what its server logged last, so a failure in CI says why.
impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let last = &lines[lines.len().saturating_sub(LOG_LINES_ON_FAILURE)..];
            eprintln!("--- the last {} lines the server logged ---\n{}\n---", last.len(), last.join("\n"));
        }
    }
}

/// How much of its server's log a failed test prints.
const LOG_LINES_ON_FAILURE: usize = 80;

impl Cluster {
    /// Start the real binary on the embedded store and wait until it is ready.
    pub async fn start() -> Cluster {
        Self::start_on(Backend::Embedded).await
    }

    /// Start the real binary on `backend` (for etcd: a real etcd of its own) and wait
    /// until it is ready.
    pub async fn start_on(backend: Backend) -> Cluster {
        Self::start_with(backend, &[]).await
    }

    /// Start the real binary on `backend` with `extra` flags of `serve`.
    pub async fn start_with(backend: Backend, extra: &[&str]) -> Cluster {
        let etcd = match backend {
            Backend::Embedded => None,
            Backend::Etcd => Some(Etcd::start().await),
        };
        let endpoint = etcd.as_ref().map(|e| e.endpoint.clone());
        Self::launch(etcd, endpoint.as_deref(), extra).await
    }

    /// Start the real binary on the embedded store with its node agent on (node `node-a`,
    /// pods from a claimed address range) and `extra` flags.
    pub async fn start_with_node(extra: &[&str]) -> Cluster {
        let range = AddressRange::claim();
        let cidr = range.cidr();
        let mut flags = vec!["--node-agent=true", "--node-name", "node-a", "--cluster-cidr", &cidr];
        flags.extend_from_slice(extra);
        let mut cluster = Self::launch(None, None, &flags).await;
        cluster.range = Some(range);
        cluster
    }

    /// Run `wasmkube` with `args` against this cluster (its kubeconfig); (success, stdout, stderr).
    pub fn wasmkube(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(wasmkube_bin())
            .args(args)
            .env("KUBECONFIG", &self.api.kubeconfig)
            .output()
            .unwrap_or_else(|e| panic!("cannot run wasmkube: {e}"));
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
    }

    /// A second API server on this cluster's etcd (its own data dir, port and CA), as in
    /// an HA control plane. This cluster must outlive it (it owns the etcd).
    pub async fn another_server(&self) -> Cluster {
        self.another_server_with(&[]).await
    }

    /// The same, with `extra` flags of `serve`.
    pub async fn another_server_with(&self, extra: &[&str]) -> Cluster {
        let etcd = self.etcd_endpoint.as_deref().expect("another server needs a cluster on etcd");
        Self::launch(None, Some(etcd), extra).await
    }

    /// Send `signal` (libc::SIGTERM, libc::SIGKILL, ...) to the server.
    pub fn signal(&self, signal: i32) {
        self._serve.signal(signal);
    }

    /// What the server has logged so far (ANSI colours removed).
    pub fn log(&self) -> String {
        let said = std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default();
        let mut plain = String::with_capacity(said.len());
        let mut chars = said.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                plain.push(c);
            }
        }
        plain
    }

    /// The identity the server takes part in leader election as (from its "ready" line).
    pub async fn identity(&self) -> String {
        wait_for("the server to log its identity", Duration::from_secs(30), || {
            let log = self.log();
            async move {
                log.lines()
                    .find(|l| l.contains(" ready ") && l.contains("identity="))
                    .and_then(|l| l.split("identity=").nth(1))
                    .map(|rest| rest.split_whitespace().next().unwrap_or_default().to_string())
            }
        })
        .await
    }

    async fn launch(etcd: Option<Etcd>, endpoint: Option<&str>, extra: &[&str]) -> Cluster {
        // A port picked free can be taken by another test's process before the server binds
        // it: then the server exits at once, and it is started again on another port.
        for attempt in 1..=3 {
            let dir = tempfile::tempdir().unwrap();
            let listen = format!("127.0.0.1:{}", free_port());
            // The data dir is a directory of its own: serve refuses one holding anything else
            // (the log, the files tests write for kubectl).
            let data_dir = dir.path().join("data").to_str().unwrap().to_string();
            let mut args = vec!["serve", "--listen", &listen, "--data-dir", &data_dir];
            if let Some(endpoint) = endpoint {
                args.extend(["--storage", "etcd", "--etcd-endpoints", endpoint]);
            }
            // The tests that want a node agent ask for one (start_with_node); the rest run a
            // control plane only, as they assume no real node.
            if !extra.iter().any(|f| f.starts_with("--node-agent")) {
                // Nor do their Nodes get ranges (a test may compare a Node with what it wrote).
                args.push("--node-agent=false");
                if !extra.iter().any(|f| f.starts_with("--allocate-node-cidrs")) {
                    args.push("--allocate-node-cidrs=false");
                }
            }
            args.extend_from_slice(extra);
            let log = dir.path().join("serve.log");
            let mut serve = Process::start_logged(&args, &log);
            let api = Api::connect(std::path::Path::new(&data_dir), &listen).await;
            // Generous: a plugin folder may hold a large component (a Python plugin is ~18 MB) to compile first.
            let exited = async {
                loop {
                    if let Ok(Some(status)) = serve.child.try_wait() {
                        return status;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            let outcome = tokio::select! {
                ready = tokio::time::timeout(Duration::from_secs(180), api.wait_ready_quietly()) => ready.map_err(|_| None),
                status = exited => Err(Some(status)),
            };
            let said = || std::fs::read_to_string(&log).unwrap_or_default();
            match outcome {
                Ok(()) => {
                    return Cluster {
                        _serve: serve,
                        dir,
                        api,
                        _etcd: etcd,
                        etcd_endpoint: endpoint.map(str::to_owned),
                        range: None,
                    }
                }
                Err(Some(_)) if attempt < 3 && said().contains("Address already in use") => continue,
                Err(status) => {
                    let said = said();
                    let tail: Vec<&str> = said.lines().rev().take(40).collect();
                    let readyz = api.get("/readyz?verbose").await;
                    panic!(
                        "the server was not ready (exited: {status:?}); /readyz?verbose answered {readyz:?}; the end of its log:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Run kubectl against the cluster; (success, stdout, stderr).
    pub fn kubectl(&self, kubectl: &str, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&self.api.kubeconfig)
            .args(args)
            // kubectl caches discovery per host:port under $HOME; ports are reused.
            .env("HOME", self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {kubectl}: {e}"));
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
    }

    /// A JSON merge patch (`application/merge-patch+json`); the status code and the answer.
    pub async fn merge_patch(&self, path: &str, patch: &Value) -> (u16, Value) {
        let response = self
            .api
            .client
            .patch(format!("{}{path}", self.api.base))
            .header("Content-Type", "application/merge-patch+json")
            .body(patch.to_string())
            .send()
            .await
            .expect("request");
        let code = response.status().as_u16();
        (code, response.json().await.expect("a JSON body"))
    }

    /// A request with an optional JSON body; the status code and the JSON answer.
    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.api.client.request(method, format!("{}{path}", self.api.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let code = response.status().as_u16();
        (code, response.json().await.expect("a JSON body"))
    }
}
