//! The REST handlers of resources: two routes catch `/api/v1/...` and
//! `/apis/{group}/{version}/...`, parse the path into a [`Target`] and call the registry. List, get, create
//! (POST), update (PUT) and delete; Tables for `kubectl get`. Watches are `watch.rs`.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use futures::StreamExt;
use serde_json::{json, Value};

use super::shape::{metadata_only, object_revision, partial_object_metadata, Version};
use super::{body, reviews, table, watch, ApiError, AppState};
use crate::auth::UserInfo;
use crate::registry::{
    DeleteOptions, FieldSelector, FieldValidation, LabelSelector, ListOptions, Patch, Propagation, Registry, Resource,
    Selectors, Subresource, WriteOptions, Written,
};

/// Longest a watch stays open without `timeoutSeconds` (kube-apiserver's default minimum
/// request timeout).
const MAX_WATCH: Duration = Duration::from_secs(1800);

/// What a path names.
struct Target {
    resource: Resource,
    namespace: Option<String>,
    name: Option<String>,
    /// The segment after the name, e.g. "status".
    subresource: Option<String>,
}

/// Parse `[namespaces/{ns}/]{plural}[/{name}[/{subresource}]]` below `/api/v1` or
/// `/apis/{group}/{version}`. `namespaces/{name}/status` is the namespace's subresource,
/// not a resource called "status".
fn parse_path(registry: &Registry, group: &str, version: &str, path: &[String]) -> Result<Target, ApiError> {
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    let unknown = || {
        let base = if group.is_empty() { "/api/v1".to_string() } else { format!("/apis/{group}/{version}") };
        ApiError::not_found(format!("the server could not find the requested resource ({base}/{})", path.join("/")))
    };
    let resource = |plural: &str| registry.resource(group, version, plural).ok_or_else(unknown);
    let namespaced = |plural: &str| registry.resource(group, version, plural).is_some_and(|r| r.namespaced);
    let (namespace, rest) = match segments.as_slice() {
        ["namespaces", ns, plural, rest @ ..] if group.is_empty() && namespaced(plural) || !group.is_empty() => {
            (Some(ns.to_string()), std::iter::once(*plural).chain(rest.iter().copied()).collect::<Vec<_>>())
        }
        _ => (None, segments.clone()),
    };
    let target = |plural: &str, name: Option<&&str>, sub: Option<&&str>| -> Result<Target, ApiError> {
        let resource = resource(plural)?;
        if let Some(sub) = sub {
            if !resource.has_subresource(sub) {
                return Err(unknown());
            }
        }
        Ok(Target {
            resource,
            namespace: namespace.clone(),
            name: name.map(|n| n.to_string()),
            subresource: sub.map(|s| s.to_string()),
        })
    };
    let target = match rest.as_slice() {
        [plural] => target(plural, None, None),
        [plural, name] => target(plural, Some(name), None),
        [plural, name, sub] => target(plural, Some(name), Some(sub)),
        _ => Err(unknown()),
    }?;
    for (what, value) in [("Namespace", &target.namespace), ("Name", &target.name)] {
        if let Some(problem) = value.as_deref().and_then(path_segment_problem) {
            return Err(ApiError::bad_request(format!(
                "{what} parameter invalid: {:?}: {problem}",
                value.as_deref().unwrap_or_default()
            )));
        }
    }
    Ok(target)
}

/// Why a namespace or name cannot be a segment of a path (apimachinery's
/// `IsValidPathSegmentName`), as the key it would become must not climb or split.
fn path_segment_problem(segment: &str) -> Option<&'static str> {
    match segment {
        "." => Some("may not be '.'"),
        ".." => Some("may not be '..'"),
        s if s.contains('/') => Some("may not contain '/'"),
        s if s.contains('%') => Some("may not contain '%'"),
        _ => None,
    }
}

/// The request's path below `prefix` (`/api/v1`, `/apis`), split on `/` as the client
/// sent it and only then percent-decoded, so an escaped slash stays inside its segment
/// (the router's own captures are decoded before they are split).
fn raw_segments(uri: &Uri, prefix: &str) -> Result<Vec<String>, ApiError> {
    let rest = uri.path().strip_prefix(prefix).unwrap_or_default();
    rest.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(std::borrow::Cow::into_owned)
                .map_err(|_| ApiError::bad_request(format!("the path segment {s:?} is not percent-encoded UTF-8")))
        })
        .collect()
}

