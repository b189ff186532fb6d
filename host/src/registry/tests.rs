//! The generic store on a real embedded store in a temp dir: conflicts, the no-op update,
//! finalizers, dry run, continue tokens, retired handles, and the Service hooks (what a
//! write that fails half way had reserved is released).

use serde_json::{json, Value};

use super::testing::TestRegistry as Fixture;
use super::*;

async fn fixture() -> Fixture {
    Fixture::start().await
}

impl Fixture {
    fn resource(&self, group: &str, plural: &str) -> Resource {
        self.registry.resource(group, "v1", plural).expect("served")
    }

    async fn revision(&self) -> Revision {
        self.store.current_revision().await.expect("revision")
    }

    async fn create(&self, plural: &str, body: Value) -> Result<Object> {
        let resource = self.resource("", plural);
        self.registry.create(&resource, Some("default"), body, &WriteOptions::default()).await.map(|w| w.object)
    }

    async fn names(&self, group: &str, plural: &str) -> Vec<String> {
        let resource = self.resource(group, plural);
        let namespace = resource.namespaced.then_some("default");
        let list = self.registry.list(&resource, namespace, ListOptions::default()).await.expect("list");
        list.items.iter().map(|o| o["metadata"]["name"].as_str().unwrap_or_default().to_string()).collect()
    }
}

fn rv(object: &Object) -> String {
    object["metadata"]["resourceVersion"].as_str().expect("resourceVersion").to_string()
}

fn config_map(name: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": value}})
}

#[tokio::test]
async fn a_stale_update_is_a_conflict_and_an_unpinned_one_goes_over_the_latest() {
    let f = fixture().await;
    let cms = f.resource("", "configmaps");
    let first = f.create("configmaps", config_map("c", "1")).await.expect("create");
    let options = WriteOptions::default();
    let second =
        f.registry.update(&cms, Some("default"), "c", config_map("c", "2"), None, &options).await.expect("update");
    assert_ne!(rv(&first), rv(&second.object));
    let mut stale = config_map("c", "3");
    stale["metadata"]["resourceVersion"] = json!(rv(&first));
    match f.registry.update(&cms, Some("default"), "c", stale, None, &options).await {
        Err(Error::Conflict { message, .. }) => assert!(message.contains("has been modified"), "{message}"),
        other => panic!("a stale resourceVersion must conflict: {other:?}"),
    }
    let stored = f.registry.get(&cms, Some("default"), "c").await.expect("get");
    assert_eq!(stored["data"]["k"], "2", "the conflicting write changed nothing");
}

#[tokio::test]
async fn an_unchanged_update_writes_nothing_unless_a_rewrite_is_asked_for() {
    let f = fixture().await;
    let cms = f.resource("", "configmaps");
    let created = f.create("configmaps", config_map("same", "v")).await.expect("create");
    let before = f.revision().await;
    assert_eq!(rv(&created), before.to_string());
    let watch = f.registry.watch(&cms, Some("default"), before, false, Selectors::default()).await.expect("watch");
    let options = WriteOptions { field_manager: Some("someone".into()), ..WriteOptions::default() };
    let same = || config_map("same", "v");
    // A new manager may be recorded in managedFields (a write); after that, only its
    // timestamp would change.
    f.registry.update(&cms, Some("default"), "same", same(), None, &options).await.expect("update");
    let settled = f.revision().await;
    assert!(settled - before <= 1, "at most the manager's entry was written");
    let unchanged = f.registry.update(&cms, Some("default"), "same", same(), None, &options).await.expect("update");
    assert_eq!(f.revision().await, settled, "an unchanged update must not write");
    assert_eq!(rv(&unchanged.object), settled.to_string(), "a no-op answers with the stored object");
    let merge = Patch::Merge(json!({"data": {"k": "v"}}));
    let patched = f.registry.patch(&cms, Some("default"), "same", merge, None, &options).await.expect("patch");
    assert_eq!(f.revision().await, settled, "an unchanged patch must not write");
    assert_eq!(rv(&patched.object), settled.to_string());
    let rewrite = WriteOptions { rewrite: true, ..options.clone() };
    let rewritten = f.registry.update(&cms, Some("default"), "same", same(), None, &rewrite).await.expect("rewrite");
    let last = f.revision().await;
    assert_eq!(last, settled + 1, "a rewrite writes");
    assert_eq!(rv(&rewritten.object), last.to_string());
    // The watch saw the writes that changed something and the rewrite, nothing else.
    use futures::StreamExt;
    let mut watch = Box::pin(watch);
    let mut seen = Vec::new();
    while seen.last() != Some(&last) {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), watch.next()).await;
        match event.expect("the rewrite's event arrives").expect("the watch goes on") {
            WatchEvent::Change(change) => {
                let object = change.object().expect("an object");
                let revision = object["metadata"]["resourceVersion"].as_str().unwrap_or_default();
                assert_eq!(revision.parse::<Revision>().expect("a revision"), change.revision());
                seen.push(change.revision());
            }
            other => panic!("{other:?}"),
        }
    }
    let expected: Vec<Revision> = (before + 1..=last).collect();
    assert_eq!(seen, expected, "one event per real write");
}

