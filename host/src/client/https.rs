//! [`HttpsClient`]: the [`Client`] verbs over HTTPS to an API server, for a component in a
//! process of its own (`wasmkube node`): requests as kubectl makes them, answers' `Status`
//! mapped back to the registry's [`Error`] variants (so callers match NotFound, Conflict,
//! AlreadyExists as they do in-process), watches read as JSON lines into the same
//! [`WatchEvent`]s, so informers run over it unchanged.
//!
//! It names the built-in resources only (what a node needs; no discovery of custom ones),
//! and sends no label or field selectors yet (informers list and watch everything).

use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::{json, Map, Value};

use super::{Client, Result};
use crate::registry::{
    ApiResource, Cause, DeleteOptions, Error, EventType, ListOptions, Object, ObjectList, Patch, Revision, Selectors,
    Subresource, WatchEvent, WriteOptions, Written,
};

/// An API server reached over HTTPS with one identity.
pub struct HttpsClient {
    http: reqwest::Client,
    /// `https://host:port`.
    base: String,
    resources: Vec<ApiResource>,
}

impl HttpsClient {
    /// A client of the server at `base` (`https://host:port`), with `http`'s TLS trust and
    /// identity.
    pub fn new(base: &str, http: reqwest::Client) -> Self {
        Self { http, base: base.trim_end_matches('/').to_string(), resources: crate::registry::builtin_resources() }
    }

    /// `/api/v1[/namespaces/{ns}]/{plural}[/{name}[/{sub}]]` or the `/apis/...` form.
    fn url(&self, resource: &ApiResource, namespace: Option<&str>, name: Option<&str>, sub: Option<&str>) -> String {
        let mut url = if resource.group.is_empty() {
            format!("{}/api/{}", self.base, resource.version)
        } else {
            format!("{}/apis/{}/{}", self.base, resource.group, resource.version)
        };
        if let Some(ns) = namespace.filter(|_| resource.namespaced) {
            url.push_str(&format!("/namespaces/{ns}"));
        }
        url.push('/');
        url.push_str(resource.plural);
        for part in [name, sub].into_iter().flatten() {
            url.push('/');
            url.push_str(part);
        }
        url
    }

    /// Send `request`; the JSON answer, or the error its Status says.
    async fn send(&self, request: reqwest::RequestBuilder, resource: &ApiResource, name: &str) -> Result<Value> {
        let response = request
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| Error::Unavailable(format!("cannot reach the API server at {}: {e}", self.base)))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        Err(from_status(status.as_u16(), &body, resource, name))
    }

    fn write_query(options: &WriteOptions) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(manager) = &options.field_manager {
            query.push(("fieldManager", manager.clone()));
        }
        if options.dry_run {
            query.push(("dryRun", "All".to_string()));
        }
        if options.force {
            query.push(("force", "true".to_string()));
        }
        query
    }
}

fn no_selectors(selectors: &Selectors) -> Result<()> {
    if selectors.is_empty() {
        Ok(())
    } else {
        Err(Error::BadRequest("the HTTPS client sends no label or field selectors yet".into()))
    }
}

fn object_of(value: Value) -> Result<Object> {
    match value {
        Value::Object(object) => Ok(object),
        other => Err(Error::Internal(format!("the API server answered with a non-object: {other}"))),
    }
}

fn revision_of(object: &Value) -> Revision {
    object.pointer("/metadata/resourceVersion").and_then(Value::as_str).and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// The registry's error for a `Status` answer.
fn from_status(code: u16, body: &Value, resource: &ApiResource, name: &str) -> Error {
    let message = body["message"].as_str().unwrap_or_default().to_string();
    let resource_name = resource.qualified();
    match (code, body["reason"].as_str().unwrap_or_default()) {
        (404, _) => Error::NotFound { resource: resource_name, name: name.to_string() },
        (409, "AlreadyExists") => Error::AlreadyExists { resource: resource_name, name: name.to_string() },
        (409, _) => Error::Conflict { resource: resource_name, name: name.to_string(), message },
        (422, _) => {
            let causes = body
                .pointer("/details/causes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|c| Cause {
                    reason: cause_reason(c["reason"].as_str().unwrap_or_default()),
                    message: c["message"].as_str().unwrap_or_default().to_string(),
                    field: c["field"].as_str().unwrap_or_default().to_string(),
                })
                .collect();
            Error::Invalid { kind: resource.kind.to_string(), name: name.to_string(), causes }
        }
        (400, _) => Error::BadRequest(message),
        (403, _) => Error::Forbidden(message),
        (410, _) => Error::Gone(message),
        (413, _) => Error::TooLarge(message),
        (415, _) => Error::UnsupportedMediaType(message),
        (500, _) => Error::Internal(message),
        (503, _) => Error::Unavailable(message),
        (504, _) => Error::Timeout(message),
        (code, _) => Error::Denied { code, message },
    }
}