/// A boolean query parameter as kube-apiserver reads one: absent, empty, `0`, `f`,
/// `false`, `n` or `no` (any case) is false; anything else is true.
fn flag(value: Option<&str>) -> bool {
    match value {
        None => false,
        Some(v) => !matches!(v.to_ascii_lowercase().as_str(), "" | "0" | "f" | "false" | "n" | "no"),
    }
}

/// The largest request body kube-apiserver reads (3 MiB).
pub(super) const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// How much of an oversized body is still read (and dropped) before answering 413, so a
/// client that is still sending gets the Status instead of a broken pipe.
const DRAIN_BYTES: usize = 64 * 1024 * 1024;

/// The request body, or 413 RequestEntityTooLarge past [`MAX_BODY_BYTES`].
async fn body_of(body: Body) -> Result<Bytes, ApiError> {
    body_within(body, MAX_BODY_BYTES).await
}

/// The request body, or 413 RequestEntityTooLarge past `limit` bytes.
pub(super) async fn body_within(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut chunks = body.into_data_stream();
    let mut collected = bytes::BytesMut::new();
    let mut total = 0usize;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        total += chunk.len();
        if total <= limit {
            collected.extend_from_slice(&chunk);
        } else if total > limit.max(DRAIN_BYTES) {
            break;
        }
    }
    if total > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("the request is larger than {limit} bytes, the most the API server reads"),
        ));
    }
    Ok(collected.freeze())
}

