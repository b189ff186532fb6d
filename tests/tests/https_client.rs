//! The HTTPS client, what a node agent in its own process (`wasmkube node`) reaches the API
//! with, against the real server: the verbs with the registry's errors (so callers match
//! them as in-process), and an informer that lists and watches over it.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use wasmkube::client::{Client, HttpsClient};
use wasmkube::machinery::informer::{Informers, ObjectRef};
use wasmkube::registry::{DeleteOptions, Error, Patch, WriteOptions};
use wasmkube_tests::{wait_for, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_https_client_speaks_the_verbs_and_an_informer_runs_over_it() {
    let cluster = Cluster::start().await;
    let client: Arc<dyn Client> = Arc::new(HttpsClient::new(&cluster.api.base, cluster.api.client.clone()));
    let maps = client.resource("", "v1", "configmaps").expect("configmaps are named");
    let options = WriteOptions { field_manager: Some("https-test".into()), ..WriteOptions::default() };
    let map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "1"}});
    let created = client.create(&maps, Some("default"), map.clone(), &options).await.expect("created");
    assert!(created.object["metadata"]["uid"].is_string());
    let again = client.create(&maps, Some("default"), map, &options).await.unwrap_err();
    assert!(matches!(again, Error::AlreadyExists { .. }), "{again:?}");
    let patched = client
        .patch(&maps, Some("default"), "a", Patch::Merge(json!({"data": {"k": "2"}})), None, &options)
        .await
        .expect("patched");
    assert_eq!(patched.object["data"]["k"], "2");
    let mut stale = created.object.clone();
    stale.insert("data".into(), json!({"k": "3"}));
    let conflict = client.update(&maps, Some("default"), "a", stale.into(), None, &options).await.unwrap_err();
    assert!(matches!(conflict, Error::Conflict { .. }), "{conflict:?}");
    let invalid = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Not_Valid"}});
    let invalid = client.create(&maps, Some("default"), invalid, &options).await.unwrap_err();
    assert!(matches!(&invalid, Error::Invalid { causes, .. } if !causes.is_empty()), "{invalid:?}");
    let listed = client.list(&maps, Some("default"), Default::default()).await.expect("listed");
    assert!(listed.items.iter().any(|m| m["metadata"]["name"] == "a" && m["kind"] == "ConfigMap"));
    assert!(listed.resource_version > 0);
    client.delete(&maps, Some("default"), "a", &DeleteOptions::default()).await.expect("deleted");
    let gone = client.get(&maps, Some("default"), "a").await.unwrap_err();
    assert!(matches!(gone, Error::NotFound { .. }), "{gone:?}");

    // An informer over HTTPS sees what others write.
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let informers = Informers::new(client.clone(), stopped);
    let informer = informers.informer("", "v1", "configmaps").expect("an informer");
    informer.wait_synced().await;
    let at = ObjectRef { namespace: "default".into(), name: "watched".into() };
    let (code, _) = cluster
        .request(Method::POST, "/api/v1/namespaces/default/configmaps", Some(json!({"metadata": {"name": "watched"}})))
        .await;
    assert_eq!(code, 201);
    wait_for("the informer to see the new ConfigMap", Duration::from_secs(30), || async {
        informer.get(&at).map(|_| ())
    })
    .await;
    cluster.request(Method::DELETE, "/api/v1/namespaces/default/configmaps/watched", None).await;
    wait_for("the informer to see it go", Duration::from_secs(30), || async {
        informer.get(&at).is_none().then_some(())
    })
    .await;
}
