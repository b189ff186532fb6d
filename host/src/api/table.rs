//! `meta.k8s.io/v1` Tables: what `kubectl get` prints. Each kind has the columns
//! kube-apiserver's printers give it (pods: NAME READY STATUS RESTARTS AGE; deployments:
//! NAME READY UP-TO-DATE AVAILABLE AGE; ...); kinds without printers get NAME and AGE.
//! Columns with priority 1 are what `-o wide` adds. Custom resources get their CRD's
//! `additionalPrinterColumns`, each read by a (simple) JSONPath. Rows carry the object's metadata
//! (`PartialObjectMetadata`), which kubectl uses for names and labels.

use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use serde_json::{json, Value};

use crate::registry::{ApiResource as Resource, Object, PrinterColumn};

/// kubectl asks for `application/json;as=Table;v=v1;g=meta.k8s.io` first.
pub(super) fn wanted(headers: &HeaderMap) -> bool {
    super::accepts(headers, |media| {
        media.contains("as=Table") && media.contains("g=meta.k8s.io") && media.contains("v=v1")
    })
}

/// One column: its header, type, priority (0 = always, 1 = wide) and how a cell is read.
struct Column {
    name: &'static str,
    kind: &'static str,
    priority: u8,
    cell: fn(&Object, SystemTime) -> Value,
}

const fn col(name: &'static str, kind: &'static str, priority: u8, cell: fn(&Object, SystemTime) -> Value) -> Column {
    Column { name, kind, priority, cell }
}

fn at<'a>(object: &'a Object, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter().try_fold(object.get(*first)?, |value, key| value.get(key))
}

fn text(object: &Object, path: &[&str]) -> String {
    match at(object, path) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn int(object: &Object, path: &[&str]) -> i64 {
    at(object, path).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(s: String) -> Value {
    Value::String(if s.is_empty() { "<none>".into() } else { s })
}

fn name(o: &Object, _: SystemTime) -> Value {
    Value::String(text(o, &["metadata", "name"]))
}

fn age(o: &Object, now: SystemTime) -> Value {
    Value::String(since(o, &["metadata", "creationTimestamp"], now))
}

fn since(o: &Object, path: &[&str], now: SystemTime) -> String {
    at(o, path)
        .and_then(Value::as_str)
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .map_or_else(|| "<unknown>".to_string(), |t| human_duration(now.duration_since(t).unwrap_or_default()))
}

fn list<'a>(o: &'a Object, path: &[&str]) -> &'a [Value] {
    at(o, path).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn containers(o: &Object, path: &[&str], field: &str) -> Value {
    let names: Vec<&str> = list(o, path).iter().filter_map(|c| c.get(field).and_then(Value::as_str)).collect();
    or_none(names.join(","))
}

fn selector(o: &Object) -> Value {
    let labels = at(o, &["spec", "selector", "matchLabels"]).or_else(|| at(o, &["spec", "selector"]));
    let mut pairs: Vec<String> = labels
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}"))).collect())
        .unwrap_or_default();
    pairs.sort();
    or_none(pairs.join(","))
}

/// What kubectl's printPod derives from a pod: ready and total containers (restartable
/// init containers, native sidecars, count), restarts, and the STATUS reason.
struct PodSummary {
    ready: usize,
    total: usize,
    restarts: i64,
    reason: String,
}

