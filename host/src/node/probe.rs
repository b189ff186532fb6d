//! Probes, as the kubelet's prober runs them: a startup probe until it succeeds (the
//! others wait for it), then liveness and readiness side by side, each after
//! `initialDelaySeconds`, every `periodSeconds`, failing after `timeoutSeconds`, deciding
//! after `successThreshold` successes or `failureThreshold` failures. A probe is an
//! `httpGet` (2xx and 3xx succeed), a `tcpSocket` connect, or an `exec`: the container's
//! component run as a command with the probe's argv (exit 0 succeeds). What they find is
//! sent to the container's task as [`ProbeEvent`]s; the prober stops when the task drops
//! its receiver.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use wasmtime_wasi::p2::bindings::CommandPre;

use super::runtime::{Exit, Guest, GuestSpec, Runtime};

/// What the prober tells the container's task.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ProbeEvent {
    /// The startup probe succeeded (or there is none): the container is `started`.
    Started,
    /// Readiness changed.
    Ready(bool),
    /// A probe failed (not yet `failureThreshold` times, or a readiness probe): an event.
    Unhealthy(String),
    /// The startup or liveness probe failed `failureThreshold` times: restart the container.
    Failed(String),
}

/// What a probe reaches.
#[derive(Clone)]
pub(super) struct ProbeTarget {
    pub ip: Ipv4Addr,
    /// The container's named ports.
    pub ports: Vec<(String, u16)>,
    pub runtime: Arc<Runtime>,
    /// For `exec` probes: the component's command entry and its environment.
    pub command: Option<CommandPre<Guest>>,
    pub guest: GuestSpec,
}

/// A probe's timings (the API's defaults filled in).
struct Timing {
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

impl Timing {
    fn of(probe: &Value) -> Self {
        let seconds = |field: &str, default: u64| probe[field].as_u64().unwrap_or(default);
        Timing {
            initial_delay: Duration::from_secs(seconds("initialDelaySeconds", 0)),
            period: Duration::from_secs(seconds("periodSeconds", 10).max(1)),
            timeout: Duration::from_secs(seconds("timeoutSeconds", 1).max(1)),
            success_threshold: seconds("successThreshold", 1).max(1) as u32,
            failure_threshold: seconds("failureThreshold", 3).max(1) as u32,
        }
    }
}

/// Start probing `container`; the events come on the receiver.
pub(super) fn start(container: &Value, target: ProbeTarget) -> mpsc::UnboundedReceiver<ProbeEvent> {
    let (events, receiver) = mpsc::unbounded_channel();
    let startup = container.get("startupProbe").filter(|p| p.is_object()).cloned();
    let liveness = container.get("livenessProbe").filter(|p| p.is_object()).cloned();
    let readiness = container.get("readinessProbe").filter(|p| p.is_object()).cloned();
    tokio::spawn(async move {
        if let Some(probe) = startup {
            let timing = Timing::of(&probe);
            tokio::time::sleep(timing.initial_delay).await;
            let mut failures = 0;
            loop {
                match check(&probe, &timing, &target).await {
                    Ok(()) => break,
                    Err(why) => {
                        failures += 1;
                        if failures >= timing.failure_threshold {
                            let _ = events.send(ProbeEvent::Failed(format!("Startup probe failed: {why}")));
                            return;
                        }
                    }
                }
                if events.is_closed() {
                    return;
                }
                tokio::time::sleep(timing.period).await;
            }
        }
        if events.send(ProbeEvent::Started).is_err() {
            return;
        }
        let ready_loop = {
            let (events, target) = (events.clone(), target.clone());
            async move {
                let Some(probe) = readiness else {
                    let _ = events.send(ProbeEvent::Ready(true));
                    return;
                };
                let timing = Timing::of(&probe);
                tokio::time::sleep(timing.initial_delay).await;
                let (mut successes, mut failures, mut ready) = (0, 0, false);
                while !events.is_closed() {
                    match check(&probe, &timing, &target).await {
                        Ok(()) => {
                            successes += 1;
                            failures = 0;
                            if !ready && successes >= timing.success_threshold {
                                ready = true;
                                let _ = events.send(ProbeEvent::Ready(true));
                            }
                        }
                        Err(why) => {
                            failures += 1;
                            successes = 0;
                            let _ = events.send(ProbeEvent::Unhealthy(format!("Readiness probe failed: {why}")));
                            if ready && failures >= timing.failure_threshold {
                                ready = false;
                                let _ = events.send(ProbeEvent::Ready(false));
                            }
                        }
                    }
                    tokio::time::sleep(timing.period).await;
                }
            }
        };
        let live_loop = async move {
            let Some(probe) = liveness else { return };
            let timing = Timing::of(&probe);
            tokio::time::sleep(timing.initial_delay).await;
            let mut failures = 0;
            while !events.is_closed() {
                match check(&probe, &timing, &target).await {
                    Ok(()) => failures = 0,
                    Err(why) => {
                        failures += 1;
                        if failures >= timing.failure_threshold {
                            let _ = events.send(ProbeEvent::Failed(format!("Liveness probe failed: {why}")));
                            return;
                        }
                        let _ = events.send(ProbeEvent::Unhealthy(format!("Liveness probe failed: {why}")));
                    }
                }
                tokio::time::sleep(timing.period).await;
            }
        };
        tokio::join!(ready_loop, live_loop);
    });
    receiver
}

/// Resolve a probe's `port`: a number, or the name of one of the container's ports.
fn port(value: &Value, target: &ProbeTarget) -> Result<u16, String> {
    match value {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()).ok_or_else(|| format!("invalid port {n}")),
        Value::String(name) => target
            .ports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .or_else(|| name.parse().ok())
            .ok_or_else(|| format!("the container has no port named {name:?}")),
        other => Err(format!("invalid port {other}")),
    }
}