/// The query string, or a `Status` saying what in it is wrong.
fn query(params: Result<Query<Params>, QueryRejection>) -> Result<Params, ApiError> {
    params.map(|Query(p)| p).map_err(|e| ApiError::bad_request(format!("invalid query parameters: {}", e.body_text())))
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct Params {
    watch: Option<String>,
    resource_version: Option<String>,
    /// Integers are read as Go reads them (`strconv.ParseInt`), so bad ones get its words.
    limit: Option<String>,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
    allow_watch_bookmarks: Option<String>,
    timeout_seconds: Option<String>,
    /// A delete's grace period (pods on a node go gracefully).
    grace_period_seconds: Option<String>,
    label_selector: Option<String>,
    field_selector: Option<String>,
    dry_run: Option<String>,
    propagation_policy: Option<String>,
    /// `NotOlderThan` or `Exact` (with a resourceVersion).
    resource_version_match: Option<String>,
    /// A watch that first sends the current state, then a bookmark marking its end.
    send_initial_events: Option<String>,
    /// Who is writing (managedFields).
    field_manager: Option<String>,
    /// Server-side apply: take the fields other managers own.
    force: Option<String>,
    /// `Strict`, `Warn` or `Ignore`; checked, and honoured as far as the schema goes.
    field_validation: Option<String>,
    /// pods/log: which container, and how much of its log.
    container: Option<String>,
    follow: Option<String>,
    previous: Option<String>,
    timestamps: Option<String>,
    tail_lines: Option<String>,
    since_seconds: Option<String>,
    since_time: Option<String>,
    limit_bytes: Option<String>,
    /// Who asks (not a query parameter: set from authentication).
    #[serde(skip)]
    user: Option<UserInfo>,
}

impl Params {
    fn watching(&self) -> bool {
        flag(self.watch.as_deref())
    }

    /// pods/log's options; bad numbers and times get kube-apiserver's words.
    fn log_options(&self) -> Result<super::kubelet::LogOptions, ApiError> {
        let positive = |name: &str, value: Option<&str>| -> Result<Option<u64>, ApiError> {
            match go_int(value)? {
                Some(n) if n < 0 => Err(ApiError::bad_request(format!(
                    "{name}: Invalid value: {n}: must be greater than or equal to 0"
                ))),
                Some(n) => Ok(Some(n as u64)),
                None => Ok(None),
            }
        };
        let since_seconds = match go_int(self.since_seconds.as_deref())? {
            Some(n) if n < 1 => {
                return Err(ApiError::bad_request(format!("sinceSeconds: Invalid value: {n}: must be greater than 0")))
            }
            n => n,
        };
        let since_time = match self.since_time.as_deref() {
            Some(text) => Some(humantime::parse_rfc3339_weak(text).map_err(|e| {
                ApiError::bad_request(format!("parsing time {text:?} as \"2006-01-02T15:04:05Z07:00\": {e}"))
            })?),
            None => None,
        };
        if since_seconds.is_some() && since_time.is_some() {
            return Err(ApiError::bad_request(
                "sinceTime: Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified",
            ));
        }
        let since = since_time
            .or_else(|| since_seconds.map(|s| std::time::SystemTime::now() - std::time::Duration::from_secs(s as u64)));
        let limit_bytes = match positive("limitBytes", self.limit_bytes.as_deref())? {
            Some(0) => return Err(ApiError::bad_request("limitBytes: Invalid value: 0: must be greater than 0")),
            n => n,
        };
        Ok(super::kubelet::LogOptions {
            follow: flag(self.follow.as_deref()),
            previous: flag(self.previous.as_deref()),
            timestamps: flag(self.timestamps.as_deref()),
            tail_lines: positive("tailLines", self.tail_lines.as_deref())?,
            since,
            limit_bytes,
        })
    }

    /// `dryRun=All` (the only value Kubernetes defines).
    fn dry_run(&self) -> Result<bool, ApiError> {
        match self.dry_run.as_deref() {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!("unsupported dry run value {other:?}: use dryRun=All"))),
        }
    }

    fn list_options(&self, kind: &str) -> Result<ListOptions, ApiError> {
        let resource_version = self.resource_version()?;
        let exact = match (self.resource_version_match.as_deref(), resource_version) {
            (None | Some(""), _) => false,
            (Some(_), None) => {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ))
            }
            (Some("NotOlderThan"), Some(_)) => false,
            (Some("Exact"), Some(0)) => {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
                ))
            }
            (Some("Exact"), Some(_)) => true,
            (Some(other), _) => {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch must be NotOlderThan or Exact, not {other:?}"
                )))
            }
        };
        Ok(ListOptions {
            exact,
            resource_version,
            limit: go_int(self.limit.as_deref())?.map_or(0, |n| usize::try_from(n).unwrap_or(0)),
            continue_token: self.continue_token.clone().filter(|t| !t.is_empty()),
            selectors: self.selectors(kind)?,
        })
    }

    /// `fieldValidation`; kube-apiserver refuses unknown values.
    fn field_validation(&self) -> Result<FieldValidation, ApiError> {
        match self.field_validation.as_deref() {
            None | Some("" | "Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Strict, Warn or Ignore, not {other:?}"
            ))),
        }
    }

    /// The write's options; the field manager is `fieldManager`, or else (as in
    /// kube-apiserver) the client's user agent up to its first '/', e.g. "kubectl".
    fn write_options(&self, headers: &HeaderMap) -> Result<WriteOptions, ApiError> {
        let manager = match self.field_manager.as_deref() {
            Some(manager) if manager.len() > 128 => {
                return Err(ApiError::bad_request("fieldManager must be at most 128 characters"))
            }
            Some(manager) if !manager.is_empty() => Some(manager.to_string()),
            _ => headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .and_then(|agent| agent.split('/').next())
                .filter(|m| !m.is_empty())
                .map(|m| m.chars().take(128).collect()),
        };
        Ok(WriteOptions {
            dry_run: self.dry_run()?,
            field_validation: self.field_validation()?,
            field_manager: manager,
            force: flag(self.force.as_deref()),
            user: self.user.clone(),
            rewrite: false,
            duplicate_fields: Vec::new(),
        })
    }

    fn selectors(&self, kind: &str) -> Result<Selectors, ApiError> {
        let labels = LabelSelector::parse(self.label_selector.as_deref().unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse_for(kind, self.field_selector.as_deref().unwrap_or_default())
            .map_err(ApiError::bad_request)?;
        Ok(Selectors { labels, fields })
    }

    fn watch_options(&self, kind: &str) -> Result<watch::WatchOptions, ApiError> {
        Ok(watch::WatchOptions {
            resource_version: self.resource_version()?,
            bookmarks: flag(self.allow_watch_bookmarks.as_deref()),
            send_initial_events: self.send_initial_events.as_deref().map(|v| flag(Some(v))),
            selectors: self.selectors(kind)?,
            timeout: match go_int(self.timeout_seconds.as_deref())? {
                Some(s) if s > 0 => Duration::from_secs(s.unsigned_abs()).min(MAX_WATCH),
                _ => MAX_WATCH,
            },
        })
    }

    /// `resourceVersion` as kube-apiserver's storage parses it (`strconv.ParseUint`, with
    /// "" and "0" meaning "any"), in its words. Upstream answers a bad one with 500
    /// (kubernetes#139485); a malformed client input is a 400 here.
    fn resource_version(&self) -> Result<Option<i64>, ApiError> {
        match self.resource_version.as_deref() {
            None | Some("") => Ok(None),
            // ParseUint takes no sign, which Rust's parse would.
            Some(rv) if rv.starts_with('+') => Err(invalid_resource_version(rv, "invalid syntax")),
            Some(rv) => match rv.parse::<u64>() {
                Ok(n) => i64::try_from(n).map(Some).map_err(|_| invalid_resource_version(rv, "value out of range")),
                Err(e) => Err(invalid_resource_version(rv, go_parse_problem(&e))),
            },
        }
    }

    /// `gracePeriodSeconds`, with strconv's words for a bad one.
    fn grace_period_seconds(&self) -> Result<Option<i64>, ApiError> {
        go_int(self.grace_period_seconds.as_deref())
    }
}

