//! `wasmkube serve`: options, then the server's life: bind, open storage (retrying while
//! it is unreachable), serve, and on SIGINT/SIGTERM drain and close storage cleanly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use super::InvalidOptions;
use crate::api::tls::{TlsFiles, TlsListener};
use crate::api::{self, AppState, Health};
use crate::registry::Registry;
use crate::storage::{self, embedded::EmbeddedStore, StorageConfig, StorageMetrics, Store, StoreError};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageKind {
    /// Durable on local disk in --data-dir; single node.
    Embedded,
    /// An etcd v3 cluster at --etcd-endpoints; for HA.
    Etcd,
}

/// Flags of `wasmkube serve`, as parsed.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeOptions {
    /// Address to serve HTTP on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: String,
    /// Where the embedded store (and later certificates) live. Default:
    /// $XDG_DATA_HOME/wasmkube, else $HOME/.local/share/wasmkube, else /var/lib/wasmkube.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Which storage backend to use.
    #[arg(long, value_enum, default_value_t = StorageKind::Embedded)]
    storage: StorageKind,
    /// etcd client URLs, comma separated (http://127.0.0.1:2379); needs --storage etcd.
    #[arg(long, value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// Key prefix in etcd, so several clusters can share one etcd.
    #[arg(long, default_value = "/wasmkube")]
    etcd_prefix: String,
    /// A folder of plugin manifests (`*.yaml`) and their components, followed: adding,
    /// changing or removing a manifest or its module loads, reloads or unloads it.
    #[arg(long)]
    plugin_dir: Option<PathBuf>,
    /// Serve without the default plugins (pod-security, defaults, and the controllers).
    #[arg(long)]
    no_default_plugins: bool,
    /// Which controller plugins run (by Plugin name): `*` all, `name` one, `-name` not that
    /// one, comma separated, e.g. `*,-gc`.
    #[arg(long, default_value = "*")]
    controllers: String,
    /// Take part in leader election before running controllers (the Lease
    /// kube-system/wasmkube-controller-manager); false: run them at once, for a single server.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Run the scheduler (on the leader of the Lease kube-system/wasmkube-scheduler); false:
    /// pods stay unscheduled unless something else binds them.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    scheduler: bool,
    /// What decides where pods go: the scheduler-policy plugins loaded (the default one,
    /// and any Plugin of kind scheduler-policy), or `native`, the default policy compiled
    /// into the binary (the baseline the plugin is measured against).
    #[arg(long, value_enum, default_value_t = SchedulerPolicyKind::Plugins)]
    scheduler_policy: SchedulerPolicyKind,
    /// Register this many simulated nodes (sim-node-000, ...) that run the pods bound to
    /// them on paper: Running and Ready after --sim-pod-start-delay.
    #[arg(long, default_value_t = 0)]
    sim_nodes: usize,
    /// Each simulated node's cpu capacity.
    #[arg(long, default_value = "4")]
    sim_node_cpu: String,
    /// Each simulated node's memory capacity.
    #[arg(long, default_value = "16Gi")]
    sim_node_memory: String,
    /// Labels every simulated node gets besides its own (hostname, zone, ...), e.g.
    /// `pool=sim,tier=a`.
    #[arg(long, value_delimiter = ',')]
    sim_node_labels: Vec<String>,
    /// Taints every simulated node gets, as kubectl taint writes them, e.g.
    /// `dedicated=sim:NoSchedule`.
    #[arg(long, value_delimiter = ',')]
    sim_node_taints: Vec<String>,
    /// How many pods each simulated node takes.
    #[arg(long, default_value_t = 110)]
    sim_node_pods: u32,
    /// How long a pod bound to a simulated node takes to be Running and Ready.
    #[arg(long, default_value = "500ms")]
    sim_pod_start_delay: String,
    /// How long a leader's Lease holds without renewal (candidates wait this long).
    #[arg(long, default_value = "15s")]
    leader_elect_lease_duration: String,
    /// How long a leader keeps trying to renew before it stops leading (< lease duration).
    #[arg(long, default_value = "10s")]
    leader_elect_renew_deadline: String,
    /// How often candidates try to take the Lease and the leader renews it.
    #[arg(long, default_value = "2s")]
    leader_elect_retry_period: String,
    /// The audiences the API accepts service-account tokens for, comma separated (as
    /// kube-apiserver's flag); a token made for another audience does not authenticate.
    /// Default: the issuer, what tokens are made for when a request names no audience.
    #[arg(long, value_delimiter = ',')]
    api_audiences: Vec<String>,
    /// How long a write to a client (a watch stream, most often) may wait for it to read
    /// before its connection is closed.
    #[arg(long, default_value = "30s")]
    write_timeout: String,
    /// Run a node agent for this machine's node, so pods bound to it really run (as
    /// `k3s server` runs an agent); false: a control plane only (k3s: --disable-agent).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    node_agent: bool,
    /// The name of this server's node. Default: the host name.
    #[arg(long)]
    node_name: Option<String>,
    /// The range pods' addresses come from; each node gets a --node-cidr-mask-size part of it.
    #[arg(long, default_value = "127.64.0.0/12")]
    cluster_cidr: String,
    /// The size of each node's range (its podCIDR).
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Give every Node a podCIDR from --cluster-cidr (the node-IPAM controller).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    allocate_node_cidrs: bool,
    /// How many pods this server's node runs at most.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// CrashLoopBackOff's first and longest delay between restarts of a container
    /// (the kubelet's 10s and 5m; it is reset after a run twice the longest).
    #[arg(long, default_value = "10s,5m")]
    crash_loop_backoff: String,
    /// How the node reaches registries other than the cluster's: a YAML file of `mirrors`
    /// (an `http://` endpoint for a loopback registry) and `configs` (`auth`, `tls.ca_file`),
    /// as k3s' registries.yaml.
    #[arg(long, value_name = "FILE")]
    registry_config: Option<PathBuf>,
}

