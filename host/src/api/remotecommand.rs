//! `pods/<name>/exec` and `pods/<name>/attach`: kube-apiserver's checks and words (which
//! container, a host assigned), then the session the pod's node agent runs, carried over
//! the WebSocket channel protocols `v5.channel.k8s.io` (kubectl 1.30 and newer) and
//! `v4.channel.k8s.io` (the Python client, kube-rs). Every binary message starts with its
//! channel: 0 stdin, 1 stdout, 2 stderr, 3 the error channel (a `Status` when the command
//! ends: Success, or NonZeroExitCode with the code as an `ExitCode` cause), 4 terminal
//! resizes; v5 adds 255, "close this channel" (stdin's end). SPDY, which kubectl before
//! 1.30 uses, is refused with a message saying so.
//!
//! Owns the protocol only: what runs, and where, is the node agent's (`kubelet.rs`).

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::kubelet::{Session, StreamEnd, StreamIo, StreamRequest};
use super::{ApiError, AppState};
use crate::registry::{Registry, Resource};

/// The subprotocols spoken, newest first.
const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
/// v5: `[255, channel]` closes that channel (the client's stdin is done).
const CLOSE: u8 = 255;

/// Which subresource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Exec,
    Attach,
}

/// `PodExecOptions` / `PodAttachOptions` from the query (`command` repeats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Options {
    pub command: Vec<String>,
    pub container: Option<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Read the options from a raw query string, booleans as Go's `strconv.ParseBool` reads them.
pub(super) fn options(query: Option<&str>) -> Result<Options, ApiError> {
    let mut options = Options::default();
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode =
            |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
        let (key, value) = (decode(key), decode(value));
        let flag = |value: &str| match value {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
            other => Err(ApiError::bad_request(format!("strconv.ParseBool: parsing {other:?}: invalid syntax"))),
        };
        match key.as_str() {
            "command" => options.command.push(value),
            "container" => options.container = Some(value),
            "stdin" | "input" => options.stdin = flag(&value)?,
            "stdout" | "output" => options.stdout = flag(&value)?,
            "stderr" | "error" => options.stderr = flag(&value)?,
            "tty" => options.tty = flag(&value)?,
            _ => {}
        }
    }
    // A terminal has no separate stderr (the kubelet drops it too).
    if options.tty {
        options.stderr = false;
    }
    Ok(options)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn answer(
    state: &AppState,
    registry: &Registry,
    pods: &Resource,
    namespace: &str,
    name: &str,
    kind: Kind,
    options: Options,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    if !options.stdin && !options.stdout && !options.stderr {
        return Err(ApiError::bad_request("you must specify at least 1 of stdin, stdout, stderr"));
    }
    if kind == Kind::Exec && options.command.is_empty() {
        return Err(ApiError::bad_request("you must specify at least one command for the container"));
    }
    let pod = Value::Object(registry.get(pods, Some(namespace), name).await?);
    let container = super::logs::container_of(&pod, name, options.container.as_deref())?;
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::bad_request(format!("pod {name} does not have a host assigned")));
    }
    if let Some(phase @ ("Succeeded" | "Failed")) = pod.pointer("/status/phase").and_then(Value::as_str) {
        let verb = if kind == Kind::Exec { "exec into" } else { "attach to" };
        return Err(ApiError::bad_request(format!(
            "cannot {verb} a container in a completed pod; current phase is {phase}"
        )));
    }
    let kubelet = state.kubelets.get(node).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("no node agent for node {node:?} answers in this server: it cannot run {kind:?} sessions"),
        )
    })?;
    let request = StreamRequest {
        namespace: namespace.to_string(),
        pod: name.to_string(),
        uid: pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string(),
        container,
        command: options.command.clone(),
        stdin: options.stdin,
        stdout: options.stdout,
        stderr: options.stderr,
        tty: options.tty,
    };
    // The session is agreed before the upgrade, so a refusal is an ordinary Status.
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(_) => return Err(not_websocket(headers)),
    };
    let Some(protocol) = chosen(&upgrade) else {
        let offered: Vec<String> =
            upgrade.requested_protocols().filter_map(|p| p.to_str().ok()).map(str::to_string).collect();
        return Err(ApiError::bad_request(format!(
            "none of the WebSocket subprotocols offered ({}) is spoken here: wasmkube speaks {}",
            if offered.is_empty() { "none".to_string() } else { offered.join(", ") },
            PROTOCOLS.join(" and ")
        )));
    };
    let session = match kind {
        Kind::Exec => kubelet.exec(request).await,
        Kind::Attach => kubelet.attach(request).await,
    }
    .map_err(|e| ApiError::bad_request(e.0))?;
    let v5 = protocol == PROTOCOLS[0];
    Ok(upgrade.protocols([protocol]).on_upgrade(move |socket| stream(socket, v5, options, session)))
}