fn invalid_resource_version(rv: &str, problem: &str) -> ApiError {
    ApiError::bad_request(format!(
        "resourceVersion: Invalid value: {rv:?}: strconv.ParseUint: parsing {rv:?}: {problem}"
    ))
}

/// What Go's strconv says of a number it cannot parse.
fn go_parse_problem(e: &std::num::ParseIntError) -> &'static str {
    match e.kind() {
        std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => "value out of range",
        _ => "invalid syntax",
    }
}

/// An integer query parameter as kube-apiserver's parameter codec reads one
/// (`strconv.ParseInt(s, 10, 64)`; a present but empty value is an error there too).
fn go_int(value: Option<&str>) -> Result<Option<i64>, ApiError> {
    match value {
        None => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .map(Some)
            .map_err(|e| ApiError::bad_request(format!("strconv.ParseInt: parsing {s:?}: {}", go_parse_problem(&e)))),
    }
}

/// `/api/v1/{*path}`: the core group.
#[allow(clippy::too_many_arguments)]
pub(super) async fn core(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    params: Result<Query<Params>, QueryRejection>,
    user: Option<Extension<UserInfo>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let user = user.map_or_else(UserInfo::anonymous, |Extension(u)| u);
    let path = raw_segments(&uri, "/api/v1")?;
    // exec and attach: a session streamed over a WebSocket, not a request and an answer.
    if let [ns, pods, name, sub] = path.as_slice().get(1..).unwrap_or_default() {
        let kind = match sub.as_str() {
            "exec" => Some(super::remotecommand::Kind::Exec),
            "attach" => Some(super::remotecommand::Kind::Attach),
            _ => None,
        };
        if let (Some(kind), "namespaces", "pods", true) =
            (kind, path[0].as_str(), pods.as_str(), method == Method::GET || method == Method::POST)
        {
            let registry = state.registry()?;
            let resource =
                registry.resource("", "v1", "pods").ok_or_else(|| ApiError::not_found("pods are not served"))?;
            let options = super::remotecommand::options(uri.query())?;
            return super::remotecommand::answer(
                &state, &registry, &resource, ns, name, kind, options, upgrade, &headers,
            )
            .await;
        }
    }
    if let ["nodes", node, "proxy", rest @ ..] = path.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        if method == Method::GET {
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            return super::resource_metrics::node_proxy(&state, node, &rest).await;
        }
    }
    let mut params = query(params)?;
    params.user = Some(user.clone());
    let body = body_of(body).await?;
    to_completion(state, String::new(), "v1".into(), path, method, params, user, headers, body).await
}

/// `/apis/{group}/{version}/{*path}`: a named group.
pub(super) async fn grouped(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    params: Result<Query<Params>, QueryRejection>,
    user: Option<Extension<UserInfo>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let user = user.map_or_else(UserInfo::anonymous, |Extension(u)| u);
    let mut params = query(params)?;
    params.user = Some(user.clone());
    let body = body_of(body).await?;
    let (group, version, path) = match raw_segments(&uri, "/apis")?.as_slice() {
        [group, version, path @ ..] => (group.clone(), version.clone(), path.to_vec()),
        _ => {
            return Err(ApiError::not_found(format!(
                "the server could not find the requested resource ({})",
                uri.path()
            )))
        }
    };
    to_completion(state, group, version, path, method, params, user, headers, body).await
}