fn pod_summary(o: &Object) -> PodSummary {
    let phase = text(o, &["status", "phase"]);
    let mut reason = text(o, &["status", "reason"]);
    if reason.is_empty() {
        reason = phase.clone();
    }
    let inits = list(o, &["spec", "initContainers"]);
    let sidecar = |name: &Value| inits.iter().any(|c| &c["name"] == name && c["restartPolicy"] == "Always");
    let total =
        list(o, &["spec", "containers"]).len() + inits.iter().filter(|c| c["restartPolicy"] == "Always").count();
    let (mut ready, mut restarts, mut sidecar_restarts) = (0usize, 0i64, 0i64);
    let init_count = inits.len();
    let mut initializing = false;
    for (i, status) in list(o, &["status", "initContainerStatuses"]).iter().enumerate() {
        let count = status["restartCount"].as_i64().unwrap_or(0);
        restarts += count;
        if sidecar(&status["name"]) {
            sidecar_restarts += count;
            if status["started"] == true {
                ready += 1;
            }
            continue;
        }
        let state = &status["state"];
        let terminated = &state["terminated"];
        let waiting = state["waiting"]["reason"].as_str().unwrap_or_default();
        if terminated.is_object() && terminated["exitCode"].as_i64() == Some(0) {
            continue;
        }
        if terminated.is_object() {
            reason = match terminated["reason"].as_str().filter(|r| !r.is_empty()) {
                Some(r) => format!("Init:{r}"),
                None if terminated["signal"].as_i64().unwrap_or(0) != 0 => {
                    format!("Init:Signal:{}", terminated["signal"])
                }
                None => format!("Init:ExitCode:{}", terminated["exitCode"]),
            };
        } else if !waiting.is_empty() && waiting != "PodInitializing" {
            reason = format!("Init:{waiting}");
        } else {
            reason = format!("Init:{i}/{init_count}");
        }
        initializing = true;
        break;
    }
    let initialized =
        list(o, &["status", "conditions"]).iter().any(|c| c["type"] == "Initialized" && c["status"] == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        let mut running = false;
        for status in list(o, &["status", "containerStatuses"]).iter().rev() {
            restarts += status["restartCount"].as_i64().unwrap_or(0);
            let state = &status["state"];
            if let Some(r) = state["waiting"]["reason"].as_str().filter(|r| !r.is_empty()) {
                reason = r.to_string();
            } else if let Some(r) = state["terminated"]["reason"].as_str().filter(|r| !r.is_empty()) {
                reason = r.to_string();
            } else if state["terminated"].is_object() {
                reason = match state["terminated"]["signal"].as_i64().filter(|s| *s != 0) {
                    Some(signal) => format!("Signal:{signal}"),
                    None => format!("ExitCode:{}", state["terminated"]["exitCode"]),
                };
            } else if status["ready"] == true && state["running"].is_object() {
                running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && running {
            let ready_condition =
                list(o, &["status", "conditions"]).iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
            reason = if ready_condition { "Running".into() } else { "NotReady".into() };
        }
    }
    if at(o, &["metadata", "deletionTimestamp"]).is_some() {
        if text(o, &["status", "reason"]) == "NodeLost" {
            reason = "Unknown".into();
        } else if !matches!(phase.as_str(), "Succeeded" | "Failed") {
            reason = "Terminating".into();
        }
    }
    PodSummary { ready, total, restarts, reason: if reason.is_empty() { "Pending".into() } else { reason } }
}

fn pod_ready(o: &Object, _: SystemTime) -> Value {
    let summary = pod_summary(o);
    Value::String(format!("{}/{}", summary.ready, summary.total))
}

/// The STATUS column of a pod, as kubectl's printer derives it.
fn pod_status(o: &Object, _: SystemTime) -> Value {
    Value::String(pod_summary(o).reason)
}

fn pod_restarts(o: &Object, _: SystemTime) -> Value {
    Value::from(pod_summary(o).restarts)
}

fn node_status(o: &Object, _: SystemTime) -> Value {
    let ready = list(o, &["status", "conditions"]).iter().find(|c| c["type"] == "Ready").map(|c| c["status"] == "True");
    let mut status = match ready {
        Some(true) => "Ready".to_string(),
        Some(false) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if at(o, &["spec", "unschedulable"]) == Some(&Value::Bool(true)) {
        status.push_str(",SchedulingDisabled");
    }
    Value::String(status)
}

fn node_roles(o: &Object, _: SystemTime) -> Value {
    let roles: Vec<&str> = at(o, &["metadata", "labels"])
        .and_then(Value::as_object)
        .map(|labels| labels.keys().filter_map(|k| k.strip_prefix("node-role.kubernetes.io/")).collect())
        .unwrap_or_default();
    or_none(roles.join(","))
}

fn service_ports(o: &Object, _: SystemTime) -> Value {
    let ports: Vec<String> = list(o, &["spec", "ports"])
        .iter()
        .map(|p| {
            let protocol = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(node_port) => format!("{}:{node_port}/{protocol}", p["port"]),
                None => format!("{}/{protocol}", p["port"]),
            }
        })
        .collect();
    or_none(ports.join(","))
}

fn external_ip(o: &Object, _: SystemTime) -> Value {
    let mut ips: Vec<String> =
        list(o, &["spec", "externalIPs"]).iter().filter_map(|v| v.as_str().map(String::from)).collect();
    for ingress in list(o, &["status", "loadBalancer", "ingress"]) {
        if let Some(ip) = ingress["ip"].as_str().or(ingress["hostname"].as_str()) {
            ips.push(ip.into());
        }
    }
    match (ips.is_empty(), text(o, &["spec", "type"]).as_str()) {
        (true, "LoadBalancer") => "<pending>".into(),
        (true, _) => "<none>".into(),
        _ => Value::String(ips.join(",")),
    }
}

fn data_count(o: &Object, _: SystemTime) -> Value {
    let count = |field: &str| at(o, &[field]).and_then(Value::as_object).map_or(0, |m| m.len());
    Value::from(count("data") + count("binaryData"))
}

fn job_status(o: &Object, _: SystemTime) -> Value {
    let conditions = list(o, &["status", "conditions"]);
    let has = |kind: &str| conditions.iter().any(|c| c["type"] == kind && c["status"] == "True");
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if has("Suspended") {
        "Suspended"
    } else if at(o, &["metadata", "deletionTimestamp"]).is_some() {
        "Terminating"
    } else {
        "Running"
    };
    status.into()
}

/// The columns of `resource`'s Table, after NAME.
fn columns(resource: &Resource) -> Vec<Column> {
    let age = col("Age", "string", 0, age);
    match (resource.group, resource.kind) {
        ("", "Pod") => vec![
            col("Ready", "string", 0, pod_ready),
            col("Status", "string", 0, pod_status),
            col("Restarts", "string", 0, pod_restarts),
            age,
            col("IP", "string", 1, |o, _| or_none(text(o, &["status", "podIP"]))),
            col("Node", "string", 1, |o, _| or_none(text(o, &["spec", "nodeName"]))),
            col("Nominated Node", "string", 1, |o, _| or_none(text(o, &["status", "nominatedNodeName"]))),
            col("Readiness Gates", "string", 1, |o, _| match list(o, &["spec", "readinessGates"]).len() {
                0 => "<none>".into(),
                gates => Value::String(format!("0/{gates}")),
            }),
        ],
        ("apps", "Deployment") => vec![
            col("Ready", "string", 0, |o, _| {
                format!("{}/{}", int(o, &["status", "readyReplicas"]), int(o, &["spec", "replicas"])).into()
            }),
            col("Up-to-date", "integer", 0, |o, _| int(o, &["status", "updatedReplicas"]).into()),
            col("Available", "integer", 0, |o, _| int(o, &["status", "availableReplicas"]).into()),
            age,
            col("Containers", "string", 1, |o, _| containers(o, &["spec", "template", "spec", "containers"], "name")),
            col("Images", "string", 1, |o, _| containers(o, &["spec", "template", "spec", "containers"], "image")),
            col("Selector", "string", 1, |o, _| selector(o)),
        ],
        ("apps", "ReplicaSet") | ("", "ReplicationController") => vec![
            col("Desired", "integer", 0, |o, _| int(o, &["spec", "replicas"]).into()),
            col("Current", "integer", 0, |o, _| int(o, &["status", "replicas"]).into()),
            col("Ready", "integer", 0, |o, _| int(o, &["status", "readyReplicas"]).into()),
            age,
            col("Containers", "string", 1, |o, _| containers(o, &["spec", "template", "spec", "containers"], "name")),
            col("Images", "string", 1, |o, _| containers(o, &["spec", "template", "spec", "containers"], "image")),
            col("Selector", "string", 1, |o, _| selector(o)),
        ],
        ("apps", "StatefulSet") => vec![
            col("Ready", "string", 0, |o, _| {
                format!("{}/{}", int(o, &["status", "readyReplicas"]), int(o, &["spec", "replicas"])).into()
            }),
            age,
        ],
        ("apps", "DaemonSet") => vec![
            col("Desired", "integer", 0, |o, _| int(o, &["status", "desiredNumberScheduled"]).into()),
            col("Current", "integer", 0, |o, _| int(o, &["status", "currentNumberScheduled"]).into()),
            col("Ready", "integer", 0, |o, _| int(o, &["status", "numberReady"]).into()),
            col("Up-to-date", "integer", 0, |o, _| int(o, &["status", "updatedNumberScheduled"]).into()),
            col("Available", "integer", 0, |o, _| int(o, &["status", "numberAvailable"]).into()),
            age,
        ],
        ("batch", "Job") => vec![
            col("Status", "string", 0, job_status),
            col("Completions", "string", 0, |o, _| {
                let completions = at(o, &["spec", "completions"]).and_then(Value::as_i64).unwrap_or(1);
                format!("{}/{completions}", int(o, &["status", "succeeded"])).into()
            }),
            col("Duration", "string", 0, |o, now| {
                if at(o, &["status", "startTime"]).is_none() {
                    return "".into();
                }
                let end = at(o, &["status", "completionTime"])
                    .and_then(Value::as_str)
                    .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                    .unwrap_or(now);
                since(o, &["status", "startTime"], end).into()
            }),
            age,
        ],
        ("batch", "CronJob") => vec![
            col("Schedule", "string", 0, |o, _| text(o, &["spec", "schedule"]).into()),
            col("Timezone", "string", 0, |o, _| or_none(text(o, &["spec", "timeZone"]))),
            col("Suspend", "boolean", 0, |o, _| Value::Bool(at(o, &["spec", "suspend"]) == Some(&Value::Bool(true)))),
            col("Active", "integer", 0, |o, _| Value::from(list(o, &["status", "active"]).len())),
            col("Last Schedule", "string", 0, |o, now| {
                if at(o, &["status", "lastScheduleTime"]).is_none() {
                    return "<none>".into();
                }
                since(o, &["status", "lastScheduleTime"], now).into()
            }),
            age,
        ],
        ("", "Service") => vec![
            col("Type", "string", 0, |o, _| {
                let kind = text(o, &["spec", "type"]);
                Value::String(if kind.is_empty() { "ClusterIP".into() } else { kind })
            }),
            col("Cluster-IP", "string", 0, |o, _| or_none(text(o, &["spec", "clusterIP"]))),
            col("External-IP", "string", 0, external_ip),
            col("Port(s)", "string", 0, service_ports),
            age,
            col("Selector", "string", 1, |o, _| selector(o)),
        ],
        ("", "Node") => vec![
            col("Status", "string", 0, node_status),
            col("Roles", "string", 0, node_roles),
            age,
            col("Version", "string", 0, |o, _| text(o, &["status", "nodeInfo", "kubeletVersion"]).into()),
            col("Internal-IP", "string", 1, |o, _| {
                let address = list(o, &["status", "addresses"]).iter().find(|a| a["type"] == "InternalIP");
                or_none(address.and_then(|a| a["address"].as_str()).unwrap_or_default().into())
            }),
            col("OS-Image", "string", 1, |o, _| or_none(text(o, &["status", "nodeInfo", "osImage"]))),
        ],
        ("", "Namespace") => vec![col("Status", "string", 0, |o, _| text(o, &["status", "phase"]).into()), age],
        ("", "ConfigMap") => vec![col("Data", "integer", 0, data_count), age],
        ("", "Secret") => {
            vec![col("Type", "string", 0, |o, _| text(o, &["type"]).into()), col("Data", "integer", 0, data_count), age]
        }
        ("", "Endpoints") => vec![
            col("Endpoints", "string", 0, |o, _| {
                let mut endpoints = Vec::new();
                for subset in list(o, &["subsets"]) {
                    for address in subset["addresses"].as_array().into_iter().flatten() {
                        for port in subset["ports"].as_array().into_iter().flatten() {
                            endpoints.push(format!("{}:{}", address["ip"].as_str().unwrap_or_default(), port["port"]));
                        }
                    }
                }
                or_none(endpoints.join(","))
            }),
            age,
        ],
        ("coordination.k8s.io", "Lease") => {
            vec![col("Holder", "string", 0, |o, _| text(o, &["spec", "holderIdentity"]).into()), age]
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            vec![col("Created At", "date", 0, |o, _| text(o, &["metadata", "creationTimestamp"]).into())]
        }
        _ => vec![age],
    }
}

/// A `meta.k8s.io/v1` Table of `items`: a custom kind's own printer columns (from its
/// strategy), or kube-apiserver's columns for a built-in one.
pub(super) fn table(resource: &crate::registry::Resource, items: &[Object], revision: i64) -> Value {
    table_with(resource, resource.strategy().printer_columns(), items, revision)
}

/// [`table`] with `printer`, a custom kind's own columns, given.
fn table_with(resource: &Resource, printer: Option<&[PrinterColumn]>, items: &[Object], revision: i64) -> Value {
    if let Some(printer) = printer {
        return custom_table(resource, printer, items, revision);
    }
    let now = SystemTime::now();
    let columns = columns(resource);
    let mut definitions = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": format!("Name of the {}", resource.singular),
    })];
    definitions.extend(
        columns.iter().map(
            |c| json!({"name": c.name, "type": c.kind, "format": "", "description": c.name, "priority": c.priority}),
        ),
    );
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut cells = vec![name(item, now)];
            cells.extend(columns.iter().map(|c| (c.cell)(item, now)));
            row(item, cells)
        })
        .collect();
    table_of(definitions, rows, revision)
}

