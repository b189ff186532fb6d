//! A pod's volumes, made on the node before its containers start, and each container's
//! mounts as WASI preopened directories: emptyDir (a directory of the pod's), configMap and
//! secret (their keys, or `items`, written as files), downwardAPI (fields and resources as
//! files), projected (configMap, secret and downwardAPI sources together) and hostPath (the
//! machine's directory). `readOnly` mounts are preopened read-only; `subPath` mounts a
//! directory inside the volume. A volume that cannot be made is the kubelet's
//! `MountVolume.SetUp failed for volume "v" : ...`, and the pod waits in ContainerCreating.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use base64::Engine;
use serde_json::Value;

use crate::client::Client;

/// A directory a container sees.
#[derive(Clone, Debug)]
pub struct Mount {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

/// Why a volume could not be made or mounted.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct VolumeError(pub String);

/// A relative path that stays inside its directory (no `..`, not absolute).
fn inside(path: &str) -> bool {
    !path.is_empty() && Path::new(path).components().all(|c| matches!(c, Component::Normal(_)))
}

fn write_file(dir: &Path, path: &str, bytes: &[u8]) -> Result<(), String> {
    if !inside(path) {
        return Err(format!("{path:?} must be a relative path without '..'"));
    }
    let file = dir.join(path);
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::write(&file, bytes).map_err(|e| e.to_string())
}

/// Read a ConfigMap's or Secret's data as bytes per key; None when it does not exist.
async fn source_data(
    client: &dyn Client,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Result<Option<Vec<(String, Vec<u8>)>>, String> {
    let plural = if kind == "configmap" { "configmaps" } else { "secrets" };
    let resource = client.resource("", "v1", plural).ok_or_else(|| format!("{plural} are not served"))?;
    let object = match client.get(&resource, Some(namespace), name).await {
        Ok(object) => object,
        Err(crate::registry::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut data = Vec::new();
    for (key, value) in object.get("data").and_then(Value::as_object).into_iter().flatten() {
        let text = value.as_str().unwrap_or_default();
        let bytes = if kind == "secret" {
            base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_default()
        } else {
            text.as_bytes().to_vec()
        };
        data.push((key.clone(), bytes));
    }
    if kind == "configmap" {
        for (key, value) in object.get("binaryData").and_then(Value::as_object).into_iter().flatten() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value.as_str().unwrap_or_default())
                .unwrap_or_default();
            data.push((key.clone(), bytes));
        }
    }
    Ok(Some(data))
}

/// Write a configMap or secret source into `dir`.
async fn project_source(
    client: &dyn Client,
    namespace: &str,
    kind: &str,
    source: &Value,
    dir: &Path,
) -> Result<(), String> {
    let name = source["name"].as_str().or(source["secretName"].as_str()).unwrap_or_default();
    let optional = source["optional"].as_bool().unwrap_or(false);
    let Some(data) = source_data(client, namespace, kind, name).await? else {
        return if optional { Ok(()) } else { Err(format!("{kind} {name:?} not found")) };
    };
    match source["items"].as_array().filter(|items| !items.is_empty()) {
        Some(items) => {
            for item in items {
                let key = item["key"].as_str().unwrap_or_default();
                let path = item["path"].as_str().unwrap_or(key);
                match data.iter().find(|(k, _)| k == key) {
                    Some((_, bytes)) => write_file(dir, path, bytes)?,
                    None if optional => {}
                    None => return Err(format!("configmap references non-existent config key: {key}")),
                }
            }
        }
        None => {
            for (key, bytes) in &data {
                write_file(dir, key, bytes)?;
            }
        }
    }
    Ok(())
}

fn project_downward(pod: &Value, items: &Value, dir: &Path, pod_ip: &str, host_ip: &str) -> Result<(), String> {
    for item in items.as_array().into_iter().flatten() {
        let path = item["path"].as_str().unwrap_or_default();
        let value = if let Some(field) = item.get("fieldRef") {
            let field = field["fieldPath"].as_str().unwrap_or_default();
            super::env::field_value(pod, field, pod_ip, host_ip)
                .ok_or_else(|| format!("unsupported fieldPath: {field}"))?
        } else if let Some(resource) = item.get("resourceFieldRef") {
            let name = resource["containerName"].as_str().unwrap_or_default();
            let container = pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["name"] == name))
                .ok_or_else(|| format!("resourceFieldRef names no container {name:?}"))?;
            let what = resource["resource"].as_str().unwrap_or_default();
            super::env::resource_value(container, what, resource["divisor"].as_str().unwrap_or("1"))
                .ok_or_else(|| format!("unsupported container resource: {what}"))?
        } else {
            continue;
        };
        write_file(dir, path, value.as_bytes())?;
    }
    Ok(())
}

