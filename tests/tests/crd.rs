//! CustomResourceDefinitions as real kubectl sees them, on both storage backends: a CRD
//! is Established and its resources served at once (discovery, OpenAPI for `explain`,
//! schema validation, defaults and pruning, status and scale subresources, printer
//! columns, several versions, namespaced and cluster scope), and deleting it removes its
//! custom resources.

use std::time::Duration;

use serde_json::{json, Value};
use wasmkube_tests::{on_both_backends, wait_for, Backend, Cluster, KUBECTLS};

const CRONTABS: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names: {plural: crontabs, singular: crontab, kind: CronTab, shortNames: [ct], categories: [all]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas, labelSelectorPath: .status.selector}
    additionalPrinterColumns:
    - {name: Spec, type: string, jsonPath: .spec.cronSpec}
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    - {name: Image, type: string, priority: 1, jsonPath: .spec.image}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: What the crontab runs, and when.
            required: [cronSpec]
            properties:
              cronSpec: {type: string, pattern: '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$', description: The schedule.}
              image: {type: string, default: busybox}
              replicas: {type: integer, minimum: 0, maximum: 10, default: 1}
              mode: {type: string, enum: [Fast, Slow]}
          status:
            type: object
            properties:
              replicas: {type: integer}
              selector: {type: string}
              conditions:
                type: array
                items:
                  type: object
                  properties: {type: {type: string}, status: {type: string}}
  - name: v1beta1
    served: true
    storage: false
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

const WIDGETS: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.things.example.org
spec:
  group: things.example.org
  scope: Cluster
  names: {plural: widgets, kind: Widget}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
";

const MY_CRONTAB: &str = "apiVersion: stable.example.com/v1
kind: CronTab
metadata: {name: nightly, labels: {team: a}}
spec: {cronSpec: '0 3 * * *', replicas: 2}
";

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// Run kubectl and insist it succeeds; its stdout.
fn ok(cluster: &Cluster, kubectl: &str, args: &[&str]) -> String {
    let (ok, out, err) = cluster.kubectl(kubectl, args);
    assert!(ok, "{kubectl} {args:?} failed: {err}\n{out}");
    out
}

/// Run kubectl and insist it fails; its stderr.
fn fails(cluster: &Cluster, kubectl: &str, args: &[&str]) -> String {
    let (ok, out, err) = cluster.kubectl(kubectl, args);
    assert!(!ok, "{kubectl} {args:?} should have failed:\n{out}");
    err
}