/// The Table of a custom kind: NAME, then its printer columns (or AGE when it has none),
/// as apiextensions-apiserver's table convertor builds it.
fn custom_table(resource: &Resource, printer: &[PrinterColumn], items: &[Object], revision: i64) -> Value {
    let now = SystemTime::now();
    let default_age = [PrinterColumn {
        name: "Age".into(),
        type_name: "date".into(),
        format: String::new(),
        description: "CreationTimestamp is a timestamp representing the server time when this object was created."
            .into(),
        priority: 0,
        json_path: ".metadata.creationTimestamp".into(),
    }];
    let printer = if printer.is_empty() { &default_age[..] } else { printer };
    let mut definitions = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": format!("Name of the {}", resource.singular),
    })];
    definitions.extend(printer.iter().map(|c| {
        json!({"name": c.name, "type": c.type_name, "format": c.format, "description": c.description, "priority": c.priority})
    }));
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut cells = vec![name(item, now)];
            for column in printer {
                let found = json_path(&Value::Object(item.clone()), &column.json_path).into_iter().next();
                cells.push(match (found, column.type_name.as_str()) {
                    (None, _) => Value::Null,
                    (Some(Value::String(t)), "date") => match humantime::parse_rfc3339_weak(&t) {
                        Ok(t) => Value::String(human_duration(now.duration_since(t).unwrap_or_default())),
                        Err(_) => Value::String(t),
                    },
                    (Some(Value::String(t)), _) => Value::String(t),
                    (Some(other), "string") => Value::String(match other {
                        Value::Array(_) | Value::Object(_) => other.to_string(),
                        _ => other.to_string().trim_matches('"').to_string(),
                    }),
                    (Some(other), _) => other,
                });
            }
            row(item, cells)
        })
        .collect();
    table_of(definitions, rows, revision)
}

