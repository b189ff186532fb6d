//! The baseline compiler (Winch) keeps the runtime's promises: a plugin compiled by it that
//! loops, eats memory or traps fails that call only, by its deadline, and the same
//! instance set then serves the next call. (A new module serves from Winch until
//! Cranelift is done, so this is what a fresh plugin runs on for its first moments.)

use std::time::{Duration, Instant};

use wasmkube::plugins::{
    AdmissionRequest, CallError, Compiler, GroupVersionKind, GroupVersionResource, Manifest, Operation, PluginMetrics,
    PluginSet, PluginUser, Runtime, RuntimeConfig,
};
use wasmkube_tests::plugin_component;

fn request(name: &str) -> AdmissionRequest {
    AdmissionRequest {
        uid: "1".into(),
        kind: GroupVersionKind { group: String::new(), version: "v1".into(), kind: "ConfigMap".into() },
        resource: GroupVersionResource { group: String::new(), version: "v1".into(), resource: "configmaps".into() },
        sub_resource: None,
        name: name.into(),
        namespace: Some("default".into()),
        operation: Operation::Create,
        user_info: PluginUser { username: "admin".into(), uid: String::new(), groups: vec![] },
        object: Some(format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}}}}"#)),
        old_object: None,
        dry_run: false,
    }
}

fn manifest(behaviour: &str) -> Manifest {
    // Only the loop is stopped by the deadline; the others get one long enough that on a
    // busy machine the memory cap or the trap, not the clock, is what ends them.
    let timeout = if behaviour == "loop" { "200ms" } else { "30s" };
    Manifest::parse(&format!(
        "apiVersion: wasmkube.io/v1alpha1\nkind: Plugin\nmetadata: {{name: {behaviour}}}\nspec:\n  kind: admission\n  module: misbehave.wasm\n  config: {{behaviour: {behaviour}}}\n  timeout: {timeout}\n  memoryLimit: 32Mi\n"
    ))
    .expect("a valid manifest")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_winch_compiled_plugin_fails_one_call_by_its_deadline() {
    let config = RuntimeConfig { cache_dir: None, instance_slots: 32, ..RuntimeConfig::default() };
    let winch = Runtime::new(config.baseline()).expect("a Winch runtime");
    let set = PluginSet::new(winch, PluginMetrics::unregistered().expect("metrics"));
    let bytes = std::fs::read(plugin_component("misbehave")).expect("misbehave.wasm");
    for behaviour in ["loop", "alloc", "trap", "allow"] {
        set.load(manifest(behaviour), bytes.clone(), "test").await.expect("Winch loads misbehave");
    }
    let plugins = set.snapshot();
    let plugin = |name: &str| plugins.iter().find(|p| p.manifest.name == name).expect("loaded").clone();
    assert!(plugins.iter().all(|p| p.module.compiler() == Compiler::Baseline));

    let started = Instant::now();
    let looped = plugin("loop").module.validate(&request("a")).await;
    assert!(matches!(looped, Err(CallError::Timeout(_))), "{looped:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "the deadline holds: {:?}", started.elapsed());
    let ate = plugin("alloc").module.validate(&request("b")).await;
    assert!(matches!(ate, Err(CallError::OutOfMemory(_) | CallError::Trap(_))), "{ate:?}");
    let trapped = plugin("trap").module.validate(&request("c")).await;
    assert!(matches!(trapped, Err(CallError::Trap(_))), "{trapped:?}");
    // Each fails again the same way (a failed instance is never reused), and the others serve.
    assert!(matches!(plugin("loop").module.validate(&request("d")).await, Err(CallError::Timeout(_))));
    let allowed = plugin("allow").module.validate(&request("e")).await.expect("allow answers");
    assert!(allowed.allowed);
}