#[async_trait::async_trait]
impl Client for HttpsClient {
    fn resource(&self, group: &str, version: &str, plural: &str) -> Option<ApiResource> {
        self.resources.iter().find(|r| r.group == group && r.version == version && r.plural == plural).copied()
    }

    fn resources(&self) -> Vec<ApiResource> {
        self.resources.clone()
    }

    fn served_generation(&self) -> u64 {
        0
    }

    async fn get(&self, resource: &ApiResource, namespace: Option<&str>, name: &str) -> Result<Object> {
        let url = self.url(resource, namespace, Some(name), None);
        object_of(self.send(self.http.get(url), resource, name).await?)
    }

    async fn list(&self, resource: &ApiResource, namespace: Option<&str>, options: ListOptions) -> Result<ObjectList> {
        no_selectors(&options.selectors)?;
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(revision) = options.resource_version {
            query.push(("resourceVersion", revision.to_string()));
            if options.exact {
                query.push(("resourceVersionMatch", "Exact".into()));
            }
        }
        if options.limit > 0 {
            query.push(("limit", options.limit.to_string()));
        }
        if let Some(token) = &options.continue_token {
            query.push(("continue", token.clone()));
        }
        let url = self.url(resource, namespace, None, None);
        let list = self.send(self.http.get(url).query(&query), resource, "").await?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let kind = resource.kind;
        let api_version = if resource.group.is_empty() {
            resource.version.to_string()
        } else {
            format!("{}/{}", resource.group, resource.version)
        };
        Ok(ObjectList {
            // A list's items come without kind and apiVersion; the registry's have them.
            items: items
                .into_iter()
                .filter_map(|item| match item {
                    Value::Object(mut object) => {
                        object.entry("kind").or_insert_with(|| json!(kind));
                        object.entry("apiVersion").or_insert_with(|| json!(api_version));
                        Some(object)
                    }
                    _ => None,
                })
                .collect(),
            resource_version: list
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|r| r.parse().ok())
                .unwrap_or(0),
            continue_token: list
                .pointer("/metadata/continue")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_string),
        })
    }

    async fn watch(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        since: Revision,
        bookmarks: bool,
        selectors: Selectors,
    ) -> Result<BoxStream<'static, WatchEvent>> {
        no_selectors(&selectors)?;
        let url = self.url(resource, namespace, None, None);
        let mut query = vec![("watch", "1".to_string()), ("allowWatchBookmarks", bookmarks.to_string())];
        if since > 0 {
            query.push(("resourceVersion", since.to_string()));
        }
        let response = self
            .http
            .get(url)
            .query(&query)
            .send()
            .await
            .map_err(|e| Error::Unavailable(format!("cannot reach the API server at {}: {e}", self.base)))?;
        if !response.status().is_success() {
            let code = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            return Err(from_status(code, &body, resource, ""));
        }
        // JSON lines, one event each; a line may arrive in pieces.
        let bytes = response.bytes_stream();
        let events =
            futures::stream::unfold((bytes, Vec::<u8>::new(), false), |(mut bytes, mut buffer, ended)| async move {
                if ended {
                    return None;
                }
                loop {
                    if let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buffer.drain(..=end).collect();
                        match event_of(&line) {
                            Some(event) => {
                                let last = matches!(event, WatchEvent::Expired(_));
                                return Some((event, (bytes, buffer, last)));
                            }
                            None => continue,
                        }
                    }
                    match bytes.next().await {
                        Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                        // The stream ended or broke: the informer watches again.
                        _ => return None,
                    }
                }
            });
        Ok(events.boxed())
    }

    async fn create(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        body: Value,
        options: &WriteOptions,
    ) -> Result<Written> {
        let name = body.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let url = self.url(resource, namespace, None, None);
        let request = self.http.post(url).query(&Self::write_query(options)).json(&body);
        written(self.send(request, resource, &name).await?)
    }

    async fn update(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        part: Option<Subresource>,
        options: &WriteOptions,
    ) -> Result<Written> {
        let url = self.url(resource, namespace, Some(name), part.map(Subresource::name));
        let request = self.http.put(url).query(&Self::write_query(options)).json(&body);
        written(self.send(request, resource, name).await?)
    }

    async fn patch(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        patch: Patch,
        part: Option<Subresource>,
        options: &WriteOptions,
    ) -> Result<Written> {
        let (media_type, body) = match patch {
            Patch::Json(patch) => ("application/json-patch+json", serde_json::to_vec(&patch)),
            Patch::Merge(patch) => ("application/merge-patch+json", serde_json::to_vec(&patch)),
            Patch::Apply(patch) => ("application/apply-patch+yaml", serde_json::to_vec(&patch)),
            Patch::Strategic(patch) => ("application/strategic-merge-patch+json", serde_json::to_vec(&patch)),
        };
        let body = body.map_err(|e| Error::BadRequest(format!("the patch does not encode: {e}")))?;
        let url = self.url(resource, namespace, Some(name), part.map(Subresource::name));
        let request = self
            .http
            .patch(url)
            .query(&Self::write_query(options))
            .header(reqwest::header::CONTENT_TYPE, media_type)
            .body(body);
        written(self.send(request, resource, name).await?)
    }

    async fn delete(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Object> {
        let mut body = json!({"kind": "DeleteOptions", "apiVersion": "v1"});
        let mut preconditions = Map::new();
        if let Some(uid) = &options.uid {
            preconditions.insert("uid".into(), json!(uid));
        }
        if let Some(revision) = options.resource_version {
            preconditions.insert("resourceVersion".into(), json!(revision.to_string()));
        }
        if !preconditions.is_empty() {
            body["preconditions"] = Value::Object(preconditions);
        }
        if let Some(grace) = options.grace_period_seconds {
            body["gracePeriodSeconds"] = json!(grace);
        }
        if let Some(propagation) = &options.propagation {
            body["propagationPolicy"] = json!(format!("{propagation:?}"));
        }
        if options.dry_run {
            body["dryRun"] = json!(["All"]);
        }
        let url = self.url(resource, namespace, Some(name), None);
        object_of(self.send(self.http.delete(url).json(&body), resource, name).await?)
    }

    async fn bind(
        &self,
        pods: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        node: &str,
        annotations: Map<String, Value>,
        options: &WriteOptions,
    ) -> Result<Written> {
        let binding = json!({"apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
        let url = self.url(pods, namespace, Some(name), Some("binding"));
        let request = self.http.post(url).query(&Self::write_query(options)).json(&binding);
        let answer = self.send(request, pods, name).await?;
        written(answer)
    }
}

/// A cause's reason as the registry names it (its reasons are a closed set).
fn cause_reason(reason: &str) -> &'static str {
    const REASONS: &[&str] = &[
        "FieldValueRequired",
        "FieldValueInvalid",
        "FieldValueDuplicate",
        "FieldValueNotSupported",
        "FieldValueForbidden",
        "FieldValueTooLong",
        "FieldValueTooMany",
        "FieldValueTypeInvalid",
        "FieldValueNotFound",
        "FieldManagerConflict",
    ];
    REASONS.iter().copied().find(|r| *r == reason).unwrap_or("FieldValueInvalid")
}

fn written(value: Value) -> Result<Written> {
    Ok(Written { object: object_of(value)?, warnings: Vec::new(), decisions: Vec::new() })
}

/// One watch line as a [`WatchEvent`] (None for a line that is not one).
fn event_of(line: &[u8]) -> Option<WatchEvent> {
    let event: Value = serde_json::from_slice(line).ok()?;
    let object = &event["object"];
    let kind = match event["type"].as_str()? {
        "ADDED" => EventType::Added,
        "MODIFIED" => EventType::Modified,
        "DELETED" => EventType::Deleted,
        "BOOKMARK" => return Some(WatchEvent::Bookmark(revision_of(object))),
        "ERROR" => {
            let message = object["message"].as_str().unwrap_or("the watch ended").to_string();
            return Some(WatchEvent::Expired(message));
        }
        _ => return None,
    };
    let bytes = serde_json::to_vec(object).ok()?;
    Some(WatchEvent::Change(crate::registry::Change::from_wire(kind, bytes.into(), revision_of(object))))
}