/// The values a JSONPath of the kind printer columns use finds in `value`: `.a.b`,
/// `['a.b']`, `[0]`, `[*]` and `[?(@.key=="value")]` (also `!=`), optionally in `{...}`.
fn json_path(value: &Value, path: &str) -> Vec<Value> {
    let path = path.trim();
    let path = path.strip_prefix('{').and_then(|p| p.strip_suffix('}')).unwrap_or(path);
    let path = path.strip_prefix('$').unwrap_or(path);
    let mut current = vec![value.clone()];
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let key = &after[..end];
            rest = &after[end..];
            if key.is_empty() {
                continue;
            }
            current = current.iter().filter_map(|v| v.get(key).cloned()).collect();
        } else if let Some(after) = rest.strip_prefix('[') {
            let Some(end) = after.find(']') else { return Vec::new() };
            // A filter may hold ']' only inside its quotes; find the closing ")]".
            let (inner, next) = if after.starts_with("?(") {
                match after.find(")]") {
                    Some(close) => (&after[..close + 1], &after[close + 2..]),
                    None => return Vec::new(),
                }
            } else {
                (&after[..end], &after[end + 1..])
            };
            rest = next;
            current = step(&current, inner);
        } else {
            return Vec::new();
        }
    }
    current
}

fn step(current: &[Value], selector: &str) -> Vec<Value> {
    let unquote = |s: &str| s.trim().trim_matches(|c| c == '\'' || c == '"').to_string();
    if selector == "*" {
        return current
            .iter()
            .flat_map(|v| match v {
                Value::Array(items) => items.clone(),
                Value::Object(map) => map.values().cloned().collect(),
                _ => Vec::new(),
            })
            .collect();
    }
    if let Ok(index) = selector.trim().parse::<i64>() {
        return current
            .iter()
            .filter_map(|v| {
                let items = v.as_array()?;
                let at = if index < 0 { items.len() as i64 + index } else { index };
                usize::try_from(at).ok().and_then(|i| items.get(i)).cloned()
            })
            .collect();
    }
    if let Some(filter) = selector.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
        let (left, wanted, equal) = match (filter.split_once("=="), filter.split_once("!=")) {
            (Some((l, r)), _) => (l, Some(unquote(r)), true),
            (None, Some((l, r))) => (l, Some(unquote(r)), false),
            _ => (filter, None, true),
        };
        let Some(field) = left.trim().strip_prefix("@") else { return Vec::new() };
        return current
            .iter()
            .filter_map(Value::as_array)
            .flatten()
            .filter(|item| {
                let found = json_path(item, field).into_iter().next();
                match (&wanted, found) {
                    (None, found) => found.is_some(),
                    (Some(wanted), Some(found)) => {
                        let text = found.as_str().map_or_else(|| found.to_string(), str::to_owned);
                        (text == *wanted) == equal
                    }
                    (Some(_), None) => !equal,
                }
            })
            .cloned()
            .collect();
    }
    let key = unquote(selector);
    current.iter().filter_map(|v| v.get(&key).cloned()).collect()
}