/// Make every volume of `pod` under `pod_dir/volumes/`; where each is on the machine.
pub(super) async fn prepare(
    client: &dyn Client,
    pod: &Value,
    pod_dir: &Path,
    pod_ip: &str,
    host_ip: &str,
) -> Result<HashMap<String, PathBuf>, VolumeError> {
    let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
    let mut made = HashMap::new();
    for volume in pod.pointer("/spec/volumes").and_then(Value::as_array).into_iter().flatten() {
        let name = volume["name"].as_str().unwrap_or_default();
        let failed = |why: String| VolumeError(format!("MountVolume.SetUp failed for volume {name:?} : {why}"));
        if let Some(host) = volume.get("hostPath") {
            let path = PathBuf::from(host["path"].as_str().unwrap_or_default());
            let kind = host["type"].as_str().unwrap_or_default();
            if kind == "DirectoryOrCreate" {
                std::fs::create_dir_all(&path).map_err(|e| failed(e.to_string()))?;
            } else if !path.is_dir() {
                return Err(failed(format!("hostPath type check failed: {} is not a directory", path.display())));
            }
            made.insert(name.to_string(), path);
            continue;
        }
        let dir = pod_dir.join("volumes").join(name);
        // Made afresh on each start: a ConfigMap's change shows in a restarted container.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| failed(e.to_string()))?;
        if volume.get("emptyDir").is_some() {
        } else if let Some(source) = volume.get("configMap") {
            project_source(client, namespace, "configmap", source, &dir).await.map_err(failed)?;
        } else if let Some(source) = volume.get("secret") {
            project_source(client, namespace, "secret", source, &dir).await.map_err(failed)?;
        } else if let Some(source) = volume.get("downwardAPI") {
            project_downward(pod, &source["items"], &dir, pod_ip, host_ip).map_err(failed)?;
        } else if let Some(projected) = volume.get("projected") {
            for source in projected["sources"].as_array().into_iter().flatten() {
                if let Some(s) = source.get("configMap") {
                    project_source(client, namespace, "configmap", s, &dir).await.map_err(failed)?;
                } else if let Some(s) = source.get("secret") {
                    project_source(client, namespace, "secret", s, &dir).await.map_err(failed)?;
                } else if let Some(s) = source.get("downwardAPI") {
                    project_downward(pod, &s["items"], &dir, pod_ip, host_ip).map_err(failed)?;
                } else if source.get("serviceAccountToken").is_some() {
                    return Err(failed("serviceAccountToken sources are not supported by this node yet".into()));
                }
            }
        } else {
            let kind = volume.as_object().and_then(|v| v.keys().find(|k| *k != "name").cloned()).unwrap_or_default();
            return Err(failed(format!("{kind} volumes are not supported by this node (emptyDir, configMap, secret, downwardAPI, projected and hostPath are)")));
        }
        made.insert(name.to_string(), dir);
    }
    Ok(made)
}

/// The directories `container` mounts, from the pod's prepared volumes.
pub(super) fn mounts(container: &Value, volumes: &HashMap<String, PathBuf>) -> Result<Vec<Mount>, VolumeError> {
    let mut mounts = Vec::new();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = mount["name"].as_str().unwrap_or_default();
        let guest = mount["mountPath"].as_str().unwrap_or_default().to_string();
        let mut host = volumes
            .get(name)
            .cloned()
            .ok_or_else(|| VolumeError(format!("volumeMount {name:?} names no volume of the pod")))?;
        if let Some(sub) = mount["subPath"].as_str().filter(|s| !s.is_empty()) {
            if !inside(sub) {
                return Err(VolumeError(format!("subPath {sub:?} must be a relative path without '..'")));
            }
            host = host.join(sub);
            if !host.exists() {
                std::fs::create_dir_all(&host)
                    .map_err(|e| VolumeError(format!("cannot create subPath {sub:?}: {e}")))?;
            }
            if !host.is_dir() {
                return Err(VolumeError(format!(
                    "subPath {sub:?} is a file: a WASI component sees directories only (preopens); mount its directory instead"
                )));
            }
        }
        mounts.push(Mount { host, guest, read_only: mount["readOnly"].as_bool().unwrap_or(false) });
    }
    Ok(mounts)
}