async fn kubectl_serves_custom_resources(backend: Backend) {
    let cluster = Cluster::start_on(backend).await;
    let crd = write(cluster.dir.path(), "crontabs.yaml", CRONTABS);
    let widgets = write(cluster.dir.path(), "widgets.yaml", WIDGETS);
    let mine = write(cluster.dir.path(), "nightly.yaml", MY_CRONTAB);
    for kubectl in KUBECTLS {
        ok(&cluster, kubectl, &["apply", "-f", &crd]);
        ok(&cluster, kubectl, &["apply", "-f", &widgets]);
        ok(
            &cluster,
            kubectl,
            &[
                "wait",
                "--for=condition=Established",
                "crd/crontabs.stable.example.com",
                "crd/widgets.things.example.org",
                "--timeout=30s",
            ],
        );
        let out = ok(&cluster, kubectl, &["api-resources", "--api-group=stable.example.com"]);
        assert!(
            out.lines().any(|l| l.starts_with("crontabs")
                && l.contains("ct")
                && l.contains("stable.example.com/v1")
                && l.contains("true")),
            "{out}"
        );

        // Create with defaults filled; the Table has the printer columns.
        ok(&cluster, kubectl, &["apply", "-f", &mine]);
        assert_eq!(ok(&cluster, kubectl, &["get", "ct", "nightly", "-o", "jsonpath={.spec.image}"]), "busybox");
        let out = ok(&cluster, kubectl, &["get", "crontabs"]);
        let header: Vec<&str> = out.lines().next().unwrap_or_default().split_whitespace().collect();
        assert_eq!(header, ["NAME", "SPEC", "REPLICAS", "READY", "AGE"], "{out}");
        assert!(out.lines().any(|l| l.starts_with("nightly") && l.contains("0 3 * * *") && l.contains(" 2 ")), "{out}");
        let wide = ok(&cluster, kubectl, &["get", "ct", "-o", "wide"]);
        assert!(wide.lines().next().unwrap_or_default().contains("IMAGE") && wide.contains("busybox"), "{wide}");
        assert!(ok(&cluster, kubectl, &["get", "all"]).contains("crontab.stable.example.com/nightly"));

        // A second apply with a change (client-side apply patches custom resources by merge patch).
        let changed = MY_CRONTAB.replace("replicas: 2", "replicas: 4");
        ok(&cluster, kubectl, &["apply", "-f", &write(cluster.dir.path(), "nightly2.yaml", &changed)]);
        assert_eq!(ok(&cluster, kubectl, &["get", "ct", "nightly", "-o", "jsonpath={.spec.replicas}"]), "4");
        ok(&cluster, kubectl, &["label", "ct", "nightly", "tier=gold"]);
        ok(&cluster, kubectl, &["patch", "ct", "nightly", "--type=merge", "-p", r#"{"spec":{"mode":"Fast"}}"#]);
        ok(
            &cluster,
            kubectl,
            &[
                "patch",
                "ct",
                "nightly",
                "--type=json",
                "-p",
                r#"[{"op":"replace","path":"/spec/cronSpec","value":"*/5 * * * *"}]"#,
            ],
        );
        let object: Value =
            serde_json::from_str(&ok(&cluster, kubectl, &["get", "ct", "nightly", "-o", "json"])).unwrap();
        assert_eq!(object["metadata"]["labels"], json!({"team": "a", "tier": "gold"}));
        assert_eq!(object["spec"]["mode"], "Fast");
        assert_eq!(object["spec"]["cronSpec"], "*/5 * * * *");
        assert_eq!(object["metadata"]["generation"], 4, "spec changes count: {object}");

        // Validation from the schema: every problem named.
        let err = fails(
            &cluster,
            kubectl,
            &[
                "patch",
                "ct",
                "nightly",
                "--type=merge",
                "-p",
                r#"{"spec":{"replicas":11,"mode":"Odd","cronSpec":"never"}}"#,
            ],
        );
        assert!(err.contains("spec.replicas") && err.contains("less than or equal to 10"), "{err}");
        assert!(err.contains("spec.mode") && err.contains("Unsupported value"), "{err}");
        assert!(err.contains("spec.cronSpec") && err.contains("should match"), "{err}");
        let missing = "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: broken}\nspec: {image: x}\n";
        let err = fails(&cluster, kubectl, &["create", "-f", &write(cluster.dir.path(), "broken.yaml", missing)]);
        assert!(err.contains("spec.cronSpec") && err.contains("Required value"), "{err}");
        // Unknown fields: refused under strict validation, pruned otherwise.
        let extra = "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: extra}\nspec: {cronSpec: '* * * * *', bogus: 1}\n";
        let extra = write(cluster.dir.path(), "extra.yaml", extra);
        let err = fails(&cluster, kubectl, &["create", "-f", &extra]);
        assert!(err.contains("bogus"), "{err}");
        ok(&cluster, kubectl, &["create", "-f", &extra, "--validate=false"]);
        let pruned: Value =
            serde_json::from_str(&ok(&cluster, kubectl, &["get", "ct", "extra", "-o", "json"])).unwrap();
        assert!(pruned["spec"].get("bogus").is_none(), "{pruned}");
        ok(&cluster, kubectl, &["delete", "ct", "extra"]);

        // The status and scale subresources.
        ok(
            &cluster,
            kubectl,
            &[
                "patch",
                "ct",
                "nightly",
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"replicas":4,"selector":"team=a","conditions":[{"type":"Ready","status":"True"}]}}"#,
            ],
        );
        ok(&cluster, kubectl, &["patch", "ct", "nightly", "--type=merge", "-p", r#"{"status":{"replicas":99}}"#]);
        assert_eq!(
            ok(&cluster, kubectl, &["get", "ct", "nightly", "-o", "jsonpath={.status.replicas}"]),
            "4",
            "status is written through its subresource only"
        );
        assert!(ok(&cluster, kubectl, &["get", "ct", "nightly"]).lines().any(|l| l.contains("True")));
        ok(&cluster, kubectl, &["scale", "ct", "nightly", "--replicas=7"]);
        assert_eq!(ok(&cluster, kubectl, &["get", "ct", "nightly", "-o", "jsonpath={.spec.replicas}"]), "7");
        let (code, scale) = cluster
            .request(
                reqwest::Method::GET,
                "/apis/stable.example.com/v1/namespaces/default/crontabs/nightly/scale",
                None,
            )
            .await;
        assert_eq!(code, 200, "{scale}");
        assert_eq!(
            (scale["kind"].as_str(), &scale["spec"]["replicas"], &scale["status"]),
            (Some("Scale"), &json!(7), &json!({"replicas": 4, "selector": "team=a"}))
        );

        // Another served version sees the same object in its own apiVersion.
        let beta = ok(
            &cluster,
            kubectl,
            &["get", "crontabs.v1beta1.stable.example.com", "nightly", "-o", "jsonpath={.apiVersion} {.spec.cronSpec}"],
        );
        assert_eq!(beta, "stable.example.com/v1beta1 */5 * * * *");

        // explain reads the CRD's schema from OpenAPI v3.
        let out = ok(&cluster, kubectl, &["explain", "crontab.spec"]);
        assert!(out.contains("cronSpec") && out.contains("What the crontab runs"), "{out}");

        // Server-side apply and a cluster-scoped kind without printer columns (NAME, AGE).
        let widget = "apiVersion: things.example.org/v1alpha1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3, anything: [1, 2]}\n";
        ok(&cluster, kubectl, &["apply", "--server-side", "-f", &write(cluster.dir.path(), "w1.yaml", widget)]);
        let out = ok(&cluster, kubectl, &["get", "widgets"]);
        assert_eq!(
            out.lines().next().unwrap_or_default().split_whitespace().collect::<Vec<_>>(),
            ["NAME", "AGE"],
            "{out}"
        );
        assert_eq!(ok(&cluster, kubectl, &["get", "widget", "w1", "-o", "jsonpath={.spec.anything}"]), "[1,2]");
        let managers = ok(
            &cluster,
            kubectl,
            &["get", "widget", "w1", "--show-managed-fields", "-o", "jsonpath={.metadata.managedFields[*].manager}"],
        );
        assert_eq!(managers, "kubectl");

        // Deleting a CRD deletes its custom resources and stops serving them.
        ok(
            &cluster,
            kubectl,
            &["delete", "crd", "crontabs.stable.example.com", "widgets.things.example.org", "--timeout=60s"],
        );
        let err = fails(&cluster, kubectl, &["get", "crontabs"]);
        // Depending on kubectl's discovery cache: not discovered, or discovered and not found.
        assert!(
            err.contains("the server doesn't have a resource type \"crontabs\"") || err.contains("NotFound"),
            "{err}"
        );
        let (code, _) = cluster.request(reqwest::Method::GET, "/apis/stable.example.com/v1/crontabs", None).await;
        assert_eq!(code, 404);
    }
    // The custom resources went with their CRDs: nothing comes back with a new CRD of the same name.
    let first = KUBECTLS[0];
    ok(&cluster, first, &["apply", "-f", &crd]);
    ok(&cluster, first, &["wait", "--for=condition=Established", "crd/crontabs.stable.example.com", "--timeout=30s"]);
    assert_eq!(ok(&cluster, first, &["get", "ct", "-A", "-o", "name"]), "");
}

on_both_backends!(kubectl_serves_custom_resources);

/// Through the HTTP API: a bad CRD is refused with every problem named; a watch through
/// a second version streams that version; a CRD's resources are discovered in both
/// discovery formats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_over_http() {
    let cluster = Cluster::start().await;
    let bad = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "wrong.example.com"},
        "spec": {"group": "example.com", "scope": "Somewhere", "names": {"plural": "things", "kind": "Thing"},
            "versions": [{"name": "v1", "served": true, "storage": false}]}});
    let (code, status) = cluster
        .request(reqwest::Method::POST, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", Some(bad))
        .await;
    assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")), "{status}");
    let fields: Vec<&str> =
        status["details"]["causes"].as_array().unwrap().iter().filter_map(|c| c["field"].as_str()).collect();
    for field in ["metadata.name", "spec.scope", "spec.versions", "spec.versions[0].schema.openAPIV3Schema"] {
        assert!(fields.contains(&field), "{field} not named in {status}");
    }

    let crd: Value = serde_yaml_ng::from_str(CRONTABS).unwrap();
    let (code, body) = cluster
        .request(reqwest::Method::POST, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", Some(crd))
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["metadata"]["finalizers"], json!(["customresourcecleanup.apiextensions.k8s.io"]));
    let established = wait_for("the CRD to be Established", Duration::from_secs(20), || async {
        let (_, crd) = cluster
            .request(
                reqwest::Method::GET,
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/crontabs.stable.example.com",
                None,
            )
            .await;
        let conditions = crd["status"]["conditions"].as_array().cloned().unwrap_or_default();
        conditions.iter().any(|c| c["type"] == "Established" && c["status"] == "True").then_some(crd)
    })
    .await;
    assert_eq!(established["status"]["acceptedNames"]["kind"], "CronTab");
    assert_eq!(established["status"]["storedVersions"], json!(["v1"]));

    let (code, group) = cluster.request(reqwest::Method::GET, "/apis/stable.example.com", None).await;
    assert_eq!(code, 200);
    assert_eq!(group["preferredVersion"]["version"], "v1");
    assert_eq!(group["versions"].as_array().map(Vec::len), Some(2), "{group}");

    // A watch through v1beta1 sees an object created through v1 as v1beta1.
    let url = format!(
        "{}/apis/stable.example.com/v1beta1/namespaces/default/crontabs?watch=1&timeoutSeconds=10",
        cluster.api.base
    );
    let mut watch = cluster.api.client.get(url).send().await.expect("watch");
    assert_eq!(watch.status().as_u16(), 200);
    let object = json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "w"}, "spec": {"cronSpec": "* * * * *"}});
    let (code, created) = cluster
        .request(reqwest::Method::POST, "/apis/stable.example.com/v1/namespaces/default/crontabs", Some(object))
        .await;
    assert_eq!(code, 201, "{created}");
    let mut buffer = Vec::new();
    let line = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = watch.chunk().await.expect("watch chunk") {
            buffer.extend_from_slice(&chunk);
            if let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                return serde_json::from_slice::<Value>(&buffer[..end]).expect("a JSON line");
            }
        }
        panic!("the watch ended without an event");
    })
    .await
    .expect("a watch event within 10 s");
    assert_eq!(line["type"], "ADDED");
    assert_eq!(line["object"]["apiVersion"], "stable.example.com/v1beta1");
    assert_eq!(line["object"]["spec"]["replicas"], 1, "defaulted: {line}");

    // A strategic merge patch is refused for custom resources, as kube-apiserver does.
    let response = cluster
        .api
        .client
        .patch(format!("{}/apis/stable.example.com/v1/namespaces/default/crontabs/w", cluster.api.base))
        .header("content-type", "application/strategic-merge-patch+json")
        .body(r#"{"spec":{"replicas":2}}"#)
        .send()
        .await
        .expect("patch");
    assert_eq!(response.status().as_u16(), 415);
}