#[tokio::test]
async fn a_finalizer_holds_a_deleted_object_until_it_is_removed() {
    let f = fixture().await;
    let cms = f.resource("", "configmaps");
    let mut body = config_map("held", "v");
    body["metadata"]["finalizers"] = json!(["example.com/hold"]);
    f.create("configmaps", body).await.expect("create");
    let marked = f.registry.delete(&cms, Some("default"), "held", &DeleteOptions::default()).await.expect("delete");
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    let stored = f.registry.get(&cms, Some("default"), "held").await.expect("still there");
    assert_eq!(rv(&stored), rv(&marked), "the delete answers with the marked object as stored");
    let mut more = Value::Object(stored.clone());
    more["metadata"]["finalizers"] = json!(["example.com/hold", "example.com/other"]);
    match f.registry.update(&cms, Some("default"), "held", more, None, &WriteOptions::default()).await {
        Err(Error::Invalid { causes, .. }) => assert_eq!(causes[0].field, "metadata.finalizers"),
        other => panic!("no finalizer may be added while deleting: {other:?}"),
    }
    let mut released = Value::Object(stored);
    released["metadata"]["finalizers"] = json!([]);
    f.registry.update(&cms, Some("default"), "held", released, None, &WriteOptions::default()).await.expect("release");
    assert!(matches!(f.registry.get(&cms, Some("default"), "held").await, Err(Error::NotFound { .. })));
}

#[tokio::test]
async fn a_dry_run_stores_nothing() {
    let f = fixture().await;
    let cms = f.resource("", "configmaps");
    let before = f.revision().await;
    let dry = WriteOptions { dry_run: true, ..WriteOptions::default() };
    let answer = f.registry.create(&cms, Some("default"), config_map("dry", "v"), &dry).await.expect("dry create");
    assert_eq!(answer.object["data"]["k"], "v");
    assert!(matches!(f.registry.get(&cms, Some("default"), "dry").await, Err(Error::NotFound { .. })));
    f.create("configmaps", config_map("wet", "v")).await.expect("create");
    let after_create = f.revision().await;
    f.registry.update(&cms, Some("default"), "wet", config_map("wet", "w"), None, &dry).await.expect("dry update");
    let dry_delete = DeleteOptions { dry_run: true, ..DeleteOptions::default() };
    f.registry.delete(&cms, Some("default"), "wet", &dry_delete).await.expect("dry delete");
    assert_eq!(f.revision().await, after_create, "dry runs write nothing");
    assert_eq!(before + 1, after_create);
    assert_eq!(f.registry.get(&cms, Some("default"), "wet").await.expect("get")["data"]["k"], "v");
}

#[tokio::test]
async fn the_pages_of_a_list_read_the_first_pages_revision() {
    let f = fixture().await;
    let cms = f.resource("", "configmaps");
    for i in 0..5 {
        f.create("configmaps", config_map(&format!("c{i}"), "v")).await.expect("create");
    }
    let page = |token: Option<String>| ListOptions { limit: 2, continue_token: token, ..ListOptions::default() };
    let first = f.registry.list(&cms, Some("default"), page(None)).await.expect("first page");
    assert_eq!(first.items.len(), 2);
    // Written between pages: not in this list.
    f.create("configmaps", config_map("c9", "v")).await.expect("create");
    let mut names: Vec<String> = first.items.iter().map(|o| o["metadata"]["name"].as_str().unwrap().into()).collect();
    let mut token = first.continue_token;
    while let Some(t) = token {
        let next = f.registry.list(&cms, Some("default"), page(Some(t))).await.expect("next page");
        assert_eq!(next.resource_version, first.resource_version, "every page at one revision");
        names.extend(next.items.iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_string()));
        token = next.continue_token;
    }
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);
    let foreign = ListOptions { continue_token: Some("garbage".into()), ..ListOptions::default() };
    assert!(matches!(f.registry.list(&cms, Some("default"), foreign).await, Err(Error::BadRequest(_))));
}