/// The first subprotocol the client offers that is spoken here (the client's order wins).
fn chosen(upgrade: &WebSocketUpgrade) -> Option<&'static str> {
    upgrade.requested_protocols().find_map(|offered| PROTOCOLS.iter().copied().find(|p| offered == *p))
}

/// What a client that did not ask for a WebSocket is told.
fn not_websocket(headers: &HeaderMap) -> ApiError {
    let spdy = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("spdy"));
    if spdy {
        ApiError::bad_request(format!(
            "wasmkube streams exec and attach over WebSockets ({}), not SPDY: use kubectl 1.30 or newer",
            PROTOCOLS.join(", ")
        ))
    } else {
        ApiError::bad_request("Upgrade request required")
    }
}

/// Carry one session over the socket until the command ends, then send its Status on the
/// error channel and close. A client that goes away ends the session.
async fn stream(socket: WebSocket, v5: bool, options: Options, session: Session) {
    let (mut sender, mut receiver) = socket.split();
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(16);
    let (stdout_tx, mut stdout_rx) = mpsc::channel::<Bytes>(16);
    let (stderr_tx, mut stderr_rx) = mpsc::channel::<Bytes>(16);
    let io = StreamIo {
        stdin: options.stdin.then_some(stdin_rx),
        stdout: options.stdout.then_some(stdout_tx),
        stderr: options.stderr.then_some(stderr_tx),
    };
    // The client's messages: stdin's bytes and its end; resizes are not used (a
    // component's terminal size is not part of WASI 0.2).
    let (gone_tx, mut gone) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let mut stdin = Some(stdin_tx);
        while let Some(Ok(message)) = receiver.next().await {
            match message {
                Message::Binary(data) => match data.first().copied() {
                    Some(STDIN) if data.len() > 1 => {
                        let refused = match &stdin {
                            Some(stdin) => stdin.send(data.slice(1..)).await.is_err(),
                            None => false,
                        };
                        if refused {
                            stdin = None;
                        }
                    }
                    Some(CLOSE) if v5 && data.get(1) == Some(&STDIN) => stdin = None,
                    _ => {}
                },
                Message::Close(_) => break,
                _ => {}
            }
        }
        drop(stdin);
        let _ = gone_tx.send(());
    });
    let mut running = session(io);
    let mut end = None;
    let (mut stdout_open, mut stderr_open) = (true, true);
    // Until the session has ended and its output is drained.
    while end.is_none() || stdout_open || stderr_open {
        let (channel, bytes) = tokio::select! {
            finished = &mut running, if end.is_none() => { end = Some(finished); continue }
            bytes = stdout_rx.recv(), if stdout_open => match bytes {
                Some(bytes) => (STDOUT, bytes),
                None => { stdout_open = false; continue }
            },
            bytes = stderr_rx.recv(), if stderr_open => match bytes {
                Some(bytes) => (STDERR, bytes),
                None => { stderr_open = false; continue }
            },
            _ = &mut gone, if end.is_none() => {
                // The client left: stop the command (dropping it stops it at the next tick).
                reader.abort();
                return;
            }
        };
        let mut frame = Vec::with_capacity(bytes.len() + 1);
        frame.push(channel);
        frame.extend_from_slice(&bytes);
        if sender.send(Message::Binary(frame.into())).await.is_err() {
            reader.abort();
            return;
        }
    }
    let status = match end {
        Some(StreamEnd::Exited(0)) => json!({"metadata": {}, "status": "Success"}),
        Some(StreamEnd::Exited(code)) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: command exited with {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Some(StreamEnd::Failed(why)) => {
            json!({"metadata": {}, "status": "Failure", "message": why, "reason": "InternalError", "code": 500})
        }
        None => {
            json!({"metadata": {}, "status": "Failure", "message": "the session ended without a status", "reason": "InternalError", "code": 500})
        }
    };
    let mut frame = vec![ERROR];
    frame.extend_from_slice(status.to_string().as_bytes());
    let _ = sender.send(Message::Binary(frame.into())).await;
    // A normal closure (1000) is how clients know the streams ended rather than broke.
    let normal = axum::extract::ws::CloseFrame { code: axum::extract::ws::close_code::NORMAL, reason: "".into() };
    let _ = sender.send(Message::Close(Some(normal))).await;
    reader.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_read_repeated_commands_and_go_booleans() {
        let options =
            options(Some("command=hello&command=echo&command=a+b%21&container=c&stdin=1&stdout=true&stderr=True"))
                .expect("valid");
        assert_eq!(options.command, ["hello", "echo", "a b!"]);
        assert_eq!(options.container.as_deref(), Some("c"));
        assert!(options.stdin && options.stdout && options.stderr && !options.tty);
        let tty = super::options(Some("command=x&stdout=1&stderr=1&tty=1")).expect("valid");
        assert!(tty.tty && !tty.stderr, "a terminal has no stderr");
        let bad = super::options(Some("stdin=yes")).expect_err("not a Go boolean");
        assert!(bad.to_string().contains("invalid syntax"), "{bad}");
    }
}
