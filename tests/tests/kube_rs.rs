//! kube-rs (`kube` 5 with `k8s-openapi` for 1.33) against wasmkube's in-process test
//! server (`wasmkube::testing::TestServer`): typed and dynamic APIs, merge, strategic and
//! apply patches,
//! server-side apply, and a `kube::runtime::watcher` that survives a compaction by
//! relisting on 410 Gone.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{ApiResource, Discovery};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Config, ResourceExt};
use serde_json::json;
use wasmkube::testing::TestServer;

async fn client(server: &TestServer) -> Client {
    let kubeconfig = Kubeconfig::read_from(server.kubeconfig()).expect("the kubeconfig the server wrote");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("config");
    Client::try_from(config).expect("client")
}

fn config_map(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    cm.data = Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>());
    cm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_and_dynamic_apis_and_every_patch_type() {
    let server = TestServer::start().await.expect("test server");
    let client = client(&server).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> =
        namespaces.list(&ListParams::default()).await.unwrap().iter().map(|n| n.name_any()).collect();
    assert!(names.contains(&"kube-system".to_string()), "{names:?}");

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = cms.create(&PostParams::default(), &config_map("a", &[("app", "web")], &[("k", "1")])).await.unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.resource_version.is_some());
    cms.create(&PostParams::default(), &config_map("b", &[("app", "db")], &[])).await.unwrap();
    let err = cms.create(&PostParams::default(), &config_map("a", &[], &[])).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"), "{err:?}");
    let web = cms.list(&ListParams::default().labels("app=web")).await.unwrap();
    assert_eq!(web.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(), ["a"]);

    let merge = Patch::Merge(json!({"data": {"m": "merge"}}));
    cms.patch("a", &PatchParams::default(), &merge).await.unwrap();
    let strategic = Patch::Strategic(json!({"data": {"s": "strategic"}}));
    cms.patch("a", &PatchParams::default(), &strategic).await.unwrap();
    let merge_again = Patch::Merge(json!({"data": {"k": "2"}}));
    cms.patch("a", &PatchParams::default(), &merge_again).await.unwrap();
    let applied =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"owned": "by-test"}});
    let after = cms.patch("a", &PatchParams::apply("kube-rs-test"), &Patch::Apply(applied)).await.unwrap();
    let data = after.data.unwrap();
    assert_eq!(
        data,
        [("k", "2"), ("m", "merge"), ("owned", "by-test"), ("s", "strategic")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    );
    let managers: Vec<String> =
        after.metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|m| m.manager).collect();
    assert!(managers.contains(&"kube-rs-test".to_string()), "{managers:?}");

    // A Deployment through the typed API, then read back dynamically.
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
    }))
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments.create(&PostParams::default(), &deployment).await.unwrap();
    let discovery = Discovery::new(client.clone()).run().await.expect("discovery");
    let (resource, _caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(r, _)| r.kind == "Deployment")
        .expect("deployments discovered");
    let dynamic: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
    let listed = dynamic.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].data["spec"]["replicas"], 2);
    let manual = ApiResource::erase::<ConfigMap>(&());
    let dynamic_cms: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &manual);
    assert_eq!(dynamic_cms.get("b").await.unwrap().name_any(), "b");

    // Metadata only (PartialObjectMetadata).
    let meta = cms.get_metadata("a").await.unwrap();
    assert_eq!(meta.metadata.name.as_deref(), Some("a"));
    assert_eq!(meta.types.as_ref().map(|t| t.kind.as_str()), Some("PartialObjectMetadata"));
    let metas = cms.list_metadata(&ListParams::default().labels("app=web")).await.unwrap();
    assert_eq!(metas.items.iter().map(|m| m.name_any()).collect::<Vec<_>>(), ["a"]);

    cms.delete("b", &DeleteParams::default()).await.unwrap();
    let err = cms.get("b").await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 404), "{err:?}");
    server.stop().await.expect("clean stop");
}

