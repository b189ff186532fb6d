//! Embeds the default plugins (built for wasm32-wasip2 by scripts/build-plugins into
//! plugins/target) when they are there; a host built without them serves without
//! default plugins and says so at start. This script never runs cargo itself: a build
//! script that builds on the host's target dir deadlocks.

use std::path::PathBuf;

const DEFAULTS: &[&str] =
    &["pod_security", "defaults", "replicaset", "deployment", "namespace", "serviceaccount", "default_policy"];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(wasmkube_default_plugins)");
    println!("cargo::rerun-if-env-changed=WASMKUBE_PLUGINS_TARGET");
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("WASMKUBE_PLUGINS_TARGET")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join("../plugins/target"));
    let dir = target.join("wasm32-wasip2/release");
    let mut all = true;
    for name in DEFAULTS {
        let path = dir.join(format!("{name}.wasm"));
        println!("cargo::rerun-if-changed={}", path.display());
        if path.exists() {
            println!("cargo::rustc-env=WASMKUBE_PLUGIN_{}={}", name.to_uppercase(), path.display());
        } else {
            all = false;
        }
    }
    if all {
        println!("cargo::rustc-cfg=wasmkube_default_plugins");
    } else {
        println!("cargo::warning=default plugins not found in {}: run scripts/build-plugins first; this build serves without them", dir.display());
    }
}