/// Serve a request; a write runs to completion on a task of its own even if the client
/// goes away meanwhile (dropping the request's future would stop it half way, with a
/// Service's addresses claimed and never settled), as a write in kube-apiserver does.
#[allow(clippy::too_many_arguments)]
async fn to_completion(
    state: AppState,
    group: String,
    version: String,
    path: Vec<String>,
    method: Method,
    params: Params,
    user: UserInfo,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if method == Method::GET || method == Method::HEAD {
        return serve(state, &group, &version, &path, method, params, &user, headers, body).await;
    }
    let write = async move { serve(state, &group, &version, &path, method, params, &user, headers, body).await };
    tokio::spawn(write).await.unwrap_or_else(|e| {
        Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("the request's task failed: {e}"),
        ))
    })
}

/// Subresources that need a node agent to answer.
const NODE_SUBRESOURCES: &[&str] = &["log", "exec", "attach", "portforward", "proxy"];

#[allow(clippy::too_many_arguments)]
async fn serve(
    state: AppState,
    group: &str,
    version: &str,
    path: &[String],
    method: Method,
    params: Params,
    user: &UserInfo,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let registry = state.registry()?;
    if let Some((review, namespace)) = reviews::find(group, version, path) {
        if method != Method::POST {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method} {}): reviews are only created",
                review.qualified()
            )));
        }
        return reviews::answer(&state, review, namespace.as_deref(), user, body::object(&headers, &body).await?).await;
    }
    if let Some(name) = super::component_status::find(group, path) {
        return super::component_status::answer(&state, &method, name.as_deref(), &headers);
    }
    if let Some(target) = super::resource_metrics::find(group, version, path) {
        let options = params.list_options(target.object_kind())?;
        return super::resource_metrics::answer(&state, &registry, &method, target, options).await;
    }
    let target = parse_path(&registry, group, version, path)?;
    let namespace = target.namespace.as_deref();
    let resource = &target.resource;
    if let (Some(name), Some("token"), Some(ns), true) =
        (target.name.as_deref(), target.subresource.as_deref(), namespace, method == Method::POST)
    {
        return reviews::token_request(&state, ns, name, body::object(&headers, &body).await?).await;
    }
    if let (Some(name), Some("log"), Some(ns), "pods", true) =
        (target.name.as_deref(), target.subresource.as_deref(), namespace, resource.plural, method == Method::GET)
    {
        let options = params.log_options()?;
        return super::logs::answer(&state, &registry, resource, ns, name, params.container.as_deref(), options).await;
    }
    if let (Some(name), Some(sub)) = (target.name.as_deref(), target.subresource.as_deref()) {
        return subresource(&registry, resource, namespace, name, sub, method, &params, &headers, &body).await;
    }
    let version = Version::of(resource);
    match (method, target.name.as_deref()) {
        (Method::GET, None) if params.watching() => {
            let shape = if table::wanted(&headers) {
                watch::Shape::Table
            } else if metadata_only(&headers) {
                watch::Shape::Metadata
            } else {
                watch::Shape::Object
            };
            watch::watch(&registry, resource, namespace, params.watch_options(resource.kind)?, shape).await
        }
        (Method::GET, None) => {
            let mut list = registry.list(resource, namespace, params.list_options(resource.kind)?).await?;
            list.items.iter_mut().for_each(|o| version.set(o));
            if table::wanted(&headers) {
                return Ok(Json(table::table(resource, &list.items, list.resource_version)).into_response());
            }
            if metadata_only(&headers) {
                list.items = list.items.iter().map(partial_object_metadata).collect();
                let mut body = list_body(resource, list);
                body["kind"] = json!("PartialObjectMetadataList");
                body["apiVersion"] = json!("meta.k8s.io/v1");
                return Ok(Json(body).into_response());
            }
            Ok(Json(list_body(resource, list)).into_response())
        }
        (Method::GET, Some(name)) => {
            // Any version is served from the latest state, but a malformed one is refused.
            params.resource_version()?;
            let mut object = registry.get(resource, namespace, name).await?;
            version.set(&mut object);
            if table::wanted(&headers) {
                let revision = object_revision(&object);
                return Ok(Json(table::table(resource, std::slice::from_ref(&object), revision)).into_response());
            }
            if metadata_only(&headers) {
                return Ok(Json(partial_object_metadata(&object)).into_response());
            }
            Ok(Json(object).into_response())
        }
        (Method::POST, None) => {
            let (object, duplicates) = body::object_checked(&headers, &body).await?;
            let options = WriteOptions { duplicate_fields: duplicates, ..params.write_options(&headers)? };
            let mut written = registry.create(resource, namespace, object, &options).await?;
            version.set(&mut written.object);
            Ok(respond(StatusCode::CREATED, written))
        }
        (Method::PUT, Some(name)) => {
            let (object, duplicates) = body::object_checked(&headers, &body).await?;
            let options = WriteOptions { duplicate_fields: duplicates, ..params.write_options(&headers)? };
            let mut written = registry.update(resource, namespace, name, object, None, &options).await?;
            version.set(&mut written.object);
            Ok(respond(StatusCode::OK, written))
        }
        (Method::PATCH, Some(name)) => {
            let options = params.write_options(&headers)?;
            let patch = body::patch(&headers, &body).await?;
            if matches!(patch, Patch::Apply(_)) && params.field_manager.as_deref().is_none_or(str::is_empty) {
                return Err(ApiError::bad_request("fieldManager is required for apply requests"));
            }
            let mut written = registry.patch(resource, namespace, name, patch, None, &options).await?;
            version.set(&mut written.object);
            Ok(respond(StatusCode::OK, shaped(written, &headers)))
        }
        (Method::DELETE, Some(name)) => {
            let mut object = registry.delete(resource, namespace, name, &delete_options(&body, &params)?).await?;
            version.set(&mut object);
            Ok(Json(object).into_response())
        }
        (Method::DELETE, None) => {
            let options = delete_options(&body, &params)?;
            let list =
                registry.delete_collection(resource, namespace, params.list_options(resource.kind)?, &options).await?;
            Ok(Json(list_body(resource, list)).into_response())
        }
        (method, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} {})",
            resource.qualified()
        ))),
    }
}