/// The watcher's next event, within a deadline.
async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<watcher::Event<ConfigMap>>) -> watcher::Event<ConfigMap> {
    tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("an event in time").expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_survives_a_compaction_by_relisting() {
    let server = TestServer::start().await.expect("test server");
    let client = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    // A selective watch without bookmarks, ended by the server every second: it
    // reconnects from the last resourceVersion it saw, and it sees none of the writes it
    // does not select, so a compaction after them leaves that version behind.
    let config = watcher::Config::default().labels("watched=yes").timeout(1).disable_bookmarks();
    let mut events = watcher(cms.clone(), config).default_backoff().boxed();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    let _ = tx.send(event);
                }
                Err(e) => eprintln!("watcher error (it retries): {e}"),
            }
        }
    });
    while !matches!(next(&mut rx).await, watcher::Event::InitDone) {}
    cms.create(&PostParams::default(), &config_map("before", &[("watched", "yes")], &[])).await.unwrap();
    loop {
        if let watcher::Event::Apply(cm) = next(&mut rx).await {
            assert_eq!(cm.name_any(), "before");
            break;
        }
    }
    for i in 0..3 {
        cms.create(&PostParams::default(), &config_map(&format!("unwatched-{i}"), &[], &[])).await.unwrap();
    }
    server.compact().await.expect("compaction");
    // The next reconnect is 410 Gone: the watcher lists again and sees what it selects.
    loop {
        if matches!(next(&mut rx).await, watcher::Event::Init) {
            break;
        }
    }
    let mut relisted = Vec::new();
    loop {
        match next(&mut rx).await {
            watcher::Event::InitApply(cm) => relisted.push(cm.name_any()),
            watcher::Event::InitDone => break,
            other => panic!("unexpected event during the relist: {other:?}"),
        }
    }
    assert_eq!(relisted, ["before"]);
    // And it keeps watching after the relist.
    cms.create(&PostParams::default(), &config_map("after", &[("watched", "yes")], &[])).await.unwrap();
    loop {
        if let watcher::Event::Apply(cm) = next(&mut rx).await {
            assert_eq!(cm.name_any(), "after");
            break;
        }
    }
    server.stop().await.expect("clean stop");
}

/// What kube-rs users hit first: server-side apply of a partial object without a name
/// (the name is the URL's), a new pod's status (Pending, with its QoS class), and
/// ComponentStatus as an always-there cluster-scoped object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_applies_pod_status_and_component_statuses() {
    use k8s_openapi::api::core::v1::{ComponentStatus, Pod};
    let server = TestServer::start().await.expect("test server");
    let client = client(&server).await;

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let partial = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"from": "partial"}});
    let applied = cms.patch("unnamed", &PatchParams::apply("kube-rs-test"), &Patch::Apply(&partial)).await.unwrap();
    assert_eq!(applied.name_any(), "unnamed");
    assert_eq!(applied.data.unwrap_or_default().get("from").map(String::as_str), Some("partial"));
    let mismatched = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}});
    let err = cms.patch("unnamed", &PatchParams::apply("kube-rs-test"), &Patch::Apply(&mismatched)).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 400), "a name unlike the URL's is still refused: {err:?}");

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let guaranteed: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "g"},
        "spec": {"containers": [{"name": "c", "image": "app:1",
            "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}]}}))
    .unwrap();
    let created = pods.create(&PostParams::default(), &guaranteed).await.unwrap();
    let status = created.status.expect("a new pod has a status");
    assert_eq!((status.phase.as_deref(), status.qos_class.as_deref()), (Some("Pending"), Some("Guaranteed")));
    let best_effort: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b"},
        "spec": {"containers": [{"name": "c", "image": "app:1"}]}, "status": {"phase": "Running"}}))
    .unwrap();
    let created = pods.create(&PostParams::default(), &best_effort).await.unwrap();
    // The QoS class is the admitted pod's: the default `defaults` plugin may have given it
    // resources (then Burstable).
    let resources = created.spec.as_ref().and_then(|s| s.containers[0].resources.clone()).unwrap_or_default();
    let asked = resources.requests.is_some_and(|r| !r.is_empty()) || resources.limits.is_some_and(|l| !l.is_empty());
    let status = created.status.expect("a status");
    assert_eq!(
        (status.phase.as_deref(), status.qos_class.as_deref()),
        (Some("Pending"), Some(if asked { "Burstable" } else { "BestEffort" })),
        "the creator's status is not taken"
    );

    let statuses: Api<ComponentStatus> = Api::all(client.clone());
    let names: Vec<String> =
        statuses.list(&ListParams::default()).await.unwrap().iter().map(|c| c.name_any()).collect();
    assert_eq!(names, ["scheduler", "controller-manager", "etcd-0"]);
    let etcd = statuses.get("etcd-0").await.unwrap();
    let healthy = etcd.conditions.unwrap_or_default();
    assert_eq!(healthy.first().map(|c| (c.type_.as_str(), c.status.as_str())), Some(("Healthy", "True")));
    let err = statuses.get("nothing").await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 404), "{err:?}");

    // Discovery with a trailing slash, as some clients build its URLs.
    for (path, kind) in [("/api/", "APIVersions"), ("/apis/", "APIGroupList")] {
        let request = http::Request::get(path).body(Vec::new()).unwrap();
        let text = client.request_text(request).await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["kind"], kind, "{path}: {answer}");
    }
}