fn service(name: &str, cluster_ip: Option<&str>, node_port: Option<u16>) -> Value {
    let mut port = json!({"port": 80});
    if let Some(node_port) = node_port {
        port["nodePort"] = json!(node_port);
    }
    let mut spec = json!({"type": "NodePort", "ports": [port]});
    if let Some(ip) = cluster_ip {
        spec["clusterIP"] = json!(ip);
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn a_service_write_that_fails_half_way_leaks_no_address() {
    let f = fixture().await;
    f.create("services", service("first", None, Some(30100))).await.expect("create");
    let held = f.names("networking.k8s.io", "ipaddresses").await;
    // Its cluster IP is claimed, then its node port clashes: the IP goes back.
    match f.create("services", service("second", Some("10.96.0.50"), Some(30100))).await {
        Err(Error::Invalid { causes, .. }) => assert!(causes[0].message.contains("already allocated"), "{causes:?}"),
        other => panic!("a node port in use must be refused: {other:?}"),
    }
    assert_eq!(f.names("networking.k8s.io", "ipaddresses").await, held, "the claimed IP was released");
    // Claims made, then validation refuses the Service: both go back.
    // (A Service's name is a DNS-1035 label: no leading digit.)
    let invalid = service("9th", Some("10.96.0.51"), Some(30101));
    match f.create("services", invalid).await {
        Err(Error::Invalid { causes, .. }) => assert_eq!(causes[0].field, "metadata.name", "{causes:?}"),
        other => panic!("an invalid name must be refused: {other:?}"),
    }
    assert_eq!(f.names("networking.k8s.io", "ipaddresses").await, held);
    // So both are free for the next Service.
    let fourth = f.create("services", service("fourth", Some("10.96.0.51"), Some(30101))).await.expect("create");
    assert_eq!(fourth["spec"]["clusterIP"], "10.96.0.51");
    assert!(f.names("networking.k8s.io", "ipaddresses").await.contains(&"10.96.0.51".to_string()));
    let address =
        f.registry.get(&f.resource("networking.k8s.io", "ipaddresses"), None, "10.96.0.51").await.expect("ip");
    assert_eq!(address["spec"]["parentRef"]["name"], "fourth");
    assert!(address["metadata"]["uid"].is_string(), "written through the create path");
}

#[tokio::test]
async fn a_service_gives_back_what_an_update_drops_and_everything_when_deleted() {
    let f = fixture().await;
    let services = f.resource("", "services");
    let created = f.create("services", service("s", None, Some(30200))).await.expect("create");
    let ip = created["spec"]["clusterIP"].as_str().expect("allocated").to_string();
    let mut cluster_ip = Value::Object(created.clone());
    cluster_ip["spec"]["type"] = json!("ClusterIP");
    cluster_ip["spec"]["ports"] = json!([{"port": 80}]);
    f.registry
        .update(&services, Some("default"), "s", cluster_ip, None, &WriteOptions::default())
        .await
        .expect("update");
    // The node port is free again: another Service may take it.
    f.create("services", service("t", None, Some(30200))).await.expect("the dropped node port is free");
    f.registry.delete(&services, Some("default"), "s", &DeleteOptions::default()).await.expect("delete");
    assert!(!f.names("networking.k8s.io", "ipaddresses").await.contains(&ip), "the deleted Service's IP is released");
}

#[tokio::test]
async fn a_handle_follows_its_crd() {
    let f = fixture().await;
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}});
    let Value::Object(crd) = crd else { unreachable!() };
    f.registry.serve_custom(&crd).expect("served");
    let widgets = f.registry.resource("example.com", "v1", "widgets").expect("served");
    let body = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}});
    f.registry.create(&widgets, Some("default"), body, &WriteOptions::default()).await.expect("create");
    f.registry.unserve_custom("widgets.example.com");
    assert!(matches!(f.registry.get_cached(&widgets, Some("default"), "w").await, Err(Error::NotFound { .. })));
    f.registry.serve_custom(&crd).expect("served again");
    let widget = f.registry.get_cached(&widgets, Some("default"), "w").await.expect("the old handle resolves again");
    assert_eq!(widget["metadata"]["name"], "w");
}
