//! The default plugins compiled into the binary (when build.rs found them built): the
//! pod-security validator, the resource defaulter, the ReplicaSet, Deployment,
//! Namespace and ServiceAccount controllers, and the default scheduler policy, with
//! their manifests.

use super::Builtin;

/// The default plugins, or none if this binary was built without them.
pub fn defaults() -> Vec<Builtin> {
    #[cfg(wasmkube_default_plugins)]
    {
        vec![
            Builtin {
                manifest: include_str!("pod-security.yaml"),
                module: include_bytes!(env!("WASMKUBE_PLUGIN_POD_SECURITY")),
            },
            Builtin {
                manifest: include_str!("defaults.yaml"),
                module: include_bytes!(env!("WASMKUBE_PLUGIN_DEFAULTS")),
            },
            Builtin {
                manifest: include_str!("replicaset.yaml"),
                module: include_bytes!(env!("WASMKUBE_PLUGIN_REPLICASET")),
            },
            Builtin {
                manifest: include_str!("deployment.yaml"),
                module: include_bytes!(env!("WASMKUBE_PLUGIN_DEPLOYMENT")),
            },
            Builtin {
                manifest: include_str!("namespace.yaml"),
                module: include_bytes!(env!("WASMKUBE_PLUGIN_NAMESPACE")),
            },
            Builtin {
                manifest: include_str!("serviceaccount.yaml"),
                module: include_bytes!(env!("WASMKUBE_PLUGIN_SERVICEACCOUNT")),
            },
            Builtin {
                manifest: include_str!("default-policy.yaml"),
                module: include_bytes!(env!("WASMKUBE_PLUGIN_DEFAULT_POLICY")),
            },
        ]
    }
    #[cfg(not(wasmkube_default_plugins))]
    {
        Vec::new()
    }
}

/// The module of a default plugin by file name (`pod_security.wasm`), for manifests that
/// say `module: builtin:<file>`.
pub fn module(file: &str) -> Option<&'static [u8]> {
    #[cfg(wasmkube_default_plugins)]
    {
        match file {
            "pod_security.wasm" => Some(include_bytes!(env!("WASMKUBE_PLUGIN_POD_SECURITY"))),
            "defaults.wasm" => Some(include_bytes!(env!("WASMKUBE_PLUGIN_DEFAULTS"))),
            "replicaset.wasm" => Some(include_bytes!(env!("WASMKUBE_PLUGIN_REPLICASET"))),
            "deployment.wasm" => Some(include_bytes!(env!("WASMKUBE_PLUGIN_DEPLOYMENT"))),
            "namespace.wasm" => Some(include_bytes!(env!("WASMKUBE_PLUGIN_NAMESPACE"))),
            "serviceaccount.wasm" => Some(include_bytes!(env!("WASMKUBE_PLUGIN_SERVICEACCOUNT"))),
            "default_policy.wasm" => Some(include_bytes!(env!("WASMKUBE_PLUGIN_DEFAULT_POLICY"))),
            _ => None,
        }
    }
    #[cfg(not(wasmkube_default_plugins))]
    {
        let _ = file;
        None
    }
}
