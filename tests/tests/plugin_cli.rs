//! `wasmkube plugin ...` as a policy author runs it: `test` on AdmissionReview fixtures
//! without a server (the same fixtures decide alike for the Python plugin and its Rust
//! twin), `check` naming what is wrong with a module, `load` and `list` against a server.

use std::path::Path;
use std::process::Command;

use wasmkube_tests::{plugin_component, wait_for, wasmkube_bin, Backend, Cluster};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Run `wasmkube args...`; (exit code, stdout, stderr).
fn wasmkube(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(wasmkube_bin()).args(args).current_dir(repo()).output().expect("running wasmkube");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn fixtures(set: &str) -> Vec<String> {
    let mut paths: Vec<String> = std::fs::read_dir(repo().join("examples/fixtures").join(set))
        .expect("fixtures")
        .map(|e| e.expect("entry").path().to_string_lossy().into_owned())
        .collect();
    paths.sort();
    paths
}

#[test]
fn plugin_test_checks_each_decision_against_its_fixture() {
    let component = plugin_component("pod_security");
    let manifest = repo().join("host/src/plugins/builtin/pod-security.yaml");
    let mut args = vec!["plugin", "test", component.to_str().unwrap(), "--manifest", manifest.to_str().unwrap()];
    let paths = fixtures("pod-security");
    args.extend(paths.iter().map(String::as_str));
    let (code, out, err) = wasmkube(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("PASS") && out.contains("3 passed, 0 failed"), "{out}");
    assert!(out.contains(r#"denied: violates PodSecurity "baseline:latest": privileged"#), "{out}");

    // A fixture whose expectation is wrong fails, says why, and the exit code says so.
    let dir = tempfile::tempdir().unwrap();
    let wrong = std::fs::read_to_string(&paths[1]).unwrap().replace("allowed: false", "allowed: true");
    let wrong_path = dir.path().join("wrong.yaml");
    std::fs::write(&wrong_path, wrong).unwrap();
    let (code, out, _) = wasmkube(&["plugin", "test", component.to_str().unwrap(), wrong_path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL") && out.contains("expected allowed, got denied") && out.contains("0 passed, 1 failed"),
        "{out}"
    );
}

#[test]
fn the_python_plugin_and_its_rust_twin_pass_the_same_fixtures() {
    let paths = fixtures("no-latest");
    let run = |component: &Path| {
        let mut args = vec!["plugin", "test", component.to_str().unwrap()];
        args.extend(paths.iter().map(String::as_str));
        wasmkube(&args)
    };
    let (python_code, python, err) = run(&plugin_component("examples/no_latest_py"));
    assert_eq!(python_code, 0, "{python}{err}");
    let (rust_code, rust, err) = run(&plugin_component("no_latest"));
    assert_eq!(rust_code, 0, "{rust}{err}");
    assert_eq!(python, rust, "the twins decide differently");
}

#[test]
fn plugin_check_names_what_is_wrong() {
    let (code, out, err) = wasmkube(&["plugin", "check", plugin_component("misbehave").to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("implements wasmkube:plugin/admission") && out.contains("sha256:"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm at all").unwrap();
    let (code, _, err) = wasmkube(&["plugin", "check", garbage.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("not a WebAssembly component"), "{err}");
    // A component of another world (a WASI command) is refused with the world named.
    let (code, _, err) = wasmkube(&["plugin", "check", plugin_component("not_admission").to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("does not implement the world wasmkube:plugin/admission"), "{err}");
    // A core module is WebAssembly but not a component.
    std::fs::write(&garbage, b"\0asm\x01\0\0\0").unwrap();
    let (code, _, err) = wasmkube(&["plugin", "check", garbage.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("not a WebAssembly component"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_load_and_list_work_against_a_server() {
    let cluster = Cluster::start_on(Backend::Embedded).await;
    let data_dir = cluster.dir.path().join("data");
    let manifest = cluster.dir.path().join("gate.yaml");
    std::fs::write(&manifest, "apiVersion: wasmkube.io/v1alpha1\nkind: Plugin\nmetadata: {name: gate}\nspec:\n  kind: admission\n  phases: [validate]\n  rules: [{apiGroups: [''], resources: [configmaps], operations: [CREATE]}]\n  config: {behaviour: deny}\n").unwrap();
    let component = plugin_component("misbehave");
    let (code, out, err) = wasmkube(&[
        "plugin",
        "load",
        component.to_str().unwrap(),
        "--name",
        "gate",
        "--manifest",
        manifest.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("plugin.wasmkube.io/gate applied"), "{out}");
    let listed = wait_for("gate to be Ready in the list", std::time::Duration::from_secs(20), || {
        let data_dir = data_dir.clone();
        async move {
            let (_, out, _) = wasmkube(&["plugin", "list", "--data-dir", data_dir.to_str().unwrap()]);
            out.lines().any(|l| l.starts_with("gate") && l.contains("True") && l.contains("sha256:")).then_some(out)
        }
    })
    .await;
    assert!(listed.contains("admission"), "{listed}");
    let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
    let (code, answer) =
        cluster.request(reqwest::Method::POST, "/api/v1/namespaces/default/configmaps", Some(body)).await;
    assert_eq!(code, 403, "{answer}");
    // Without a server to talk to, the error says where it looked.
    let (code, _, err) = wasmkube(&["plugin", "list", "--data-dir", "/nonexistent-wasmkube-dir"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent-wasmkube-dir"), "{err}");
}

/// `$WASMKUBE_PYTHON` (scripts/test sets it), or the venv `ensure_python_packages` keeps.
fn python() -> String {
    if let Some(python) = std::env::var_os("WASMKUBE_PYTHON").filter(|p| !p.is_empty()) {
        return python.to_string_lossy().into_owned();
    }
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"source scripts/lib.sh && ensure_python_packages >&2 && echo "$WASMKUBE_PYTHON""#)
        .current_dir(repo())
        .output()
        .expect("running ensure_python_packages");
    assert!(out.status.success(), "ensure_python_packages failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn plugin_new_scaffolds_projects_that_build_and_pass_their_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    let python = python();
    for (lang, name) in [("rust", "my-rust"), ("python", "my-py")] {
        let run = |args: &[&str]| {
            let out = Command::new(wasmkube_bin())
                .args(args)
                .current_dir(dir.path())
                .env("WASMKUBE_PYTHON", &python)
                .output()
                .expect("running wasmkube");
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (code, out, err) = run(&["plugin", "new", "--lang", lang, "admission", name]);
        assert_eq!(code, 0, "{out}{err}");
        let (code, out, err) = run(&["plugin", "build", name]);
        assert_eq!(code, 0, "{lang} project does not build: {out}{err}");
        let component = format!("{name}/{}.wasm", name.replace('-', "_"));
        let (code, out, err) = run(&[
            "plugin",
            "test",
            &component,
            &format!("{name}/fixtures/allowed.yaml"),
            &format!("{name}/fixtures/denied.yaml"),
        ]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("2 passed, 0 failed"), "{out}");
    }
    let (code, _, err) = wasmkube(&["plugin", "new", "--lang", "rust", "scheduler", "Bad_Name"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the plugin kinds served are: admission") && err.contains("a DNS label"), "{err}");
}

/// `plugin load` uploads the component: the store keeps it by digest in chunks under its
/// value limit, and every API server on that store loads the Plugin from there — here the
/// ~18 MB Python plugin, uploaded through one server and enforced by both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_module_serves_every_server_on_the_store() {
    let first = Cluster::start_on(Backend::Etcd).await;
    let second = first.another_server().await;
    let data_dir = first.dir.path().join("data");
    let manifest = first.dir.path().join("no-latest.yaml");
    std::fs::write(&manifest, "apiVersion: wasmkube.io/v1alpha1\nkind: Plugin\nmetadata: {name: no-latest}\nspec:\n  kind: admission\n  phases: [validate]\n  rules: [{apiGroups: [''], resources: [pods], operations: [CREATE]}]\n  timeout: 2s\n").unwrap();
    let component = plugin_component("examples/no_latest_py");
    let size = std::fs::metadata(&component).unwrap().len();
    let (code, out, err) = wasmkube(&[
        "plugin",
        "load",
        component.to_str().unwrap(),
        "--name",
        "no-latest",
        "--manifest",
        manifest.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let digest = out
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .map(|w| w.trim_end_matches(')').to_string())
        .expect("the digest uploaded");

    // The other server reads what the store holds of it: every byte, in 1 MiB chunks.
    let (status, module) =
        second.request(reqwest::Method::GET, &format!("/apis/wasmkube.io/v1alpha1/modules/{digest}"), None).await;
    assert_eq!(status, 200, "{module}");
    assert_eq!(module["size"], size, "{module}");
    assert_eq!(module["chunks"], size.div_ceil(1 << 20), "{module}");

    // Both servers enforce it.
    let pod = |name: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox:latest"}]}})
    };
    for (server, cluster) in [("first", &first), ("second", &second)] {
        let mut n = 0;
        let message = wait_for(
            &format!("the {server} server to enforce the uploaded plugin"),
            std::time::Duration::from_secs(120),
            || {
                n += 1;
                let body = pod(&format!("{server}-{n}"));
                async move {
                    let (code, answer) =
                        cluster.request(reqwest::Method::POST, "/api/v1/namespaces/default/pods", Some(body)).await;
                    (code == 403).then(|| answer["message"].as_str().unwrap_or_default().to_string())
                }
            },
        )
        .await;
        assert!(message.contains("plugin \"no-latest\""), "{server}: {message}");
    }
    let (_, plugin) = second.request(reqwest::Method::GET, "/apis/wasmkube.io/v1alpha1/plugins/no-latest", None).await;
    assert_eq!(plugin["spec"]["module"], digest.as_str(), "{plugin}");

    // What is not a module is refused, naming why; an unknown digest is NotFound; a Plugin
    // naming a digest never uploaded says so in its status.
    let url = format!("{}/apis/wasmkube.io/v1alpha1/modules", first.api.base);
    let refused = first.api.client.post(&url).body("#!/bin/sh\necho hi\n").send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    let refused: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(refused["kind"], "Status");
    assert!(refused["message"].as_str().unwrap_or_default().contains("not WebAssembly"), "{refused}");
    let unknown = format!("sha256:{}", "0".repeat(64));
    let (status, answer) =
        first.request(reqwest::Method::GET, &format!("/apis/wasmkube.io/v1alpha1/modules/{unknown}"), None).await;
    assert_eq!((status, answer["reason"].as_str()), (404, Some("NotFound")), "{answer}");
    let (status, answer) =
        first.request(reqwest::Method::GET, "/apis/wasmkube.io/v1alpha1/modules/sha256:xyz", None).await;
    assert_eq!((status, answer["reason"].as_str()), (400, Some("BadRequest")), "{answer}");
    // A Plugin applied before its module is uploaded says so, and loads once it is.
    let gate = std::fs::read(plugin_component("misbehave")).unwrap();
    let later = wasmkube::plugins::digest(&gate);
    let orphan = serde_json::json!({"apiVersion": "wasmkube.io/v1alpha1", "kind": "Plugin", "metadata": {"name": "orphan"},
        "spec": {"kind": "admission", "module": later, "config": {"behaviour": "deny"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "operations": ["CREATE"]}]}});
    let (status, answer) =
        first.request(reqwest::Method::POST, "/apis/wasmkube.io/v1alpha1/plugins", Some(orphan)).await;
    assert_eq!(status, 201, "{answer}");
    let error = wait_for("the missing module in the Plugin's status", std::time::Duration::from_secs(20), || async {
        let (_, plugin) = first.request(reqwest::Method::GET, "/apis/wasmkube.io/v1alpha1/plugins/orphan", None).await;
        plugin["status"]["lastError"].as_str().map(str::to_owned)
    })
    .await;
    assert!(error.contains("was uploaded") && error.contains(&later), "{error}");
    let uploaded =
        first.api.client.post(&url).header("content-type", "application/wasm").body(gate).send().await.unwrap();
    assert_eq!(uploaded.status().as_u16(), 201);
    for (server, cluster) in [("first", &first), ("second", &second)] {
        let mut n = 0;
        wait_for(&format!("the {server} server to load the Plugin once its module is uploaded"), std::time::Duration::from_secs(30), || {
            n += 1;
            let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("{server}-{n}")}});
            async move {
                let (code, _) = cluster.request(reqwest::Method::POST, "/api/v1/namespaces/default/configmaps", Some(body)).await;
                (code == 403).then_some(())
            }
        })
        .await;
    }
}