/// What decides where pods go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SchedulerPolicyKind {
    Plugins,
    Native,
}

/// How the controller manager's Lease is held.
#[derive(Clone, Debug)]
pub(crate) struct ElectionTimings {
    enabled: bool,
    lease_duration: Duration,
    renew_deadline: Duration,
    retry_period: Duration,
}

impl Default for ElectionTimings {
    fn default() -> Self {
        Self {
            enabled: true,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Options with defaults filled in; only [`ServeOptions::complete`] makes one.
pub struct CompletedServeOptions {
    options: ServeOptions,
    data_dir: PathBuf,
}

/// Options that passed validation; only [`CompletedServeOptions::validate`] makes one.
pub struct ValidServeOptions {
    listen: SocketAddr,
    data_dir: PathBuf,
    storage: StorageConfig,
    plugin_dir: Option<PathBuf>,
    default_plugins: bool,
    controllers: crate::controllers::manager::Selection,
    election: ElectionTimings,
    sim_nodes: Option<crate::node::sim::SimNodes>,
    /// None: no scheduler.
    scheduler: Option<crate::scheduler::SchedulerConfig>,
    /// What service-account tokens must be for to authenticate (never empty).
    api_audiences: Vec<String>,
    /// How long a write may wait for a client to read.
    write_timeout: Duration,
    /// None: no node agent in this process.
    node_agent: Option<crate::node::agent::AgentConfig>,
    /// None: nodes get no podCIDR from this server.
    node_ipam: Option<crate::controllers::node_ipam::NodeIpam>,
}

impl ValidServeOptions {
    /// An embedded store in `data_dir`, served on `listen` (port 0: any free port).
    pub(crate) fn embedded(data_dir: PathBuf, listen: SocketAddr) -> Self {
        Self {
            listen,
            storage: StorageConfig::Embedded { data_dir: data_dir.clone() },
            data_dir,
            plugin_dir: None,
            default_plugins: true,
            controllers: Default::default(),
            election: Default::default(),
            sim_nodes: None,
            scheduler: Some(Default::default()),
            api_audiences: vec![crate::auth::tokens::ISSUER.to_string()],
            write_timeout: crate::api::DEFAULT_WRITE_TIMEOUT,
            node_agent: None,
            node_ipam: None,
        }
    }

    /// The same, with `count` simulated nodes of `cpu` each, and the scheduler deciding with
    /// its policy plugins or (`native`) the default policy compiled in.
    pub(crate) fn with_sim_nodes(mut self, count: usize, cpu: &str, native: bool) -> Self {
        self.sim_nodes = Some(crate::node::sim::SimNodes {
            count,
            cpu: cpu.into(),
            memory: "64Gi".into(),
            pods: 110,
            labels: Vec::new(),
            taints: Vec::new(),
            start_delay: Duration::from_secs(3600),
        });
        self.scheduler = Some(crate::scheduler::SchedulerConfig { native_policy: native, ..Default::default() });
        self
    }

    /// The same, with a node agent for `node` (its pods from `cluster_cidr` cut at `mask`),
    /// running up to `max_pods` pods, restarting with the kubelet's back-off.
    pub(crate) fn with_node_agent(mut self, node: &str, cluster_cidr: &str, mask: u8, max_pods: usize) -> Self {
        if let Ok(cluster_cidr) = crate::machinery::cidr::Ipv4Net::parse(cluster_cidr) {
            self.node_ipam = Some(crate::controllers::node_ipam::NodeIpam { cluster_cidr, node_mask: mask });
        }
        self.node_agent = Some(crate::node::agent::AgentConfig {
            node_name: node.into(),
            dir: self.data_dir.join("node"),
            max_pods: u32::try_from(max_pods).unwrap_or(u32::MAX),
            backoff: Default::default(),
            local_registries: Vec::new(),
            registry_config: Default::default(),
            cluster_registry: None,
        });
        self
    }

    /// The same, without a scheduler (pods stay unbound, and nothing writes about them).
    pub(crate) fn without_scheduler(mut self) -> Self {
        self.scheduler = None;
        self
    }

    /// The same, with plugins from `dir` and (or not) the default plugins.
    pub(crate) fn with_plugins(mut self, dir: Option<PathBuf>, defaults: bool) -> Self {
        self.plugin_dir = dir;
        self.default_plugins = defaults;
        self
    }

    /// etcd at `endpoints` with keys under `prefix`, certificates in `data_dir`, served on `listen`.
    pub(crate) fn etcd(data_dir: PathBuf, listen: SocketAddr, endpoints: Vec<String>, prefix: &str) -> Self {
        Self {
            listen,
            storage: StorageConfig::Etcd { endpoints, prefix: prefix.to_string().into() },
            data_dir,
            plugin_dir: None,
            default_plugins: true,
            controllers: Default::default(),
            election: Default::default(),
            sim_nodes: None,
            scheduler: Some(Default::default()),
            api_audiences: vec![crate::auth::tokens::ISSUER.to_string()],
            write_timeout: crate::api::DEFAULT_WRITE_TIMEOUT,
            node_agent: None,
            node_ipam: None,
        }
    }
}

impl ServeOptions {
    pub fn complete(self) -> CompletedServeOptions {
        let data_dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
        CompletedServeOptions { options: self, data_dir }
    }
}

pub(crate) fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("wasmkube");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/wasmkube"),
        None => PathBuf::from("/var/lib/wasmkube"),
    }
}

impl CompletedServeOptions {
    /// Check every flag; report all problems at once.
    pub fn validate(self) -> Result<ValidServeOptions, InvalidOptions> {
        let o = &self.options;
        let mut problems = Vec::new();
        let listen = o
            .listen
            .parse::<SocketAddr>()
            .map_err(|e| {
                problems.push(format!("--listen {:?}: {e}; expected an address like 127.0.0.1:6443", o.listen))
            })
            .ok();
        match o.storage {
            StorageKind::Embedded if !o.etcd_endpoints.is_empty() => {
                problems.push("--etcd-endpoints is only used with --storage etcd".into())
            }
            StorageKind::Etcd if o.etcd_endpoints.is_empty() => problems
                .push("--storage etcd needs --etcd-endpoints, e.g. --etcd-endpoints http://127.0.0.1:2379".into()),
            _ => {}
        }
        for endpoint in &o.etcd_endpoints {
            if let Err(problem) = storage::check_etcd_endpoint(endpoint) {
                problems.push(format!("--etcd-endpoints: {problem}"));
            }
        }
        if !o.etcd_prefix.starts_with('/') {
            problems.push(format!("--etcd-prefix {:?} must start with '/'", o.etcd_prefix));
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.push("--data-dir must not be empty".into());
        }
        if let Some(dir) = o.plugin_dir.as_ref().filter(|d| !d.is_dir()) {
            problems.push(format!(
                "--plugin-dir {}: not a directory; create it or point at the folder of plugin manifests",
                dir.display()
            ));
        }
        let controllers = crate::controllers::manager::Selection::parse(&o.controllers)
            .map_err(|e| problems.push(format!("--controllers {:?}: {e}", o.controllers)))
            .ok();
        let mut duration = |flag: &str, text: &str| {
            humantime::parse_duration(text)
                .ok()
                .filter(|d| !d.is_zero())
                .or_else(|| {
                    problems.push(format!("--{flag} {text:?} is not a duration such as 15s or 500ms"));
                    None
                })
                .unwrap_or_default()
        };
        let election = ElectionTimings {
            enabled: o.leader_elect,
            lease_duration: duration("leader-elect-lease-duration", &o.leader_elect_lease_duration),
            renew_deadline: duration("leader-elect-renew-deadline", &o.leader_elect_renew_deadline),
            retry_period: duration("leader-elect-retry-period", &o.leader_elect_retry_period),
        };
        let write_timeout = duration("write-timeout", &o.write_timeout);
        if !election.renew_deadline.is_zero() && election.renew_deadline >= election.lease_duration {
            problems.push(format!(
                "--leader-elect-renew-deadline ({:?}) must be shorter than --leader-elect-lease-duration ({:?}), so a leader stops before its lease can expire",
                election.renew_deadline, election.lease_duration
            ));
        }
        let start_delay = humantime::parse_duration(&o.sim_pod_start_delay)
            .map_err(|e| {
                problems.push(format!(
                    "--sim-pod-start-delay {:?} is not a duration such as 500ms: {e}",
                    o.sim_pod_start_delay
                ))
            })
            .unwrap_or_default();
        if o.sim_nodes > 10_000 {
            problems.push(format!("--sim-nodes {} is more than 10000", o.sim_nodes));
        }
        let labels: Vec<(String, String)> = o
            .sim_node_labels
            .iter()
            .filter_map(|l| match l.split_once('=') {
                Some((k, v)) if !k.is_empty() => Some((k.to_string(), v.to_string())),
                _ => {
                    problems.push(format!("--sim-node-labels: {l:?} is not key=value"));
                    None
                }
            })
            .collect();
        let taints: Vec<serde_json::Value> = o
            .sim_node_taints
            .iter()
            .filter_map(|t| match crate::node::sim::parse_taint(t) {
                Ok(taint) => Some(taint),
                Err(e) => {
                    problems.push(format!("--sim-node-taints: {e}"));
                    None
                }
            })
            .collect();
        let sim_nodes = (o.sim_nodes > 0).then(|| crate::node::sim::SimNodes {
            count: o.sim_nodes,
            cpu: o.sim_node_cpu.clone(),
            memory: o.sim_node_memory.clone(),
            pods: o.sim_node_pods,
            labels,
            taints,
            start_delay,
        });
        let scheduler = o.scheduler.then(|| crate::scheduler::SchedulerConfig {
            native_policy: o.scheduler_policy == SchedulerPolicyKind::Native,
            ..Default::default()
        });
        if !election.retry_period.is_zero() && election.retry_period >= election.renew_deadline {
            problems.push(format!(
                "--leader-elect-retry-period ({:?}) must be shorter than --leader-elect-renew-deadline ({:?})",
                election.retry_period, election.renew_deadline
            ));
        }
        let node_ipam = match crate::machinery::cidr::Ipv4Net::parse(&o.cluster_cidr) {
            Err(e) => {
                problems.push(format!("--cluster-cidr: {e}"));
                None
            }
            Ok(range) if range.overlaps(&RESERVED_LOOPBACK) => {
                problems.push(format!("--cluster-cidr {range} overlaps {RESERVED_LOOPBACK} (the API's 127.0.0.1, resolvers on 127.0.0.53, the hostname's 127.0.1.1): pick a range clear of it, such as 127.64.0.0/12"));
                None
            }
            Ok(range) if o.node_cidr_mask_size < range.prefix() || o.node_cidr_mask_size > 30 => {
                problems.push(format!(
                    "--node-cidr-mask-size {} must be between the cluster CIDR's prefix ({}) and 30",
                    o.node_cidr_mask_size,
                    range.prefix()
                ));
                None
            }
            Ok(range) => {
                Some(crate::controllers::node_ipam::NodeIpam { cluster_cidr: range, node_mask: o.node_cidr_mask_size })
            }
        };
        let node_ipam = node_ipam.filter(|_| o.allocate_node_cidrs);
        let backoff = crate::node::agent::Backoff::parse(&o.crash_loop_backoff)
            .map_err(|e| problems.push(format!("--crash-loop-backoff {e}")))
            .unwrap_or_default();
        let node_name = o.node_name.clone().unwrap_or_else(host_name);
        if let Some(problem) = crate::registry::dns1123_subdomain_problem(&node_name) {
            problems.push(format!("--node-name {node_name:?}: {problem}"));
        }
        if o.max_pods == 0 {
            problems.push("--max-pods must be at least 1".into());
        }
        let registry_config = match &o.registry_config {
            Some(path) => crate::oci::config::RegistryConfig::load(path)
                .map_err(|e| problems.push(format!("--registry-config: {e}")))
                .unwrap_or_default(),
            None => Default::default(),
        };
        let node_agent = o.node_agent.then(|| crate::node::agent::AgentConfig {
            node_name,
            dir: self.data_dir.join("node"),
            max_pods: o.max_pods,
            backoff,
            local_registries: Vec::new(),
            registry_config,
            cluster_registry: None,
        });
        let api_audiences: Vec<String> = o.api_audiences.iter().map(|a| a.trim().to_string()).collect();
        if api_audiences.iter().any(String::is_empty) {
            problems.push("--api-audiences must not name an empty audience".into());
        }
        InvalidOptions::check(problems)?;
        let api_audiences =
            if api_audiences.is_empty() { vec![crate::auth::tokens::ISSUER.to_string()] } else { api_audiences };
        let storage = match o.storage {
            StorageKind::Embedded => StorageConfig::Embedded { data_dir: self.data_dir.clone() },
            StorageKind::Etcd => {
                StorageConfig::Etcd { endpoints: o.etcd_endpoints.clone(), prefix: o.etcd_prefix.clone().into() }
            }
        };
        #[allow(clippy::expect_used)] // a parse failure was reported above
        let listen = listen.expect("listen address validated");
        Ok(ValidServeOptions {
            listen,
            data_dir: self.data_dir,
            storage,
            plugin_dir: o.plugin_dir.clone(),
            default_plugins: !o.no_default_plugins,
            #[allow(clippy::expect_used)] // a parse failure was reported above
            controllers: controllers.expect("controllers validated"),
            election,
            sim_nodes,
            scheduler,
            api_audiences,
            write_timeout,
            node_agent,
            node_ipam,
        })
    }
}

/// 127.0.0.0/16: loopback addresses the machine itself uses; no pod or node gets one.
const RESERVED_LOOPBACK: crate::machinery::cidr::Ipv4Net = crate::machinery::cidr::Ipv4Net::RESERVED_LOOPBACK;

/// This machine's host name, lowercased, as the kubelet names its node.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_lowercase())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Parse, complete, validate and run.
pub async fn run(options: ServeOptions) -> anyhow::Result<()> {
    let options = options.complete().validate()?;
    Server::start(options).await?.serve_until_signal().await
}

/// A running server: HTTP bound, storage opening or open.
pub(crate) struct Server {
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    storage: tokio::task::JoinHandle<anyhow::Result<Opened>>,
    stop: watch::Sender<bool>,
    data_dir: PathBuf,
    /// Where clients reach it (the bound address; 127.0.0.1 for an unspecified one).
    pub(crate) advertise: SocketAddr,
    /// The admin kubeconfig `start` wrote.
    pub(crate) kubeconfig: PathBuf,
    registry: Arc<std::sync::OnceLock<Arc<Registry>>>,
}

/// What the start-up task hands over: the store, and the election tasks (the controller
/// manager's, the scheduler's), which release their Leases on shutdown and must finish
/// before the store closes.
pub(crate) struct Opened {
    store: Arc<dyn Store>,
    elections: Vec<tokio::task::JoinHandle<()>>,
}

/// Take part in the election for the Lease `kube-system/<name>` (or, with election off,
/// lead at once until the stop): `leading` says when this server leads.
fn elect(
    client: &Arc<crate::client::RegistryClient>,
    name: &str,
    identity: &str,
    election: &ElectionTimings,
    leading: watch::Sender<bool>,
    idle: watch::Receiver<bool>,
    stopped: &watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    if !election.enabled {
        tracing::info!(lease = name, "leader election is off (--leader-elect=false): leading at once");
        leading.send_replace(true);
        // Held until the server stops, so the followers' view of it stays open.
        let mut stopping = stopped.clone();
        return tokio::spawn(async move {
            let _ = stopping.wait_for(|s| *s).await;
            drop(leading);
        });
    }
    let mut lease = crate::machinery::leader::ElectionConfig::new("kube-system", name, identity);
    lease.lease_duration = election.lease_duration;
    lease.renew_deadline = election.renew_deadline;
    lease.retry_period = election.retry_period;
    tokio::spawn(crate::machinery::leader::run(client.clone(), lease, leading, idle, stopped.clone()))
}

/// What `serve` writes the admin kubeconfig as, in the data dir.
pub const KUBECONFIG_FILE: &str = "kubeconfig";
/// Where `serve` writes a join token for nodes (`wasmkube node --token "$(cat ...)"`), as
/// k3s' `node-token`.
pub const NODE_TOKEN_FILE: &str = "node-token";

/// The join token file and the CA its hash is of.
struct JoinTokenFile {
    path: PathBuf,
    ca_pem: String,
}

/// Make sure the data dir's join token is valid here: reuse the one written before while its
/// Secret exists; otherwise make a new bootstrap token (no expiry, as k3s' node token) and
/// write it in K10 form.
async fn ensure_join_token(
    client: Arc<dyn crate::client::Client>,
    file: JoinTokenFile,
) -> Result<(), crate::registry::Error> {
    use crate::auth::bootstrap::{BootstrapToken, JoinToken, NAMESPACE};
    let secrets = client
        .resource("", "v1", "secrets")
        .ok_or_else(|| crate::registry::Error::Internal("secrets are not served".into()))?;
    let written = std::fs::read_to_string(&file.path).ok().and_then(|t| JoinToken::parse(&t).ok());
    if let Some(join) = written {
        if client.get(&secrets, Some(NAMESPACE), &join.token.secret_name()).await.is_ok() {
            return Ok(());
        }
    }
    let token = BootstrapToken::generate();
    let secret = token.secret("the join token wasmkube serve wrote to its data dir", None);
    client.create(&secrets, Some(NAMESPACE), secret, &crate::registry::WriteOptions::default()).await?;
    let text = format!("{}\n", JoinToken::format(&file.ca_pem, &token));
    crate::api::tls::write_whole(&file.path, &text, 0o600)
        .map_err(|e| crate::registry::Error::Internal(format!("cannot write the join token: {e}")))?;
    tracing::info!(path = %file.path.display(), "wrote a join token for nodes");
    Ok(())
}

impl Server {
    /// Bind, write certificates and the kubeconfig, and start opening storage; ready once
    /// [`Server::ready`] returns. A listen port of 0 picks a free one.
    pub(crate) async fn start(options: ValidServeOptions) -> anyhow::Result<Self> {
        let registry = prometheus::Registry::new();
        let storage_metrics = StorageMetrics::new(&registry).context("registering storage metrics")?;
        let plugin_metrics = crate::plugins::PluginMetrics::new(&registry).context("registering plugin metrics")?;
        let controller_metrics =
            crate::controllers::manager::ControllerMetrics::new(&registry).context("registering controller metrics")?;
        let scheduler_metrics =
            crate::scheduler::SchedulerMetrics::new(&registry).context("registering scheduler metrics")?;
        let runtime_config = crate::plugins::RuntimeConfig::default();
        let runtime = crate::plugins::Runtime::new(runtime_config.clone()).context("starting the plugin runtime")?;
        // New modules serve from Winch while Cranelift compiles them; without it they wait.
        let baseline = crate::plugins::Runtime::new(runtime_config.baseline())
            .inspect_err(|e| tracing::warn!(error = %e, "no baseline compiler: new plugins wait for Cranelift"))
            .ok();
        let health = Health::default();
        health.set("storage", Err("not opened yet".into()));
        health.set("registry", Err("waiting for storage".into()));
        crate::datadir::claim(&options.data_dir, false)?;
        let tls = TlsFiles::ensure(&options.data_dir, options.listen)?;
        let tcp = tokio::net::TcpListener::bind(options.listen)
            .await
            .with_context(|| format!("cannot listen on {}", options.listen))?;
        let bound = tcp.local_addr().context("reading the bound address")?;
        let listener = TlsListener::new(
            tcp,
            tls.server_config()?,
            options.write_timeout,
            api::write_timeouts(&registry).context("registering connection metrics")?,
        )?;
        let kubeconfig = options.data_dir.join(KUBECONFIG_FILE);
        let host = if bound.ip().is_unspecified() { "127.0.0.1".parse()? } else { bound.ip() };
        let advertise = SocketAddr::new(host, bound.port());
        tls.write_kubeconfig(&kubeconfig, &format!("https://{advertise}"))?;
        let (stop, stopped) = watch::channel(false);
        let api_registry = Arc::new(std::sync::OnceLock::new());
        let requests = api::request_metrics(&registry).context("registering API metrics")?;
        let controller_health = Health::default();
        let images = crate::oci::BlobStore::new(&options.data_dir);
        let kubelets = crate::api::kubelet::Kubelets::default();
        let app = api::router(AppState {
            health: health.clone(),
            controller_health: controller_health.clone(),
            metrics: registry,
            requests,
            registry: api_registry.clone(),
            openapi: Default::default(),
            tokens: Default::default(),
            api_audiences: options.api_audiences.clone().into(),
            images: images.clone(),
            kubelets: kubelets.clone(),
            cluster_ca: tls.ca_pem()?.into(),
        });
        let http = {
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                axum::serve(listener, app.into_make_service_with_connect_info::<api::Peer>())
                    .with_graceful_shutdown(async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await
            })
        };
        tracing::info!(listen = %bound, kubeconfig = %kubeconfig.display(), "serving");
        let ready = api_registry.clone();
        let (plugin_dir, default_plugins) = (options.plugin_dir.clone(), options.default_plugins);
        let (selection, election) = (options.controllers.clone(), options.election.clone());
        let sim_nodes = options.sim_nodes.clone();
        let node_ipam = options.node_ipam.clone();
        let csr_signer = crate::controllers::csr::CsrSigner {
            ca_cert_pem: tls.ca_pem()?,
            ca_key_pem: tls.ca_key_pem()?,
            duration: std::time::Duration::from_secs(365 * 24 * 3600),
        };
        let join_token = JoinTokenFile { path: options.data_dir.join(NODE_TOKEN_FILE), ca_pem: tls.ca_pem()? };
        let node_agent = options.node_agent.clone().map(|mut agent| {
            agent.local_registries = vec![advertise.to_string(), format!("localhost:{}", advertise.port())];
            agent
        });
        let scheduler_config = options.scheduler.clone();
        let storage = tokio::spawn(async move {
            let store = open_storage(options.storage, storage_metrics.clone(), health.clone(), stopped.clone()).await?;
            let registry = Arc::new(Registry::new(store.clone(), storage_metrics));
            let plugins = crate::plugins::PluginSet::tiered(runtime, baseline, plugin_metrics);
            // The one in-process client: the components' API and plugins' lookups.
            let client = crate::client::RegistryClient::new(&registry);
            plugins.set_client(client.clone());
            let informers = crate::machinery::informer::Informers::new(client.clone(), stopped.clone());
            plugins.set_controller_client(crate::machinery::informer::InformerClient::new(
                informers.clone(),
                client.clone(),
            ));
            registry.set_admission(Arc::new(crate::admission::Chain::new(plugins.clone())));
            if default_plugins {
                let defaults = crate::plugins::builtin::defaults();
                if defaults.is_empty() {
                    tracing::warn!("this binary was built without its default plugins (run scripts/build-plugins, then build again)");
                }
                tracing::info!(plugins = defaults.len(), "loading the default plugins");
                // A load never takes this long; if one does, say which step hung.
                tokio::time::timeout(Duration::from_secs(120), plugins.load_builtins(&defaults))
                    .await
                    .map_err(|_| anyhow::anyhow!("loading the default plugins took more than 120 s"))?
                    .context("loading the default plugins")?;
            }
            step("seeding what a fresh cluster holds", STEP_DEADLINE, registry.seed(Some(advertise))).await?;
            step(
                "serving the custom resources of existing CRDs",
                STEP_DEADLINE,
                crate::controllers::crd::start(registry.clone(), stopped.clone()),
            )
            .await?;
            step(
                "loading the Plugin objects",
                FOLDER_DEADLINE,
                crate::controllers::plugins::start(
                    registry.clone(),
                    plugins.clone(),
                    advertise.to_string(),
                    stopped.clone(),
                ),
            )
            .await?;
            if let Some(dir) = plugin_dir {
                step("following the plugin folder", FOLDER_DEADLINE, plugins.clone().follow_dir(dir, stopped.clone()))
                    .await?;
            }
            let identity = crate::machinery::leader::identity();
            let (leading, lead) = watch::channel(false);
            let (idle, idle_now) = watch::channel(true);
            if let Some(sim) = sim_nodes {
                step(
                    "registering the simulated nodes",
                    STEP_DEADLINE,
                    crate::node::sim::run(client.clone(), informers.clone(), sim, stopped.clone()),
                )
                .await?;
            }
            if let Some(agent) = node_agent {
                step(
                    "registering this server's node",
                    STEP_DEADLINE,
                    crate::node::agent::run(
                        client.clone(),
                        informers.clone(),
                        images,
                        kubelets,
                        agent,
                        stopped.clone(),
                    ),
                )
                .await?;
            }
            tokio::spawn(crate::controllers::csr::run(
                client.clone(),
                informers.clone(),
                csr_signer,
                lead.clone(),
                stopped.clone(),
            ));
            step("writing a node join token", STEP_DEADLINE, ensure_join_token(client.clone(), join_token)).await?;
            if let Some(ipam) = node_ipam {
                tokio::spawn(crate::controllers::node_ipam::run(
                    client.clone(),
                    informers.clone(),
                    ipam,
                    lead.clone(),
                    stopped.clone(),
                ));
            }
            let controller_host = Arc::new(crate::controllers::manager::ControllerHost {
                client: client.clone(),
                plugins: plugins.clone(),
                informers: informers.clone(),
                selection,
                identity: identity.clone(),
                metrics: controller_metrics,
                health: controller_health,
                idle,
            });
            tokio::spawn(controller_host.run(lead, stopped.clone()));
            let mut elections =
                vec![elect(&client, "wasmkube-controller-manager", &identity, &election, leading, idle_now, &stopped)];
            if let Some(config) = scheduler_config {
                let (leading, lead) = watch::channel(false);
                let (idle, idle_now) = watch::channel(true);
                let scheduler = Arc::new(crate::scheduler::Scheduler {
                    client: client.clone(),
                    informers,
                    plugins: plugins.clone(),
                    config,
                    metrics: scheduler_metrics,
                    identity: identity.clone(),
                    idle,
                });
                tokio::spawn(scheduler.run(lead, stopped.clone()));
                elections.push(elect(&client, "wasmkube-scheduler", &identity, &election, leading, idle_now, &stopped));
            }
            let _ = api_registry.set(registry);
            health.set("registry", Ok(()));
            tracing::info!(%identity, "ready");
            Ok(Opened { store, elections })
        });
        Ok(Self { http, storage, stop, data_dir: options.data_dir, advertise, kubeconfig, registry: ready })
    }