/// Run the probe once.
async fn check(probe: &Value, timing: &Timing, target: &ProbeTarget) -> Result<(), String> {
    if let Some(http) = probe.get("httpGet") {
        let port = port(&http["port"], target)?;
        let host = http["host"].as_str().filter(|h| !h.is_empty()).map_or(target.ip.to_string(), str::to_string);
        let scheme = if http["scheme"].as_str() == Some("HTTPS") { "https" } else { "http" };
        let path = http["path"].as_str().unwrap_or("/");
        let url = format!("{scheme}://{host}:{port}{path}");
        let client = reqwest::Client::builder()
            .timeout(timing.timeout)
            .danger_accept_invalid_certs(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        let mut request = client.get(&url).header("user-agent", "kube-probe/1.33");
        for header in http["httpHeaders"].as_array().into_iter().flatten() {
            if let (Some(name), Some(value)) = (header["name"].as_str(), header["value"].as_str()) {
                request = request.header(name, value);
            }
        }
        return match request.send().await {
            Ok(response) if response.status().as_u16() < 400 => Ok(()),
            Ok(response) => Err(format!("HTTP probe failed with statuscode: {}", response.status().as_u16())),
            Err(e) if e.is_timeout() => Err(format!("Get \"{url}\": context deadline exceeded")),
            Err(e) => Err(format!("Get \"{url}\": {e}")),
        };
    }
    if let Some(tcp) = probe.get("tcpSocket") {
        let port = port(&tcp["port"], target)?;
        let host = tcp["host"].as_str().filter(|h| !h.is_empty()).map_or(target.ip.to_string(), str::to_string);
        return match tokio::time::timeout(timing.timeout, tokio::net::TcpStream::connect((host.as_str(), port))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
            Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    if let Some(exec) = probe.get("exec") {
        let Some(pre) = target.command.as_ref() else {
            return Err("the component exports no wasi:cli/run, so it cannot run an exec probe".into());
        };
        let argv: Vec<String> =
            exec["command"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_string)).collect();
        let mut guest = target.guest.clone();
        guest.args = argv;
        return match tokio::time::timeout(timing.timeout, target.runtime.run_command(pre, &guest, Default::default()))
            .await
        {
            Ok(Exit::Code(0)) => Ok(()),
            Ok(Exit::Code(code)) => Err(format!("command exited with {code}")),
            Ok(Exit::Trap(why)) => Err(format!("command trapped: {why}")),
            Ok(Exit::OutOfMemory) => Err("command ran out of memory".into()),
            Ok(Exit::Killed(why)) => Err(why),
            Err(_) => Err(format!("command timed out after {}s", timing.timeout.as_secs())),
        };
    }
    Err("the probe has no handler (httpGet, tcpSocket or exec)".into())
}