/// `{kind}List` with the page's resourceVersion and continue token.
fn list_body(resource: &Resource, list: crate::registry::ObjectList) -> Value {
    let mut metadata = json!({"resourceVersion": list.resource_version.to_string()});
    if let Some(token) = list.continue_token {
        metadata["continue"] = Value::String(token);
    }
    json!({
        "kind": format!("{}List", resource.kind),
        "apiVersion": resource.api_version(),
        "metadata": metadata,
        "items": list.items,
    })
}

/// A request to `{name}/{sub}`.
#[allow(clippy::too_many_arguments)]
async fn subresource(
    registry: &Registry,
    resource: &Resource,
    namespace: Option<&str>,
    name: &str,
    sub: &str,
    method: Method,
    params: &Params,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    if NODE_SUBRESOURCES.contains(&sub) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!(
                "{}/{sub} needs a node agent to answer, and this cluster has none yet: {} \"{name}\" has no node to talk to",
                resource.qualified(),
                resource.singular
            ),
        ));
    }
    if let Some(part) = Subresource::parse(sub) {
        let options = params.write_options(headers)?;
        let written = match method {
            Method::GET => Written {
                object: registry.get_part(resource, namespace, name, Some(part)).await?,
                warnings: Vec::new(),
                decisions: Vec::new(),
            },
            Method::PUT => {
                registry
                    .update(resource, namespace, name, body::object(headers, body).await?, Some(part), &options)
                    .await?
            }
            Method::PATCH => {
                registry
                    .patch(resource, namespace, name, body::patch(headers, body).await?, Some(part), &options)
                    .await?
            }
            other => return Err(subresource_method(other, resource, sub)),
        };
        return Ok(respond(StatusCode::OK, written));
    }
    match (sub, method) {
        ("binding", Method::POST) => {
            let binding = body::object(headers, body).await?;
            if binding.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).is_some_and(|n| n != name) {
                return Err(ApiError::bad_request(format!(
                    "the name of the Binding does not match the name of the pod ({name})"
                )));
            }
            let node = binding.pointer("/target/name").and_then(Value::as_str).unwrap_or_default();
            let annotations =
                binding.pointer("/metadata/annotations").and_then(Value::as_object).cloned().unwrap_or_default();
            registry.bind(resource, namespace, name, node, annotations, &params.write_options(headers)?).await?;
            Ok((StatusCode::CREATED, Json(success(StatusCode::CREATED))).into_response())
        }
        ("eviction", Method::POST) => {
            let eviction = body::object(headers, body).await?;
            let options = eviction.get("deleteOptions").map(|o| serde_json::to_vec(o).unwrap_or_default());
            let options = delete_options(options.as_deref().unwrap_or_default(), params)?;
            registry.delete(resource, namespace, name, &options).await?;
            Ok((StatusCode::CREATED, Json(success(StatusCode::CREATED))).into_response())
        }
        (_, other) => Err(subresource_method(other, resource, sub)),
    }
}