    /// Wait until the API serves resources (storage open, the cluster seeded); an error
    /// if storage cannot be opened.
    pub(crate) async fn ready(&mut self) -> anyhow::Result<()> {
        while self.registry.get().is_none() {
            if self.storage.is_finished() {
                return match (&mut self.storage).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(anyhow::anyhow!("storage task failed: {e}")),
                };
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// The registry, once storage is open.
    pub(crate) fn registry(&self) -> Option<Arc<Registry>> {
        self.registry.get().cloned()
    }

    /// Stop serving, drain HTTP and close storage.
    pub(crate) async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let store = match (&mut self.storage).await {
            Ok(Ok(store)) => Some(store),
            _ => None,
        };
        self.finish(store).await
    }

    async fn finish(self, opened: Option<Opened>) -> anyhow::Result<()> {
        // The leader releases its Lease while the store is still open.
        let store = match opened {
            Some(Opened { store, elections }) => {
                let all = futures::future::join_all(elections);
                if tokio::time::timeout(Duration::from_secs(5), all).await.is_err() {
                    tracing::warn!("leader election did not finish within 5 s of the stop");
                }
                Some(store)
            }
            None => None,
        };
        // Requests under way get a grace period; long-lived ones (watches) are cut after it,
        // as kube-apiserver ends its watches on shutdown (a `kubectl get -w` must not keep
        // the server up).
        let mut http = self.http;
        let drained = match tokio::time::timeout(SHUTDOWN_GRACE, &mut http).await {
            Ok(drained) => drained,
            Err(_) => {
                tracing::info!(grace = ?SHUTDOWN_GRACE, "closing the connections still open (watches) after the grace period");
                http.abort();
                Ok(Ok(()))
            }
        };
        match drained {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "HTTP task failed"),
        }
        if let Some(store) = store {
            store.close().await.context("flushing storage")?;
        }
        tracing::info!(data_dir = %self.data_dir.display(), "stopped cleanly");
        Ok(())
    }

