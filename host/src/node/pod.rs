//! One pod on this node: its containers' lives and the status the kubelet writes.
//!
//! A container task pulls the image, compiles it (cached), runs it — a command to its exit,
//! an HTTP server until the pod stops — and restarts it as `restartPolicy` says, with
//! CrashLoopBackOff between runs (doubling from the initial delay to the maximum, reset after
//! a run twice the maximum long). Each change of a container's state reaches the pod worker,
//! which computes the pod's phase and conditions as the kubelet does and writes the status
//! subresource. It never writes anything but the status of its own pod.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::context::Agent;
use super::logs::{ContainerLog, Stream};
use super::runtime::{Exit, GuestSpec};
use crate::registry::{Patch, Subresource, WriteOptions};

/// What a pod worker knows of its pod.
pub(super) struct PodMeta {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub ip: Ipv4Addr,
    pub host_ip: Ipv4Addr,
    pub restart_policy: String,
    pub start_time: String,
    pub dir: std::path::PathBuf,
    pub qos_class: &'static str,
}

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

/// Run the pod until it is done or `stop`.
pub(super) async fn run(agent: Arc<Agent>, pod: Value, meta: Arc<PodMeta>, stop: watch::Receiver<bool>) {
    let containers: Vec<Value> = pod.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let previous: Vec<Value> =
        pod.pointer("/status/containerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
    let (report, mut reports) = mpsc::unbounded_channel();
    let mut statuses = Vec::new();
    for (index, container) in containers.iter().enumerate() {
        let name = container["name"].as_str().unwrap_or_default().to_string();
        let before = previous.iter().find(|s| s["name"] == json!(name));
        // A node agent that restarts finds its containers gone: each starts again, counted
        // as a restart, its last run Unknown (exit 255), as after a node reboot.
        let was_running = before.is_some_and(|s| s.pointer("/state/running").is_some());
        let restart_count =
            before.and_then(|s| s["restartCount"].as_u64()).unwrap_or(0) as u32 + u32::from(was_running);
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
        let status = ContainerStatus {
            name: name.clone(),
            image: container["image"].as_str().unwrap_or_default().to_string(),
            image_id: String::new(),
            container_id: String::new(),
            state: State::Waiting { reason: "ContainerCreating".into(), message: None },
            last_state,
            ready: false,
            started: false,
            restart_count,
            done: false,
        };
        statuses.push(status.clone());
        let container_task = ContainerTask {
            agent: agent.clone(),
            meta: meta.clone(),
            spec: container.clone(),
            index,
            status,
            report: report.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(container_task.run());
    }
    drop(report);
    let mut stop = stop;
    write_status(&agent, &meta, &statuses).await;
    loop {
        let received = tokio::select! {
            received = reports.recv() => received,
            _ = stop.wait_for(|s| *s) => None,
        };
        let Some((index, status)) = received else { return };
        statuses[index] = status;
        while let Ok((index, status)) = reports.try_recv() {
            statuses[index] = status;
        }
        if !write_status(&agent, &meta, &statuses).await {
            return;
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
    let running = containers.iter().filter(|c| matches!(c.state, State::Running { .. })).count();
    let terminated: Vec<&ContainerStatus> =
        containers.iter().filter(|c| matches!(c.state, State::Terminated { .. }) || c.done).collect();
    let failed = |c: &&ContainerStatus| match (&c.state, &c.last_state) {
        (State::Terminated { exit_code, .. }, _) => *exit_code != 0,
        (_, Some(State::Terminated { exit_code, .. })) => *exit_code != 0,
        _ => false,
    };
    if running > 0 {
        return "Running";
    }
    let all_done = containers.iter().all(|c| c.done);
    if all_done && !containers.is_empty() {
        return if terminated.iter().any(failed) { "Failed" } else { "Succeeded" };
    }
    // Restarting after a run (in back-off): still Running, as the kubelet reports it.
    if restart_policy != "Never" && containers.iter().any(|c| c.restart_count > 0 || c.last_state.is_some()) {
        return "Running";
    }
    if !terminated.is_empty() && containers.iter().all(|c| matches!(c.state, State::Terminated { .. })) {
        return "Running";
    }
    "Pending"
}

fn pod_status(meta: &PodMeta, containers: &[ContainerStatus]) -> Value {
    let phase = phase(&meta.restart_policy, containers);
    let now = crate::registry::now();
    let ready = containers.iter().all(|c| c.ready) && phase == "Running";
    let condition = |kind: &str, status: bool, reason: Option<&str>| {
        let mut c = json!({"type": kind, "status": if status { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": now});
        if let Some(reason) = reason {
            c["reason"] = json!(reason);
        }
        c
    };
    let not_ready =
        if matches!(phase, "Succeeded" | "Failed") { Some("PodCompleted") } else { Some("ContainersNotReady") };
    let ip = meta.ip.to_string();
    json!({
        "phase": phase,
        "conditions": [
            condition("PodReadyToStartContainers", true, None),
            condition("Initialized", true, None),
            condition("Ready", ready, (!ready).then_some(not_ready).flatten()),
            condition("ContainersReady", ready, (!ready).then_some(not_ready).flatten()),
            condition("PodScheduled", true, None),
        ],
        "hostIP": meta.host_ip.to_string(),
        "hostIPs": [{"ip": meta.host_ip.to_string()}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": meta.start_time,
        "qosClass": meta.qos_class,
        "containerStatuses": containers.iter().map(ContainerStatus::to_json).collect::<Vec<_>>(),
    })
}

/// One container's life.
struct ContainerTask {
    agent: Arc<Agent>,
    meta: Arc<PodMeta>,
    spec: Value,
    index: usize,
    status: ContainerStatus,
    report: mpsc::UnboundedSender<(usize, ContainerStatus)>,
    stop: watch::Receiver<bool>,
}

impl ContainerTask {
    fn send(&self) {
        let _ = self.report.send((self.index, self.status.clone()));
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
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = self.stop.wait_for(|s| *s) => false,
        }
    }

    async fn run(mut self) {
        let backoff = self.agent.config.backoff.clone();
        let mut delay = backoff.initial;
        let image = self.status.image.clone();
        let policy = self.spec["imagePullPolicy"].as_str().unwrap_or("IfNotPresent").to_string();
        loop {
            // Pull and compile.
            let runtime = self.agent.runtime.clone();
            let pulled = self.agent.images.pull(&image, &policy, |digest| runtime.is_compiled(digest)).await;
            let pulled = match pulled {
                Ok(pulled) => pulled,
                Err(failure) => {
                    let retry = failure.reason != "InvalidImageName";
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
                    self.waiting("CreateContainerError", Some(e.to_string()));
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
            let spec = self.guest_spec(&log);
            self.status.container_id = format!(
                "wasmtime://{}",
                crate::oci::sha256(format!("{}/{}/{attempt}", self.meta.uid, self.status.name).as_bytes()).0
                    ["sha256:".len()..]
                    .to_string()
            );
            let started_at = crate::registry::now();
            let began = Instant::now();
            self.status.state = State::Running { started_at: started_at.clone() };
            self.status.started = true;
            self.status.ready = true;
            self.send();
            let exit = if let Some(pre) = compiled.http.clone() {
                self.serve(pre, spec, &log).await
            } else if let Some(pre) = compiled.command.as_ref() {
                let runtime = self.agent.runtime.clone();
                tokio::select! {
                    exit = runtime.run_command(pre, &spec) => Some(exit),
                    _ = self.stop.wait_for(|s| *s) => None,
                }
            } else {
                None
            };
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
            };
            let terminated = State::Terminated {
                exit_code,
                reason: reason.into(),
                message,
                started_at,
                finished_at: crate::registry::now(),
            };
            let restart = match self.meta.restart_policy.as_str() {
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

    /// Serve HTTP on the pod IP at each container port until the pod stops; None then, or
    /// an exit when a port cannot be bound.
    async fn serve(
        &mut self,
        pre: wasmtime_wasi_http::p2::bindings::ProxyPre<super::runtime::Guest>,
        spec: GuestSpec,
        log: &Arc<ContainerLog>,
    ) -> Option<Exit> {
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
        let (stop_listeners, listeners_stop) = watch::channel(false);
        for port in ports {
            let address = SocketAddr::from((self.meta.ip, port));
            if let Err(e) =
                self.agent.runtime.serve_http(pre.clone(), address, spec.clone(), listeners_stop.clone()).await
            {
                let _ = stop_listeners.send(true);
                let why = format!("cannot listen on {address}: {e}");
                log.note(&format!("wasmkube: {why}"));
                return Some(Exit::Trap(why));
            }
        }
        let _ = self.stop.wait_for(|s| *s).await;
        let _ = stop_listeners.send(true);
        None
    }

    fn guest_spec(&self, log: &Arc<ContainerLog>) -> GuestSpec {
        let strings = |key: &str| -> Vec<String> {
            self.spec[key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect()
        };
        let command = strings("command");
        let mut args = if command.is_empty() { vec![self.status.name.clone()] } else { command };
        args.extend(strings("args"));
        // What container runtimes set: the pod's name as HOSTNAME.
        let mut env = vec![("HOSTNAME".to_string(), self.meta.name.clone())];
        env.extend(self.spec["env"].as_array().into_iter().flatten().filter_map(|e| {
            Some((e["name"].as_str()?.to_string(), e["value"].as_str().unwrap_or_default().to_string()))
        }));
        let memory_limit =
            self.spec.pointer("/resources/limits/memory").and_then(Value::as_str).and_then(crate::quantity::whole);
        GuestSpec { args, env, memory_limit, stdout: log.sink(Stream::Stdout), stderr: log.sink(Stream::Stderr) }
    }
}

/// Guaranteed when every container's cpu and memory limits equal its requests, BestEffort
/// when none has any, Burstable otherwise (the kubelet's qos.GetPodQOS, simplified to cpu and memory).
pub(super) fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> =
        pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten().collect();
    let has = |c: &Value, kind: &str| {
        c.pointer(&format!("/resources/{kind}")).and_then(Value::as_object).is_some_and(|m| !m.is_empty())
    };
    if containers.iter().all(|c| !has(c, "requests") && !has(c, "limits")) {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = c.pointer(&format!("/resources/limits/{r}"));
            limit.is_some() && c.pointer(&format!("/resources/requests/{r}")).is_none_or(|q| Some(q) == limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}
