//! The review resources, created and answered, never stored: TokenReview and
//! SelfSubjectReview (authentication.k8s.io), SubjectAccessReview and its local, self and
//! rules variants (authorization.k8s.io), and a service account's `token` subresource
//! (TokenRequest). Until authorization plugins exist every authenticated user is allowed
//! everything, and the reviews say so.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::auth::UserInfo;
use crate::registry::ApiResource as Resource;

const NONE: &[&str] = &[];

/// The review resources, as discovery lists them.
pub(super) const REVIEWS: &[Resource] = &[
    review("authentication.k8s.io", "TokenReview", "tokenreviews", "tokenreview", false),
    review("authentication.k8s.io", "SelfSubjectReview", "selfsubjectreviews", "selfsubjectreview", false),
    review("authorization.k8s.io", "SubjectAccessReview", "subjectaccessreviews", "subjectaccessreview", false),
    review(
        "authorization.k8s.io",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        false,
    ),
    review(
        "authorization.k8s.io",
        "LocalSubjectAccessReview",
        "localsubjectaccessreviews",
        "localsubjectaccessreview",
        true,
    ),
    review(
        "authorization.k8s.io",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview",
        false,
    ),
];

const fn review(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
) -> Resource {
    Resource {
        group,
        version: "v1",
        kind,
        plural,
        singular,
        namespaced,
        short_names: NONE,
        categories: NONE,
        subresources: NONE,
    }
}

/// The review resource a path names, if any: `{plural}` or `namespaces/{ns}/{plural}`.
pub(super) fn find(group: &str, version: &str, path: &[String]) -> Option<(&'static Resource, Option<String>)> {
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    let (namespace, plural) = match segments.as_slice() {
        [plural] => (None, *plural),
        ["namespaces", ns, plural] => (Some(ns.to_string()), *plural),
        _ => return None,
    };
    REVIEWS
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural && r.namespaced == namespace.is_some())
        .map(|r| (r, namespace))
}

const ALLOWED: &str = "wasmkube allows every authenticated user everything until authorization plugins are loaded";

/// Answer a review: the request's object with its `status` filled in.
pub(super) async fn answer(
    state: &AppState,
    resource: &Resource,
    namespace: Option<&str>,
    user: &UserInfo,
    body: Value,
) -> Result<Response, ApiError> {
    let Value::Object(mut review) = body else {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    };
    let api_version = resource.api_version();
    for (field, expected) in [("apiVersion", api_version.as_str()), ("kind", resource.kind)] {
        match review.get(field).and_then(Value::as_str) {
            None | Some("") => {
                review.insert(field.into(), json!(expected));
            }
            Some(given) if given == expected => {}
            Some(given) => {
                return Err(ApiError::bad_request(format!(
                    "the {field} in the data ({given}) does not match {expected}"
                )))
            }
        }
    }
    let spec = review.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = match resource.kind {
        "TokenReview" => {
            let token = spec.get("token").and_then(Value::as_str).unwrap_or_default();
            let audiences: Vec<String> = spec["audiences"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(String::from))
                .collect();
            match state.authenticate_token(token, &audiences).await {
                Ok((reviewed, matched)) => {
                    json!({"authenticated": true, "user": reviewed.to_json(), "audiences": matched})
                }
                Err(why) => json!({"authenticated": false, "error": why, "user": {}}),
            }
        }
        "SelfSubjectReview" => json!({"userInfo": user.to_json()}),
        "SelfSubjectRulesReview" => json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false,
        }),
        kind => {
            if kind == "LocalSubjectAccessReview" {
                let asked = spec.pointer("/resourceAttributes/namespace").and_then(Value::as_str);
                if asked.is_some_and(|asked| Some(asked) != namespace) {
                    return Err(ApiError::bad_request(
                        "spec.resourceAttributes.namespace must match the namespace of the request",
                    ));
                }
            }
            let subject = match kind {
                "SelfSubjectAccessReview" => user.username.clone(),
                _ => spec.get("user").and_then(Value::as_str).unwrap_or_default().to_string(),
            };
            let groups: Vec<&str> = spec["groups"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let anonymous = subject.is_empty() && groups.is_empty()
                || subject == "system:anonymous"
                || groups.contains(&"system:unauthenticated");
            if anonymous {
                json!({"allowed": false, "reason": "the anonymous user may only read /healthz, /livez, /readyz and /version"})
            } else {
                json!({"allowed": true, "reason": ALLOWED})
            }
        }
    };
    review.insert("status".into(), status);
    let metadata = review.entry("metadata").or_insert_with(|| json!({}));
    if let Value::Object(metadata) = metadata {
        metadata.insert("creationTimestamp".into(), Value::Null);
    }
    Ok((StatusCode::CREATED, Json(Value::Object(review))).into_response())
}

/// `serviceaccounts/{name}/token`: a TokenRequest answered with a signed token.
pub(super) async fn token_request(
    state: &AppState,
    namespace: &str,
    name: &str,
    body: Value,
) -> Result<Response, ApiError> {
    let registry = state.registry()?;
    let accounts = registry
        .resource("", "v1", "serviceaccounts")
        .ok_or_else(|| ApiError::not_found("service accounts are not served"))?;
    let account = registry.get(&accounts, Some(namespace), name).await?;
    let uid = account.get("metadata").and_then(|m| m.get("uid")).and_then(Value::as_str).unwrap_or_default();
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let seconds = spec.get("expirationSeconds").and_then(Value::as_i64).unwrap_or(3600);
    if seconds < 600 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("TokenRequest.authentication.k8s.io \"{name}\" is invalid: spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration less than 10 minutes"),
        ));
    }
    let mut audiences: Vec<String> =
        spec["audiences"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect();
    if audiences.is_empty() {
        audiences = state.api_audiences.to_vec();
    }
    let now = now_seconds();
    let token = state.token_signer().await?.issue(namespace, name, uid, &audiences, now, seconds);
    let expires = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(now + seconds).unwrap_or(0));
    let mut spec = spec;
    spec["expirationSeconds"] = json!(seconds);
    spec["audiences"] = json!(audiences);
    let answer = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": null},
        "spec": spec,
        "status": {"token": token, "expirationTimestamp": humantime::format_rfc3339_seconds(expires).to_string()},
    });
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

pub(super) fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