    async fn serve_until_signal(mut self) -> anyhow::Result<()> {
        let outcome = tokio::select! {
            signal = shutdown_signal() => { tracing::info!(signal, "shutting down"); Ok(None) }
            opened = &mut self.storage => match opened {
                Ok(Ok(store)) => {
                    let signal = shutdown_signal().await;
                    tracing::info!(signal, "shutting down");
                    Ok(Some(store))
                }
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("storage task failed: {e}")),
            },
        };
        let _ = self.stop.send(true);
        let store = match outcome {
            Ok(Some(store)) => Some(store),
            Ok(None) => match (&mut self.storage).await {
                Ok(Ok(store)) => Some(store),
                _ => None,
            },
            Err(e) => {
                // Say why at once: a graceful drain waits for clients' keep-alive
                // connections, which may never close on their own.
                tracing::error!(error = %format!("{e:#}"), "the server cannot start serving; stopping");
                let _ = tokio::time::timeout(Duration::from_secs(5), self.http).await;
                return Err(e);
            }
        };
        self.finish(store).await
    }
}

/// Wait for SIGINT or SIGTERM; returns which.
pub(crate) async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// Open storage, retrying with backoff while it is unreachable; `/readyz` says why until
/// it answers. A data dir that cannot be used is fatal. Returns `Closed` if asked to stop
/// first.
/// One start-up step after storage opened: logged when done, and bounded, so a step that
/// hangs stops the server with its name instead of leaving it unready without a word.
async fn step<T, E>(
    name: &str,
    deadline: Duration,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let started = std::time::Instant::now();
    match tokio::time::timeout(deadline, work).await {
        Ok(Ok(value)) => {
            tracing::info!(step = name, elapsed = ?started.elapsed(), "start-up step done");
            Ok(value)
        }
        Ok(Err(e)) => Err(anyhow::Error::new(e).context(name.to_string())),
        Err(_) => Err(anyhow::anyhow!("{name}: not done after {} s", deadline.as_secs())),
    }
}

