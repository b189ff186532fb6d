//! Exec and attach sessions on a running container, as the API server's `pods/exec` and
//! `pods/attach` reach them through [`crate::api::kubelet::Kubelet`].
//!
//! An exec is a fresh instance of the container component's `wasi:cli/run` with the exec's
//! argv, the container's environment, volumes, memory limit and CPU account, its stdio the
//! session's streams (a terminal has no stderr: it joins stdout). A component without that
//! export answers on stderr and exits 126, as a shell does for a command it cannot run.
//! An attach follows the container's own output from now on and, for a container with
//! `stdin: true`, writes to its stdin.
//!
//! Owns the plumbing between a session and a guest only: the wire protocol is the API
//! server's (`api/remotecommand.rs`), running the guest the runtime's.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

use super::context::Running;
use super::logs::Stream;
use super::runtime::{Exit, Pipes, Runtime};
use crate::api::kubelet::{Session, StreamEnd, StreamIo, StreamRequest};

/// Bytes in flight in each direction of a pipe.
const PIPE: usize = 64 << 10;
/// A shell's "command found but not executable".
const CANNOT_EXECUTE: i32 = 126;

/// A session running `request.command` in the container.
pub(super) fn exec(runtime: Arc<Runtime>, running: Arc<Running>, request: StreamRequest) -> Session {
    Box::new(move |io: StreamIo| {
        Box::pin(async move {
            let StreamIo { stdin, stdout, stderr } = io;
            // A terminal's "stderr" is its screen too.
            let stderr = if request.tty { stdout.clone() } else { stderr };
            let Some(pre) = running.command.clone() else {
                let program = request.command.first().cloned().unwrap_or_default();
                let message = format!(
                    "exec {program:?}: the image of container {:?} exports no wasi:cli/run, so nothing can run a command in it\n",
                    running.name
                );
                if let Some(out) = stderr.as_ref().or(stdout.as_ref()) {
                    let _ = out.send(Bytes::from(message)).await;
                }
                return StreamEnd::Exited(CANNOT_EXECUTE);
            };
            let mut guest = running.guest.clone();
            guest.args = request.command.clone();
            let pipes = Pipes {
                stdin: Some(feed(stdin)),
                stdout: Some(drain(stdout.clone())),
                stderr: Some(drain(stderr.clone())),
            };
            let exit = runtime.run_command(&pre, &guest, pipes).await;
            let say = |text: String| {
                let out = stderr.clone().or(stdout.clone());
                async move {
                    if let Some(out) = out {
                        let _ = out.send(Bytes::from(text)).await;
                    }
                }
            };
            match exit {
                Exit::Code(code) => StreamEnd::Exited(code),
                Exit::Trap(why) => {
                    say(format!("wasmkube: the command trapped: {why}\n")).await;
                    StreamEnd::Exited(128 + 6)
                }
                Exit::OutOfMemory => {
                    say("wasmkube: the command ran out of memory (the container's limits.memory)\n".into()).await;
                    StreamEnd::Exited(137)
                }
                Exit::Killed(why) => StreamEnd::Failed(why),
            }
        })
    })
}

/// A session joined to the container's own run: its output from now until it ends, and
/// its stdin when it has one.
pub(super) fn attach(running: Arc<Running>, request: StreamRequest) -> Session {
    Box::new(move |io: StreamIo| {
        Box::pin(async move {
            let StreamIo { stdin, stdout, stderr } = io;
            let stderr = if request.tty { stdout.clone() } else { stderr };
            let mut output = running.log.attach();
            let mut ended = running.log.subscribe();
            let ended = async move { ended.wait_for(|(_, done)| *done).await.is_ok() };
            tokio::pin!(ended);
            if let (Some(mut typed), Some(target)) = (stdin, running.stdin.clone()) {
                let once = running.stdin_once;
                tokio::spawn(async move {
                    while let Some(bytes) = typed.recv().await {
                        let mut pipe = target.lock().await;
                        let Some(writer) = pipe.as_mut() else { return };
                        if writer.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                    if once {
                        // stdinOnce: the first attach's end is the container's end of input.
                        target.lock().await.take();
                    }
                });
            }
            loop {
                tokio::select! {
                    written = output.recv() => match written {
                        Ok((stream, bytes)) => {
                            let out = if stream == Stream::Stdout { &stdout } else { &stderr };
                            if let Some(out) = out {
                                if out.send(bytes).await.is_err() {
                                    return StreamEnd::Exited(0);
                                }
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return StreamEnd::Exited(0),
                    },
                    _ = &mut ended => {
                        // What was written before the end is still queued.
                        while let Ok((stream, bytes)) = output.try_recv() {
                            let out = if stream == Stream::Stdout { &stdout } else { &stderr };
                            if let Some(out) = out {
                                let _ = out.send(bytes).await;
                            }
                        }
                        return StreamEnd::Exited(0);
                    }
                }
            }
        })
    })
}

/// The guest's end of a pipe fed by `input` (closed when `input` ends or is absent).
fn feed(input: Option<mpsc::Receiver<Bytes>>) -> DuplexStream {
    let (guest, mut host) = tokio::io::duplex(PIPE);
    if let Some(mut input) = input {
        tokio::spawn(async move {
            while let Some(bytes) = input.recv().await {
                if host.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            let _ = host.shutdown().await;
        });
    }
    guest
}

/// The guest's end of a pipe drained into `output` (or discarded when absent); the
/// sender is dropped when the guest's end closes.
fn drain(output: Option<mpsc::Sender<Bytes>>) -> DuplexStream {
    let (guest, mut host) = tokio::io::duplex(PIPE);
    tokio::spawn(async move {
        let mut buffer = vec![0u8; PIPE];
        loop {
            match host.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if let Some(output) = &output {
                        if output.send(Bytes::copy_from_slice(&buffer[..n])).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    guest
}
