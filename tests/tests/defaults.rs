//! Kubernetes' defaults and the fields Go always writes, through the real binary: a minimal
//! object of every built-in kind (`tests/defaults/minimal.json`) is created and read back;
//! each must hold the values kube-apiserver 1.33 gives it (`expect`, from what a real
//! kube-apiserver answers), and every field the generated table says Go always writes for
//! its kind.

use serde::Deserialize;
use serde_json::Value;
use wasmkube_tests::{Backend, Cluster};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    path: String,
    object: Value,
    /// Dotted paths (`spec.ports[0].protocol`) and the values found there.
    #[serde(default)]
    expect: serde_json::Map<String, Value>,
}

fn read_json(relative: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The value at `spec.containers[0].name`.
fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let mut at = value;
    for part in path.split('.') {
        let mut pieces = part.split('[');
        at = at.get(pieces.next()?)?;
        for index in pieces {
            at = at.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(at)
}

/// The OpenAPI definition of a kind, as the definitions file names it.
fn definition_of(definitions: &Value, api_version: &str, kind: &str) -> Option<String> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    definitions.as_object()?.iter().find_map(|(name, schema)| {
        let gvks = schema.get("x-kubernetes-group-version-kind")?.as_array()?;
        let matches =
            gvks.len() == 1 && gvks[0]["group"] == group && gvks[0]["version"] == version && gvks[0]["kind"] == kind;
        matches.then(|| name.clone())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minimal_object_of_every_kind_is_defaulted_as_kube_apiserver_defaults_it() {
    let cases: Vec<Case> = serde_json::from_value(read_json("defaults/minimal.json")).expect("the cases");
    let table = read_json("../host/openapi/k8s-1.33-defaults.json");
    let definitions = read_json("../host/openapi/k8s-1.33-definitions.json");
    // Without the example plugins, whose mutations (a pod's resources) are not the API's.
    let cluster = Cluster::start_with(Backend::Embedded, &["--no-default-plugins"]).await;

    // Every stored built-in kind has a case (CRDs are the custom-resource tests').
    let (_, discovery) = cluster.request(reqwest::Method::GET, "/api/v1", None).await;
    let core_kinds = discovery["resources"].as_array().expect("resources").iter().filter(|r| {
        !r["name"].as_str().unwrap_or("/").contains('/')
            && r["verbs"].as_array().is_some_and(|v| v.iter().any(|v| v == "create"))
    });
    for resource in core_kinds {
        let kind = &resource["kind"];
        assert!(
            cases.iter().any(|c| c.object["kind"] == *kind && c.object["apiVersion"] == "v1")
                || ["Binding", "ComponentStatus"].contains(&kind.as_str().unwrap_or_default()),
            "no minimal object of v1 {kind}"
        );
    }
    assert!(cases.len() >= 49, "every built-in kind but CustomResourceDefinition");

    let mut failures = Vec::new();
    for case in &cases {
        let (api_version, kind) =
            (case.object["apiVersion"].as_str().expect("apiVersion"), case.object["kind"].as_str().expect("kind"));
        let (code, created) = cluster.request(reqwest::Method::POST, &case.path, Some(case.object.clone())).await;
        if code != 201 {
            failures.push(format!("{api_version} {kind}: create answered {code} {created}"));
            continue;
        }
        let name = created["metadata"]["name"].as_str().expect("a name");
        let (code, stored) = cluster.request(reqwest::Method::GET, &format!("{}/{name}", case.path), None).await;
        assert_eq!(code, 200, "{stored}");
        for (path, expected) in &case.expect {
            if at(&stored, path) != Some(expected) {
                failures
                    .push(format!("{api_version} {kind} {path}: expected {expected}, stored {:?}", at(&stored, path)));
            }
        }
        let definition = definition_of(&definitions, api_version, kind).expect("a built-in kind");
        for field in table["definitions"][&definition]["always"].as_object().into_iter().flatten().map(|(f, _)| f) {
            if stored.get(field).is_none() {
                failures.push(format!("{api_version} {kind}: {field} is not written"));
            }
        }
    }
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
}
