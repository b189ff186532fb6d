//! The official Kubernetes Python client (`kubernetes` from PyPI, pinned in
//! tests/python/requirements.txt) against the real server: tests/python/test_client.py does
//! CRUD, selectors, patches of every type, errors as Status, a watch, a Deployment's scale
//! subresource and paging through the client's typed APIs.
//!
//! The interpreter is `$WASMKUBE_PYTHON` (scripts/test sets it); without it the test calls
//! `ensure_python_packages` from scripts/lib.sh itself, so `cargo nextest run` alone works.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use wasmkube_tests::{on_both_backends, Backend, Cluster};

/// The Python script sets its own deadline (240 s, then it dumps its threads' stacks);
/// this one only stops a child that hangs past it.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);
/// Creating the venv and installing the client from PyPI the first time.
const INSTALL_DEADLINE: Duration = Duration::from_secs(600);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").to_path_buf()
}

/// `$WASMKUBE_PYTHON`, or the venv interpreter `ensure_python_packages` sets up.
async fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("WASMKUBE_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(python);
    }
    let mut command = tokio::process::Command::new("bash");
    command
        .arg("-c")
        .arg(r#"source scripts/lib.sh && ensure_python_packages && echo "$WASMKUBE_PYTHON""#)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(INSTALL_DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("ensure_python_packages (scripts/lib.sh) took longer than {INSTALL_DEADLINE:?}"))
        .expect("running bash for ensure_python_packages");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ensure_python_packages (scripts/lib.sh) failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    let python = stdout.lines().last().map(str::trim).unwrap_or_default();
    assert!(
        !python.is_empty(),
        "ensure_python_packages printed no WASMKUBE_PYTHON:\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    PathBuf::from(python)
}

async fn official_python_client_passes_its_checks(backend: Backend) {
    let python = python().await;
    let script = workspace_root().join("tests/python/test_client.py");
    assert!(script.exists(), "{} is missing", script.display());

    let cluster = Cluster::start_on(backend).await;

    let mut command = tokio::process::Command::new(&python);
    command
        .arg(&script)
        .arg(&cluster.api.kubeconfig)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        // Unbuffered, so a killed script still shows how far it got.
        .env("PYTHONUNBUFFERED", "1")
        .kill_on_drop(true);
    let out = tokio::time::timeout(SCRIPT_DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("{} {} took longer than {SCRIPT_DEADLINE:?}", python.display(), script.display()))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} {} {} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        python.display(),
        script.display(),
        cluster.api.kubeconfig.display(),
        out.status
    );
    assert!(
        stdout.lines().any(|line| line.starts_with("python client: ") && line.ends_with(" checks passed")),
        "the script exited 0 but did not report its checks:\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
}

on_both_backends!(official_python_client_passes_its_checks);

/// The Python client reads a pod's log (`read_namespaced_pod_log`, with `tail_lines`) from a
/// pod the node really ran, and runs exec in another (its `stream` API, with the exit code).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_reads_a_pods_log() {
    let python = python().await;
    let cluster = Cluster::start_with_node(&[]).await;
    let component = wasmkube_tests::workload_component("hello-command");
    let (ok, _, err) = cluster.wasmkube(&["image", "push", component.to_str().unwrap(), "hello-command:v1"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cluster.kubectl(
        wasmkube_tests::KUBECTLS[0],
        &["run", "said", "--image=hello-command:v1", "--restart=Never", "--", "count", "2", "1"],
    );
    assert!(ok, "{err}");
    // A pod to exec into (the Python client speaks v4.channel.k8s.io).
    let (ok, _, err) = cluster.kubectl(
        wasmkube_tests::KUBECTLS[0],
        &["run", "waits", "--image=hello-command:v1", "--restart=Never", "--", "sleep", "600000"],
    );
    assert!(ok, "{err}");
    wasmkube_tests::wait_for("the pods to succeed and run", Duration::from_secs(60), || async {
        let (_, said) = cluster.request(reqwest::Method::GET, "/api/v1/namespaces/default/pods/said", None).await;
        let (_, waits) = cluster.request(reqwest::Method::GET, "/api/v1/namespaces/default/pods/waits", None).await;
        let running = waits.pointer("/status/containerStatuses/0/state/running").is_some();
        (said["status"]["phase"] == "Succeeded" && running).then_some(())
    })
    .await;
    let script = r#"
import sys
from kubernetes import client, config
config.load_kube_config(sys.argv[1])
v1 = client.CoreV1Api()
sys.stdout.write(v1.read_namespaced_pod_log("said", "default"))
sys.stdout.write("TAIL:" + v1.read_namespaced_pod_log("said", "default", tail_lines=1))
from kubernetes.stream import stream
out = stream(v1.connect_get_namespaced_pod_exec, "waits", "default", command=["hello-command", "echo", "exec", "ok"],
             stderr=True, stdin=False, stdout=True, tty=False)
sys.stdout.write("EXEC:" + out)
run = stream(v1.connect_get_namespaced_pod_exec, "waits", "default", command=["hello-command", "exit", "3"],
             stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
run.run_forever(timeout=30)
sys.stdout.write("CODE:%s\n" % run.returncode)
"#;
    let mut command = tokio::process::Command::new(&python);
    command.arg("-c").arg(script).arg(&cluster.api.kubeconfig).stdin(Stdio::null()).kill_on_drop(true);
    let out =
        tokio::time::timeout(SCRIPT_DEADLINE, command.output()).await.expect("the script ends").expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout, "1\n2\nTAIL:2\nEXEC:exec ok\nCODE:3\n");
}