/// The written object as the client asked for it.
fn shaped(mut written: Written, headers: &HeaderMap) -> Written {
    if metadata_only(headers) {
        written.object = partial_object_metadata(&written.object);
    }
    written
}

/// A written object, with its warnings as `Warning` headers (RFC 7234 code 299, as
/// kube-apiserver sends them; kubectl prints each as "Warning: ...").
/// Admission decisions leave in `X-Wasmkube-Admission`: `plugin=digest` for each plugin
/// that decided, in order, so a client can tell which version of a policy admitted it.
fn respond(code: StatusCode, written: Written) -> Response {
    let mut response = (code, Json(written.object)).into_response();
    if !written.decisions.is_empty() {
        let text: Vec<String> = written.decisions.iter().map(|(plugin, digest)| format!("{plugin}={digest}")).collect();
        if let Ok(value) = axum::http::HeaderValue::from_str(&text.join(", ")) {
            response.headers_mut().insert("x-wasmkube-admission", value);
        }
    }
    for warning in written.warnings {
        let text = format!("299 - {}", serde_json::Value::String(warning));
        if let Ok(value) = axum::http::HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

fn subresource_method(method: Method, resource: &Resource, sub: &str) -> ApiError {
    ApiError::method_not_allowed(format!(
        "the server does not allow this method on the requested resource ({method} {}/{sub})",
        resource.qualified()
    ))
}

/// A `Status` of success, what kube-apiserver answers to a binding or an eviction.
fn success(code: StatusCode) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code.as_u16()})
}

/// A DELETE body (`DeleteOptions`, possibly empty) with the query's `dryRun` and
/// `propagationPolicy`: preconditions, dry run (kubectl sends `dryRun` in the body) and
/// propagation.
fn delete_options(body: &[u8], params: &Params) -> Result<DeleteOptions, ApiError> {
    let grace = params.grace_period_seconds()?;
    let mut options = DeleteOptions {
        dry_run: params.dry_run()?,
        user: params.user.clone(),
        grace_period_seconds: grace,
        ..DeleteOptions::default()
    };
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the DeleteOptions body is not valid JSON: {e}")))?
    };
    options.resource_version = match body.pointer("/preconditions/resourceVersion").and_then(Value::as_str) {
        None | Some("") => None,
        Some(rv) => Some(rv.parse().map_err(|_| ApiError::bad_request(format!("invalid precondition {rv:?}")))?),
    };
    options.uid =
        body.pointer("/preconditions/uid").and_then(Value::as_str).filter(|u| !u.is_empty()).map(String::from);
    // kubectl sends --grace-period (and --now, --force) in the body.
    if let Some(seconds) = body.get("gracePeriodSeconds").and_then(Value::as_i64) {
        options.grace_period_seconds = Some(seconds);
    }
    match body.get("dryRun").and_then(Value::as_array).map(Vec::as_slice) {
        None | Some([]) => {}
        Some([value]) if value == "All" => options.dry_run = true,
        Some(other) => {
            return Err(ApiError::bad_request(format!("unsupported dry run value {other:?}: use [\"All\"]")))
        }
    }
    let policy = body.get("propagationPolicy").and_then(Value::as_str).or(params.propagation_policy.as_deref());
    options.propagation = match policy {
        None | Some("") => None,
        Some("Orphan") => Some(Propagation::Orphan),
        Some("Background") => Some(Propagation::Background),
        Some("Foreground") => Some(Propagation::Foreground),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy must be Orphan, Background or Foreground, not {other:?}"
            )))
        }
    };
    if body.get("orphanDependents") == Some(&Value::Bool(true)) && options.propagation.is_none() {
        options.propagation = Some(Propagation::Orphan);
    }
    Ok(options)
}