/// One row: its cells, and the object's metadata (kubectl reads names and labels there).
pub(super) fn row(item: &Object, cells: Vec<Value>) -> Value {
    let metadata = item.get("metadata").cloned().unwrap_or_else(|| json!({}));
    json!({
        "cells": cells,
        "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata},
    })
}

pub(super) fn table_of(definitions: Vec<Value>, rows: Vec<Value>, revision: i64) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": revision.to_string()},
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

/// Kubernetes' `duration.HumanDuration`: 45s, 5m30s, 3h, 2d4h, 3y...
fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let pair = |big: u64, big_unit: &str, small: u64, small_unit: &str| {
        if small == 0 {
            format!("{big}{big_unit}")
        } else {
            format!("{big}{big_unit}{small}{small_unit}")
        }
    };
    match s {
        0..120 => format!("{s}s"),
        120..600 => pair(s / 60, "m", s % 60, "s"),
        600..10_800 => format!("{}m", s / 60),
        10_800..28_800 => pair(s / 3600, "h", (s % 3600) / 60, "m"),
        28_800..172_800 => format!("{}h", s / 3600),
        172_800..691_200 => pair(s / 86_400, "d", (s % 86_400) / 3600, "h"),
        691_200..63_072_000 => format!("{}d", s / 86_400),
        _ => format!("{}y", s / 31_536_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printer_column_paths_find_their_values() {
        let object = json!({"spec": {"replicas": 3, "items": [{"name": "a"}, {"name": "b"}], "odd.key": "x"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Synced", "status": "False"}]}});
        assert_eq!(json_path(&object, ".spec.replicas"), [json!(3)]);
        assert_eq!(json_path(&object, "{.spec.items[1].name}"), [json!("b")]);
        assert_eq!(json_path(&object, ".spec.items[*].name"), [json!("a"), json!("b")]);
        assert_eq!(json_path(&object, ".spec['odd.key']"), [json!("x")]);
        assert_eq!(json_path(&object, ".status.conditions[?(@.type==\"Synced\")].status"), [json!("False")]);
        assert_eq!(json_path(&object, ".status.conditions[?(@.type!='Ready')].type"), [json!("Synced")]);
        assert!(json_path(&object, ".spec.missing").is_empty());
    }

    #[test]
    fn human_durations_read_like_kubectl() {
        assert_eq!(human_duration(Duration::from_secs(45)), "45s");
        assert_eq!(human_duration(Duration::from_secs(300)), "5m");
        assert_eq!(human_duration(Duration::from_secs(330)), "5m30s");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600)), "3h");
        assert_eq!(human_duration(Duration::from_secs(3 * 86_400)), "3d");
    }

    #[test]
    fn pods_print_ready_status_and_restarts() {
        let pod: Object = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Pending", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 1, "state": {"waiting": {"reason": "ContainerCreating"}}},
            ]},
        }))
        .expect("pod");
        let resource = Resource {
            group: "",
            version: "v1",
            kind: "Pod",
            plural: "pods",
            singular: "pod",
            namespaced: true,
            short_names: &[],
            categories: &[],
            subresources: &[],
        };
        let table = table_with(&resource, None, &[pod], 1);
        assert_eq!(
            table["rows"][0]["cells"].as_array().unwrap()[..4],
            [json!("p"), json!("1/2"), json!("ContainerCreating"), json!(3)]
        );
        let headers: Vec<&str> =
            table["columnDefinitions"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(headers[..5], ["Name", "Ready", "Status", "Restarts", "Age"]);
    }
}