/// How long requests under way may take to finish once the server is told to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long one start-up step may take (none takes more than a second on a healthy store).
const STEP_DEADLINE: Duration = Duration::from_secs(60);
/// Compiling plugin modules (a folder's, the Plugin objects') may take minutes (a Python
/// component in a debug build).
const FOLDER_DEADLINE: Duration = Duration::from_secs(600);

async fn open_storage(
    config: StorageConfig,
    metrics: StorageMetrics,
    health: Health,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<Arc<dyn Store>> {
    let mut backoff = Duration::from_millis(200);
    let mut store: Option<Arc<dyn Store>> = None;
    loop {
        if store.is_none() {
            store = match open_backend(&config, metrics.clone()).await {
                Ok(store) => Some(store),
                Err(e @ (StoreError::DataDir { .. } | StoreError::DataDirInUse(_) | StoreError::InvalidRequest(_))) => {
                    health.set("storage", Err(e.to_string()));
                    return Err(e).context("cannot open storage");
                }
                Err(e) => {
                    health.set("storage", Err(e.to_string()));
                    tracing::warn!(error = %e, retry_in = ?backoff, "storage not reachable yet");
                    None
                }
            };
        }
        if let Some(open) = &store {
            match open.current_revision().await {
                Ok(revision) => {
                    health.set("storage", Ok(()));
                    tracing::info!(backend = open.backend(), revision, "storage ready");
                    tokio::spawn(monitor_storage(open.clone(), health.clone(), stopped.clone()));
                    return Ok(open.clone());
                }
                Err(e) => {
                    health.set("storage", Err(format!("{} backend: {e}", open.backend())));
                    tracing::warn!(error = %e, retry_in = ?backoff, "storage not reachable yet");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped.wait_for(|s| *s) => return Err(StoreError::Closed).context("stopped before storage was ready"),
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn open_backend(config: &StorageConfig, metrics: StorageMetrics) -> storage::Result<Arc<dyn Store>> {
    match config {
        StorageConfig::Embedded { data_dir } => {
            let store = Arc::new(EmbeddedStore::open(data_dir, metrics).await?);
            super::store::serve_admin_socket(store.clone());
            Ok(store)
        }
        StorageConfig::Etcd { .. } => storage::open(config, metrics).await,
    }
}

/// Keep `/readyz` honest after start: ask storage for its revision every few seconds.
async fn monitor_storage(store: Arc<dyn Store>, health: Health, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let state = store.current_revision().await.map(|_| ()).map_err(|e| format!("{} backend: {e}", store.backend()));
        health.set("storage", state);
    }
}
