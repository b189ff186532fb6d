//! One pod on this node: its containers' lives and the status the kubelet writes.
//!
//! The pod worker makes the pod's volumes (`volumes.rs`), then runs its init containers one
//! after another (a native sidecar — an init container with `restartPolicy: Always` — is
//! started and left running), then its containers together. A container task pulls the
//! image, compiles it (cached), makes its environment (`env.rs`), runs it — a command to its
//! exit, an HTTP server until the pod stops — probes it (`probe.rs`) and restarts it as its
//! policy says, with CrashLoopBackOff between runs (doubling from the initial delay to the
//! maximum, reset after a run twice the maximum long). Each change of a container's state
//! reaches the pod worker, which computes the pod's phase and conditions as the kubelet does
//! and writes the status subresource. It never writes anything but the status of its own pod.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::context::{Agent, PodMeta, Running};
use super::logs::{ContainerLog, Stream};
use super::runtime::{Exit, GuestSpec, Pipes};
use crate::registry::{Patch, Subresource, WriteOptions};

/// A container's state, as its status shows it.
#[derive(Clone, Debug)]
enum State {
    Waiting { reason: String, message: Option<String> },
    Running { started_at: String },
    Terminated { exit_code: i32, reason: String, message: Option<String>, started_at: String, finished_at: String },
}

impl State {
    fn to_json(&self) -> Value {
        match self {
            State::Waiting { reason, message } => {
                let mut waiting = json!({"reason": reason});
                if let Some(message) = message {
                    waiting["message"] = json!(message);
                }
                json!({"waiting": waiting})
            }
            State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
            State::Terminated { exit_code, reason, message, started_at, finished_at } => {
                let mut terminated = json!({"exitCode": exit_code, "reason": reason, "startedAt": started_at, "finishedAt": finished_at});
                if let Some(message) = message {
                    terminated["message"] = json!(message);
                }
                json!({"terminated": terminated})
            }
        }
    }
}

/// One container's status.
#[derive(Clone, Debug)]
struct ContainerStatus {
    name: String,
    image: String,
    image_id: String,
    container_id: String,
    state: State,
    last_state: Option<State>,
    ready: bool,
    started: bool,
    restart_count: u32,
    /// True once it will never run again (policy says so).
    done: bool,
    role: Role,
}

/// What kind of container it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Runs to completion before the next one starts.
    Init,
    /// An init container with `restartPolicy: Always`: started, then runs beside the rest.
    Sidecar,
    App,
}

impl ContainerStatus {
    fn succeeded(&self) -> bool {
        self.done && matches!(self.state, State::Terminated { exit_code: 0, .. })
    }

    fn failed_for_good(&self) -> bool {
        self.done && !self.succeeded()
    }
}

impl ContainerStatus {
    fn to_json(&self) -> Value {
        let mut status = json!({
            "name": self.name, "image": self.image, "imageID": self.image_id,
            "state": self.state.to_json(),
            "lastState": self.last_state.as_ref().map_or(json!({}), State::to_json),
            "ready": self.ready, "started": self.started, "restartCount": self.restart_count,
        });
        if !self.container_id.is_empty() {
            status["containerID"] = json!(self.container_id);
        }
        status
    }
}

/// The statuses a pod's containers start with: `previous` is what the status held (a node
/// agent that restarts finds its containers gone: each starts again, counted as a restart,
/// its last run Unknown (exit 255), as after a node reboot).
fn initial_status(container: &Value, previous: &[Value], role: Role, waiting: &str) -> ContainerStatus {
    let name = container["name"].as_str().unwrap_or_default().to_string();
    let before = previous.iter().find(|s| s["name"] == json!(name));
    let was_running = before.is_some_and(|s| s.pointer("/state/running").is_some());
    let restart_count = before.and_then(|s| s["restartCount"].as_u64()).unwrap_or(0) as u32 + u32::from(was_running);
    let last_state = was_running.then(|| State::Terminated {
        exit_code: 255,
        reason: "Unknown".into(),
        message: Some("the node agent restarted".into()),
        started_at: before
            .and_then(|s| s.pointer("/state/running/startedAt"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .into(),
        finished_at: crate::registry::now(),
    });
    ContainerStatus {
        name,
        image: container["image"].as_str().unwrap_or_default().to_string(),
        image_id: String::new(),
        container_id: String::new(),
        state: State::Waiting { reason: waiting.into(), message: None },
        last_state,
        ready: false,
        started: false,
        restart_count,
        done: false,
        role,
    }
}

/// Run the pod until it is done or `stop`.
/// `terminate` carries the deadline of a graceful deletion: containers are stopped (an HTTP
/// server at once, a command at its end or the deadline), then the pod object is removed.
pub(super) async fn run(
    agent: Arc<Agent>,
    meta: Arc<PodMeta>,
    stop: watch::Receiver<bool>,
    terminate: watch::Receiver<Option<Instant>>,
) {
    let mut terminate = terminate;
    let pod = &meta.pod;
    let list = |path: &str| pod.pointer(path).and_then(Value::as_array).cloned().unwrap_or_default();
    let (inits, apps) = (list("/spec/initContainers"), list("/spec/containers"));
    let (previous_inits, previous) = (list("/status/initContainerStatuses"), list("/status/containerStatuses"));
    let mut specs: Vec<Value> = Vec::new();
    let mut statuses: Vec<ContainerStatus> = Vec::new();
    for init in &inits {
        let role = if init["restartPolicy"].as_str() == Some("Always") { Role::Sidecar } else { Role::Init };
        statuses.push(initial_status(init, &previous_inits, role, "PodInitializing"));
        specs.push(init.clone());
    }
    let waiting = if inits.is_empty() { "ContainerCreating" } else { "PodInitializing" };
    for app in &apps {
        statuses.push(initial_status(app, &previous, Role::App, waiting));
        specs.push(app.clone());
    }
    let mut stop = stop;
    write_status(&agent, &meta, &statuses).await;

    // The volumes first: until they can be made, the pod waits in ContainerCreating.
    let volumes = loop {
        let prepared = super::volumes::prepare(
            agent.client.as_ref(),
            pod,
            &meta.dir,
            &meta.ip.to_string(),
            &meta.host_ip.to_string(),
        )
        .await;
        match prepared {
            Ok(volumes) => break Arc::new(volumes),
            Err(e) => {
                let first = statuses.iter().position(|s| s.role != Role::Sidecar).unwrap_or(0);
                if let Some(status) = statuses.get_mut(first) {
                    status.state = State::Waiting { reason: "ContainerCreating".into(), message: Some(e.0.clone()) };
                }
                tracing::info!(pod = %meta.name, namespace = %meta.namespace, error = %e.0, "FailedMount");
                let about =
                    crate::machinery::events::About { namespace: &meta.namespace, name: &meta.name, uid: &meta.uid };
                agent.events.pod_event(&about, true, "FailedMount", &e.0, "FailedMount");
                if !write_status(&agent, &meta, &statuses).await {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(agent.config.backoff.initial.min(Duration::from_secs(2))) => {},
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    };

    let (report, mut reports) = mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    let (task_stop, task_terminate) = (stop.clone(), terminate.clone());
    let spawn = |index: usize, statuses: &[ContainerStatus], tasks: &mut tokio::task::JoinSet<()>| {
        let task = ContainerTask {
            agent: agent.clone(),
            meta: meta.clone(),
            spec: specs[index].clone(),
            index,
            status: statuses[index].clone(),
            volumes: volumes.clone(),
            report: report.clone(),
            stop: task_stop.clone(),
            terminate: task_terminate.clone(),
        };
        tasks.spawn(task.run());
    };
    // Init containers one at a time: the next starts when this one succeeded (or, a
    // sidecar, started); then every app container. Dropping `tasks` (a stop) aborts them.
    let mut next = 0;
    let mut started_apps = false;
    let mut terminating = terminate.borrow().is_some();
    loop {
        while !started_apps && !terminating {
            if next < inits.len() {
                let ahead = next.checked_sub(1).map(|i| &statuses[i]);
                let may_start = match ahead {
                    None => true,
                    Some(s) if s.role == Role::Sidecar => s.started,
                    Some(s) => s.succeeded(),
                };
                if !may_start {
                    break;
                }
                spawn(next, &statuses, &mut tasks);
                next += 1;
            } else {
                let last_ready = next.checked_sub(1).map(|i| &statuses[i]).is_none_or(|s| {
                    if s.role == Role::Sidecar {
                        s.started
                    } else {
                        s.succeeded()
                    }
                });
                if !last_ready {
                    break;
                }
                for index in inits.len()..specs.len() {
                    spawn(index, &statuses, &mut tasks);
                }
                started_apps = true;
            }
        }
        if terminating && tasks.is_empty() {
            break;
        }
        let mut received = Vec::new();
        tokio::select! {
            report = reports.recv() => received.extend(report),
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {},
            _ = stop.wait_for(|s| *s) => return,
            _ = terminate.wait_for(Option::is_some), if !terminating => terminating = true,
        }
        while let Ok(report) = reports.try_recv() {
            received.push(report);
        }
        if received.is_empty() {
            continue;
        }
        for (index, status) in received {
            statuses[index] = status;
        }
        if !write_status(&agent, &meta, &statuses).await {
            return;
        }
        // Every app container done for good (or an init container failed for good): the
        // sidecars stop and the pod is over.
        let phase = phase(&meta.restart_policy, &statuses);
        if matches!(phase, "Succeeded" | "Failed") && !terminating {
            return;
        }
    }
    // Deleted gracefully: every container has stopped; the pod object goes now.
    let Some(pods) = agent.client.resource("", "v1", "pods") else { return };
    let options = crate::registry::DeleteOptions {
        uid: Some(meta.uid.clone()),
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    match agent.client.delete(&pods, Some(&meta.namespace), &meta.name, &options).await {
        Ok(_) | Err(crate::registry::Error::NotFound { .. }) => {}
        Err(e) => {
            tracing::warn!(pod = %meta.name, namespace = %meta.namespace, error = %e, "cannot remove the stopped pod")
        }
    }
}

/// Write the pod's status; false if the pod is gone.
async fn write_status(agent: &Agent, meta: &PodMeta, containers: &[ContainerStatus]) -> bool {
    let status = pod_status(meta, containers);
    let Some(pods) = agent.client.resource("", "v1", "pods") else { return false };
    let options = WriteOptions { field_manager: Some(super::context::MANAGER.into()), ..WriteOptions::default() };
    match agent
        .client
        .patch(
            &pods,
            Some(&meta.namespace),
            &meta.name,
            Patch::Merge(json!({"status": status})),
            Some(Subresource::Status),
            &options,
        )
        .await
    {
        Ok(_) => true,
        Err(crate::registry::Error::NotFound { .. }) => false,
        Err(e) => {
            tracing::warn!(pod = %meta.name, namespace = %meta.namespace, error = %e, "cannot write the pod's status");
            true
        }
    }
}

/// The phase the kubelet gives a pod with these containers.
fn phase(restart_policy: &str, containers: &[ContainerStatus]) -> &'static str {
    if containers.iter().any(|c| c.role == Role::Init && c.failed_for_good()) {
        return "Failed";
    }
    let initialized = containers.iter().all(|c| match c.role {
        Role::Init => c.succeeded(),
        Role::Sidecar => c.started || c.restart_count > 0,
        Role::App => true,
    });
    if !initialized {
        return "Pending";
    }
    let apps: Vec<&ContainerStatus> = containers.iter().filter(|c| c.role == Role::App).collect();
    if apps.iter().any(|c| matches!(c.state, State::Running { .. })) {
        return "Running";
    }
    if !apps.is_empty() && apps.iter().all(|c| c.done) {
        return if apps.iter().any(|c| c.failed_for_good()) { "Failed" } else { "Succeeded" };
    }
    // Restarting after a run (in back-off): still Running, as the kubelet reports it.
    if restart_policy != "Never" && apps.iter().any(|c| c.restart_count > 0 || c.last_state.is_some()) {
        return "Running";
    }
    if apps.iter().any(|c| matches!(c.state, State::Terminated { .. })) {
        return "Running";
    }
    "Pending"
}

fn pod_status(meta: &PodMeta, containers: &[ContainerStatus]) -> Value {
    let phase = phase(&meta.restart_policy, containers);
    let now = crate::registry::now();
    let initialized = containers.iter().all(|c| match c.role {
        Role::Init => c.succeeded(),
        Role::Sidecar => c.started,
        Role::App => true,
    });
    let ready =
        phase == "Running" && initialized && containers.iter().filter(|c| c.role != Role::Init).all(|c| c.ready);
    let condition = |kind: &str, status: bool, reason: Option<&str>| {
        let mut c = json!({"type": kind, "status": if status { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": now});
        if let Some(reason) = reason {
            c["reason"] = json!(reason);
        }
        c
    };
    let completed = matches!(phase, "Succeeded" | "Failed");
    let not_ready = if completed { "PodCompleted" } else { "ContainersNotReady" };
    let not_initialized = if completed { "PodCompleted" } else { "ContainersNotInitialized" };
    let ip = meta.ip.to_string();
    let of = |role: fn(Role) -> bool| {
        containers.iter().filter(|c| role(c.role)).map(ContainerStatus::to_json).collect::<Vec<_>>()
    };
    let mut status = json!({
        "phase": phase,
        "conditions": [
            condition("PodReadyToStartContainers", true, None),
            condition("Initialized", initialized, (!initialized).then_some(not_initialized)),
            condition("Ready", ready, (!ready).then_some(not_ready)),
            condition("ContainersReady", ready, (!ready).then_some(not_ready)),
            condition("PodScheduled", true, None),
        ],
        "hostIP": meta.host_ip.to_string(),
        "hostIPs": [{"ip": meta.host_ip.to_string()}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": meta.start_time,
        "qosClass": meta.qos_class,
        "containerStatuses": of(|r| r == Role::App),
    });
    let inits = of(|r| r != Role::App);
    if !inits.is_empty() {
        status["initContainerStatuses"] = json!(inits);
    }
    status
}

/// One container's life.
struct ContainerTask {
    agent: Arc<Agent>,
    meta: Arc<PodMeta>,
    spec: Value,
    index: usize,
    status: ContainerStatus,
    volumes: Arc<std::collections::HashMap<String, std::path::PathBuf>>,
    report: mpsc::UnboundedSender<(usize, ContainerStatus)>,
    stop: watch::Receiver<bool>,
    /// The deadline of a graceful deletion, once there is one.
    terminate: watch::Receiver<Option<Instant>>,
}

impl ContainerTask {
    fn send(&self) {
        let _ = self.report.send((self.index, self.status.clone()));
    }

    /// An event about the pod, as the kubelet reports it.
    fn event(&self, warning: bool, reason: &str, message: &str) {
        let about = crate::machinery::events::About {
            namespace: &self.meta.namespace,
            name: &self.meta.name,
            uid: &self.meta.uid,
        };
        self.agent.events.pod_event(&about, warning, reason, message, reason);
    }

    fn waiting(&mut self, reason: &str, message: Option<String>) {
        self.status.state = State::Waiting { reason: reason.into(), message };
        self.status.ready = false;
        self.status.started = false;
        self.agent.set_waiting(&self.meta.uid, &self.status.name, reason);
        self.send();
    }

    /// Sleep `delay`; false if the pod stopped meanwhile.
    async fn pause(&mut self, delay: Duration) -> bool {
        let mut terminate = self.terminate.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = self.stop.wait_for(|s| *s) => false,
            _ = terminate.wait_for(Option::is_some) => false,
        }
    }

    /// The credentials to pull `image` with from another registry: the pod's pull secrets',
    /// then the node's (none for the cluster's own registry).
    async fn credentials(&self, image: &str) -> super::images::Credentials {
        let Some(registry) = crate::oci::Reference::parse(image)
            .ok()
            .and_then(|r| r.registry)
            .filter(|r| !self.agent.images.local_names.contains(r))
        else {
            return Vec::new();
        };
        let (mut credentials, missing) =
            super::images::pull_secret_credentials(self.agent.client.as_ref(), &self.meta.pod, &registry).await;
        if !missing.is_empty() {
            self.event(
                true,
                "FailedToRetrieveImagePullSecret",
                &format!(
                    "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                    missing.join(", ")
                ),
            );
        }
        credentials.extend(self.agent.images.remote.node_credentials(&registry));
        credentials
    }

    async fn run(mut self) {
        let backoff = self.agent.config.backoff.clone();
        let mut delay = backoff.initial;
        let image = self.status.image.clone();
        let policy = self.spec["imagePullPolicy"].as_str().unwrap_or("IfNotPresent").to_string();
        loop {
            // Pull and compile.
            let runtime = self.agent.runtime.clone();
            let began = Instant::now();
            let credentials = self.credentials(&image).await;
            let pulled =
                self.agent.images.pull(&image, &policy, &credentials, |digest| runtime.is_compiled(digest)).await;
            let pulled = match pulled {
                Ok(pulled) => {
                    self.agent.hold_image(&pulled.image_id, &image, pulled.size);
                    if pulled.bytes.is_empty() {
                        self.event(false, "Pulled", &format!("Container image {image:?} already present on machine"));
                    } else {
                        self.event(
                            false,
                            "Pulled",
                            &format!(
                                "Successfully pulled image {image:?} in {:?}. Image size: {} bytes.",
                                began.elapsed(),
                                pulled.bytes.len()
                            ),
                        );
                    }
                    pulled
                }
                Err(failure) => {
                    let retry = failure.reason != "InvalidImageName";
                    self.event(true, "Failed", &failure.message);
                    self.event(true, "Failed", &format!("Error: {}", failure.reason));
                    self.waiting(failure.reason, Some(failure.message.clone()));
                    if !retry {
                        // The kubelet does not retry a name that does not parse.
                        let _ = self.stop.wait_for(|s| *s).await;
                        return;
                    }
                    if !self.pause(delay).await {
                        return;
                    }
                    let reason =
                        if failure.reason == "ErrImageNeverPull" { "ErrImageNeverPull" } else { "ImagePullBackOff" };
                    self.waiting(
                        reason,
                        Some(format!("Back-off pulling image {image:?}: {}: {}", failure.reason, failure.message)),
                    );
                    if !self.pause(delay).await {
                        return;
                    }
                    delay = (delay * 2).min(backoff.max);
                    continue;
                }
            };
            self.status.image_id = pulled.image_id.clone();
            let compiled = match self.agent.runtime.compile(&pulled.layer, pulled.bytes).await {
                Ok(compiled) => compiled,
                Err(e) => {
                    self.event(true, "Failed", &format!("Error: {e}"));
                    self.waiting("CreateContainerError", Some(e.to_string()));
                    if !self.pause(delay).await {
                        return;
                    }
                    delay = (delay * 2).min(backoff.max);
                    continue;
                }
            };
            // The environment and the mounts, made afresh for each run.
            let (ip, host_ip) = (self.meta.ip.to_string(), self.meta.host_ip.to_string());
            let made = super::env::environment(self.agent.client.as_ref(), &self.meta.pod, &self.spec, &ip, &host_ip)
                .await
                .map_err(|e| e.0)
                .and_then(|env| Ok((env, super::volumes::mounts(&self.spec, &self.volumes).map_err(|e| e.0)?)));
            let (env, mounts) = match made {
                Ok(made) => made,
                Err(message) => {
                    self.event(true, "Failed", &format!("Error: {message}"));
                    self.waiting("CreateContainerConfigError", Some(message));
                    if !self.pause(delay).await {
                        return;
                    }
                    delay = (delay * 2).min(backoff.max);
                    continue;
                }
            };
            // Run.
            let attempt = self.status.restart_count;
            let log = match ContainerLog::create(self.meta.dir.join(&self.status.name).join(format!("{attempt}.log"))) {
                Ok(log) => log,
                Err(e) => {
                    self.waiting("CreateContainerError", Some(format!("cannot create the container's log: {e}")));
                    if !self.pause(delay).await {
                        return;
                    }
                    continue;
                }
            };
            self.agent.add_run(&self.meta.uid, &self.status.name, log.clone());
            let spec = self.guest_spec(&log, env, mounts);
            self.status.container_id = format!(
                "wasmtime://{}",
                crate::oci::sha256(format!("{}/{}/{attempt}", self.meta.uid, self.status.name).as_bytes()).0
                    ["sha256:".len()..]
                    .to_string()
            );
            let started_at = crate::registry::now();
            let began = Instant::now();
            // An HTTP server listens before it counts as running.
            let (end_run, run_ended) = watch::channel(false);
            // With `stdin: true` the run reads what attached sessions write.
            let (stdin_guest, stdin) = if self.spec["stdin"].as_bool() == Some(true) {
                let (guest, host) = tokio::io::duplex(64 << 10);
                (Some(guest), Some(Arc::new(tokio::sync::Mutex::new(Some(host)))))
            } else {
                (None, None)
            };
            let mut running: std::pin::Pin<Box<dyn std::future::Future<Output = Exit> + Send>> =
                if let Some(pre) = compiled.http.clone() {
                    match self.listen(pre, spec.clone(), &log, run_ended).await {
                        Ok(()) => Box::pin(std::future::pending()),
                        Err(exit) => Box::pin(std::future::ready(exit)),
                    }
                } else if let Some(pre) = compiled.command.clone() {
                    let (runtime, spec) = (self.agent.runtime.clone(), spec.clone());
                    let pipes = Pipes { stdin: stdin_guest, ..Pipes::default() };
                    Box::pin(async move { runtime.run_command(&pre, &spec, pipes).await })
                } else {
                    Box::pin(std::future::ready(Exit::Trap("the component has no entry point".into())))
                };
            let name = self.status.name.clone();
            self.agent.set_running(
                &self.meta.uid,
                &name,
                Some(Arc::new(Running {
                    pod: self.meta.clone(),
                    name: name.clone(),
                    command: compiled.command.clone(),
                    guest: spec.clone(),
                    log: log.clone(),
                    stdin,
                    stdin_once: self.spec["stdinOnce"].as_bool() == Some(true),
                    started_at: started_at.clone(),
                })),
            );
            self.event(false, "Created", &format!("Created container: {name}"));
            self.event(false, "Started", &format!("Started container {name}"));
            self.status.state = State::Running { started_at: started_at.clone() };
            let has = |probe: &str| self.spec.get(probe).is_some_and(Value::is_object);
            self.status.started = !has("startupProbe");
            self.status.ready = !has("readinessProbe") && !has("startupProbe");
            self.send();
            let ports = self.spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    Some((p["name"].as_str()?.to_string(), u16::try_from(p["containerPort"].as_u64()?).ok()?))
                })
                .collect();
            let mut probes = super::probe::start(
                &self.spec,
                super::probe::ProbeTarget {
                    ip: self.meta.ip,
                    ports,
                    runtime: self.agent.runtime.clone(),
                    command: compiled.command.clone(),
                    guest: spec.clone(),
                },
            );
            let (mut stop, mut terminate) = (self.stop.clone(), self.terminate.clone());
            let mut terminated_by: Option<Instant> = None;
            let mut probing = true;
            let exit = loop {
                let event = tokio::select! {
                    exit = &mut running => break Some(exit),
                    _ = stop.wait_for(|s| *s) => break None,
                    deadline = terminate.wait_for(Option::is_some), if terminated_by.is_none() => {
                        terminated_by = deadline.ok().and_then(|d| *d).or(Some(Instant::now()));
                        None
                    }
                    event = probes.recv(), if probing => {
                        probing = event.is_some();
                        event
                    }
                };
                if let Some(deadline) = terminated_by.filter(|_| event.is_none()) {
                    // The pod is being deleted: not ready any more; an HTTP server stops
                    // now, a command gets until the deadline to end on its own.
                    self.event(false, "Killing", &format!("Stopping container {}", self.status.name));
                    self.status.ready = false;
                    self.send();
                    if compiled.http.is_some() {
                        break Some(Exit::Code(0));
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    break Some(match tokio::time::timeout(left, &mut running).await {
                        Ok(exit) => exit,
                        Err(_) => Exit::Killed("stopped at the end of the pod's grace period".into()),
                    });
                }
                match event {
                    Some(super::probe::ProbeEvent::Started) => {
                        self.status.started = true;
                        if !has("readinessProbe") {
                            self.status.ready = true;
                        }
                        self.send();
                    }
                    Some(super::probe::ProbeEvent::Ready(ready)) => {
                        if self.status.ready != ready {
                            self.status.ready = ready;
                            self.send();
                        }
                    }
                    Some(super::probe::ProbeEvent::Unhealthy(why)) => self.event(true, "Unhealthy", &why),
                    Some(super::probe::ProbeEvent::Failed(why)) => {
                        self.event(true, "Unhealthy", &why);
                        let probe = if why.starts_with("Startup") { "startup" } else { "liveness" };
                        self.event(
                            false,
                            "Killing",
                            &format!("Container {} failed {probe} probe, will be restarted", self.status.name),
                        );
                        tracing::info!(pod = %self.meta.name, container = %self.status.name, reason = "Unhealthy", "{why}; the container will be restarted");
                        log.note(&format!("wasmkube: {why}; the container is restarted"));
                        break Some(Exit::Killed(why));
                    }
                    None => {}
                }
            };
            drop(probes);
            let _ = end_run.send(true);
            drop(running);
            self.agent.set_running(&self.meta.uid, &self.status.name, None);
            log.finish();
            let Some(exit) = exit else { return };
            let (exit_code, reason, message) = match exit {
                Exit::Code(0) => (0, "Completed", None),
                Exit::Code(code) => (code, "Error", None),
                Exit::Trap(why) => {
                    log.note(&format!("wasmkube: the container trapped: {why}"));
                    (128 + 6, "Error", Some(why))
                }
                Exit::OutOfMemory => (137, "OOMKilled", None),
                Exit::Killed(why) => (137, "Error", Some(why)),
            };
            let terminated = State::Terminated {
                exit_code,
                reason: reason.into(),
                message,
                started_at,
                finished_at: crate::registry::now(),
            };
            let policy = match (self.status.role, self.meta.restart_policy.as_str()) {
                (Role::Sidecar, _) => "Always",
                (Role::Init, "Never") => "Never",
                (Role::Init, _) => "OnFailure",
                (Role::App, policy) => policy,
            };
            let restart = match policy {
                _ if self.terminate.borrow().is_some() => false,
                "Never" => false,
                "OnFailure" => exit_code != 0,
                _ => true,
            };
            self.status.ready = false;
            self.status.started = false;
            if !restart {
                self.status.state = terminated;
                self.status.done = true;
                self.send();
                return;
            }
            // A run that lasted twice the maximum back-off resets it.
            if began.elapsed() >= backoff.max * 2 {
                delay = backoff.initial;
            }
            self.status.state = terminated.clone();
            self.send();
            self.status.last_state = Some(terminated);
            self.event(
                true,
                "BackOff",
                &format!(
                    "Back-off restarting failed container {} in pod {}_{}({})",
                    self.status.name, self.meta.name, self.meta.namespace, self.meta.uid
                ),
            );
            self.status.state = State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!(
                    "back-off {} restarting failed container={} pod={}_{}({})",
                    humantime::format_duration(delay),
                    self.status.name,
                    self.meta.name,
                    self.meta.namespace,
                    self.meta.uid
                )),
            };
            self.send();
            if !self.pause(delay).await {
                return;
            }
            delay = (delay * 2).min(backoff.max);
            self.status.restart_count += 1;
        }
    }

    /// Listen on the pod IP at each TCP container port, serving until `ended`; an exit
    /// when a port cannot be bound.
    async fn listen(
        &mut self,
        pre: wasmtime_wasi_http::p2::bindings::ProxyPre<super::runtime::Guest>,
        spec: GuestSpec,
        log: &Arc<ContainerLog>,
        ended: watch::Receiver<bool>,
    ) -> Result<(), Exit> {
        let mut ports: Vec<u16> = self.spec["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["protocol"].as_str().unwrap_or("TCP") == "TCP")
            .filter_map(|p| p["containerPort"].as_u64().and_then(|n| u16::try_from(n).ok()))
            .collect();
        if ports.is_empty() {
            // What `wasmtime serve` listens on by default.
            ports.push(8080);
        }
        for port in ports {
            let address = SocketAddr::from((self.meta.ip, port));
            if let Err(e) = self.agent.runtime.serve_http(pre.clone(), address, spec.clone(), ended.clone()).await {
                let why = format!("cannot listen on {address}: {e}");
                log.note(&format!("wasmkube: {why}"));
                return Err(Exit::Trap(why));
            }
        }
        Ok(())
    }

    fn guest_spec(
        &self,
        log: &Arc<ContainerLog>,
        env: Vec<(String, String)>,
        mounts: Vec<super::volumes::Mount>,
    ) -> GuestSpec {
        let strings = |key: &str| -> Vec<String> {
            self.spec[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(|s| super::env::expand(s, &env)))
                .collect()
        };
        let command = strings("command");
        let mut args = if command.is_empty() { vec![self.status.name.clone()] } else { command };
        args.extend(strings("args"));
        // What container runtimes set: the pod's name as HOSTNAME (the spec's own env wins).
        let mut all = vec![("HOSTNAME".to_string(), self.meta.name.clone())];
        all.retain(|(name, _)| !env.iter().any(|(n, _)| n == name));
        all.extend(env);
        if let Some(dir) = self.spec["workingDir"].as_str().filter(|d| !d.is_empty()) {
            all.push(("PWD".to_string(), dir.to_string()));
        }
        let limit =
            |resource: &str| self.spec.pointer(&format!("/resources/limits/{resource}")).and_then(Value::as_str);
        GuestSpec {
            args,
            env: all,
            memory_limit: limit("memory").and_then(crate::quantity::whole),
            mounts,
            stdout: log.sink(Stream::Stdout),
            stderr: log.sink(Stream::Stderr),
            usage: super::usage::Usage::new(limit("cpu").and_then(crate::quantity::milli)),
        }
    }
}
