//! The workload kinds' own rules (upstream's `apps/validation` and `batch/validation`, the
//! part every controller relies on): a selector that is there, is not empty and matches
//! the template's labels; no negative replica count; a valid pod template whose restart
//! policy the kind can run.

use serde_json::Value;

use super::{pod, Field};
use crate::registry::{Cause, LabelSelector};

/// Every problem of workload `kind`'s spec (Deployment, ReplicaSet, StatefulSet,
/// DaemonSet, ReplicationController, Job); other kinds have none here.
pub(in crate::registry) fn validate(kind: &str, object: &serde_json::Map<String, Value>) -> Vec<Cause> {
    if kind == "CronJob" {
        return cron_job(object);
    }
    let restart_policies: &[&str] = match kind {
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "ReplicationController" => &["Always"],
        "Job" => &["OnFailure", "Never"],
        _ => return Vec::new(),
    };
    let at = Field::new("spec");
    let null = Value::Null;
    let spec = object.get("spec").unwrap_or(&null);
    let mut causes = Vec::new();
    if let Some(replicas) = spec.get("replicas").and_then(Value::as_i64) {
        if replicas < 0 {
            causes.push(at.child("replicas").invalid(&Value::from(replicas), "must be greater than or equal to 0"));
        }
    }
    let template = spec.get("template").filter(|t| !t.is_null());
    let labels = template.and_then(|t| t.get("metadata")).and_then(|m| m.get("labels")).and_then(Value::as_object);
    // A ReplicationController's selector is a plain map; the others' a LabelSelector. A
    // Job's is generated from its uid when absent.
    let selector = spec.get("selector").filter(|s| !s.is_null());
    match (kind, selector) {
        ("Job", None) => {}
        (_, None) => causes.push(at.child("selector").required("")),
        ("ReplicationController", Some(selector)) => {
            let wanted = selector.as_object().cloned().unwrap_or_default();
            if wanted.iter().any(|(k, v)| labels.and_then(|l| l.get(k)) != Some(v)) {
                causes.push(at.child("template").child("metadata").child("labels").invalid(
                    &Value::Object(labels.cloned().unwrap_or_default()),
                    "`selector` does not match template `labels`",
                ));
            }
        }
        (_, Some(selector)) => {
            let match_labels = selector.get("matchLabels").and_then(Value::as_object);
            let expressions = selector.get("matchExpressions").and_then(Value::as_array);
            if match_labels.is_none_or(|m| m.is_empty()) && expressions.is_none_or(|e| e.is_empty()) {
                causes.push(
                    at.child("selector")
                        .invalid(selector, &format!("empty selector is invalid for {}", kind.to_lowercase())),
                );
            } else if !selects(selector, labels) {
                causes.push(at.child("template").child("metadata").child("labels").invalid(
                    &Value::Object(labels.cloned().unwrap_or_default()),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    match template {
        None => causes.push(at.child("template").required("")),
        Some(template) => {
            let null = Value::Null;
            let pod_spec = template.get("spec").unwrap_or(&null);
            let at = at.child("template").child("spec");
            let mut found = pod::validate_spec(pod_spec, &at);
            // The kind's controller runs only these (absent: defaulted to the first).
            if let Some(policy) = pod_spec.get("restartPolicy").filter(|p| !p.is_null()) {
                if !policy.as_str().is_some_and(|p| restart_policies.contains(&p)) {
                    found.retain(|c| c.field != at.child("restartPolicy").path());
                    found.push(at.child("restartPolicy").not_supported(policy, restart_policies));
                }
            } else if kind == "Job" {
                found.push(at.child("restartPolicy").required(""));
            }
            causes.extend(found);
        }
    }
    causes
}

const CONCURRENCY_POLICIES: &[&str] = &["Allow", "Forbid", "Replace"];

/// A CronJob: a schedule in the standard five-field cron syntax (or a `@` descriptor), a
/// known concurrency policy, no negative deadline or history limit, and a job template
/// that is a valid Job's.
fn cron_job(object: &serde_json::Map<String, Value>) -> Vec<Cause> {
    let null = Value::Null;
    let spec = object.get("spec").unwrap_or(&null);
    let at = Field::new("spec");
    let mut causes = Vec::new();
    match spec.get("schedule").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        None => causes.push(at.child("schedule").required("")),
        Some(schedule) => {
            let shown = Value::String(schedule.into());
            if let Err(problem) = parse_schedule(schedule) {
                causes.push(at.child("schedule").invalid(&shown, &problem));
            }
            if schedule.contains("TZ") {
                causes.push(
                    at.child("schedule")
                        .invalid(&shown, "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"),
                );
            }
        }
    }
    if let Some(policy) = spec.get("concurrencyPolicy").filter(|p| !p.is_null()) {
        if !policy.as_str().is_some_and(|p| CONCURRENCY_POLICIES.contains(&p)) {
            causes.push(at.child("concurrencyPolicy").not_supported(policy, CONCURRENCY_POLICIES));
        }
    }
    for field in ["startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"] {
        if let Some(n) = spec.get(field).and_then(Value::as_i64).filter(|n| *n < 0) {
            causes.push(at.child(field).invalid(&Value::from(n), "must be greater than or equal to 0"));
        }
    }
    // The template is checked as the Job it makes, its paths under `jobTemplate`.
    let job = serde_json::Map::from_iter([(
        "spec".to_string(),
        spec.pointer("/jobTemplate/spec").cloned().unwrap_or_default(),
    )]);
    for mut cause in validate("Job", &job) {
        cause.field = format!("spec.jobTemplate.{}", cause.field);
        causes.push(cause);
    }
    causes
}

/// A schedule as robfig/cron's `ParseStandard` takes it: five fields, a `@` descriptor,
/// or `@every <duration>`; the problem in its words where they are simple to match.
fn parse_schedule(schedule: &str) -> Result<(), String> {
    let trimmed = schedule.trim();
    if let Some(every) = trimmed.strip_prefix("@every ") {
        return humantime::parse_duration(every.trim())
            .map(|_| ())
            .map_err(|_| format!("failed to parse duration {trimmed}: time: invalid duration {:?}", every.trim()));
    }
    if trimmed.starts_with('@') {
        return match trimmed {
            "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight" | "@hourly" => Ok(()),
            other => Err(format!("unrecognized descriptor: {other}")),
        };
    }
    let fields: Vec<&str> = trimmed.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!("expected exactly 5 fields, found {}: [{}]", fields.len(), fields.join(" ")));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(trimmed)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether a LabelSelector object selects `labels` (a malformed one selects nothing).
fn selects(selector: &Value, labels: Option<&serde_json::Map<String, Value>>) -> bool {
    LabelSelector::from_object(selector).is_ok_and(|selector| selector.matches(labels))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problems(kind: &str, object: Value) -> Vec<String> {
        super::super::problems(|o| validate(kind, o), object)
    }

    fn deployment(replicas: i64, selector: Value, labels: Value, policy: Option<&str>) -> Value {
        let mut spec = json!({"containers": [{"name": "c", "image": "app:1"}]});
        if let Some(policy) = policy {
            spec["restartPolicy"] = json!(policy);
        }
        json!({"spec": {"replicas": replicas, "selector": selector,
            "template": {"metadata": {"labels": labels}, "spec": spec}}})
    }

    #[test]
    fn workloads_as_upstream_validates_them() {
        let sel = json!({"matchLabels": {"app": "web"}});
        assert_eq!(
            problems("Deployment", deployment(2, sel.clone(), json!({"app": "web", "x": "y"}), None)),
            Vec::<String>::new()
        );
        assert_eq!(
            problems("Deployment", deployment(-1, sel.clone(), json!({"app": "web"}), None)),
            ["spec.replicas: Invalid value: -1: must be greater than or equal to 0"]
        );
        assert_eq!(
            problems("Deployment", deployment(1, sel.clone(), json!({"app": "db"}), None)),
            ["spec.template.metadata.labels: Invalid value: {\"app\":\"db\"}: `selector` does not match template `labels`"]
        );
        assert_eq!(
            problems("Deployment", deployment(1, json!({}), json!({"app": "web"}), None)),
            ["spec.selector: Invalid value: {}: empty selector is invalid for deployment"]
        );
        assert_eq!(
            problems("Deployment", deployment(1, sel.clone(), json!({"app": "web"}), Some("Never"))),
            ["spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""]
        );
        let expressions = json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]},
            {"key": "canary", "operator": "DoesNotExist"}]});
        assert_eq!(
            problems("ReplicaSet", deployment(1, expressions, json!({"app": "api"}), None)),
            Vec::<String>::new()
        );
        let job = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "a"}], "restartPolicy": "Always"}}}});
        assert_eq!(
            problems("Job", job),
            ["spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""]
        );
        let empty = json!({"spec": {"selector": sel, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}}});
        assert_eq!(problems("Deployment", empty), ["spec.template.spec.containers: Required value"]);
        assert_eq!(problems("ConfigMap", json!({})), Vec::<String>::new());
    }

    #[test]
    fn a_cron_job_needs_a_standard_schedule_and_a_valid_job() {
        let cron_job = |schedule: &str, policy: &str| {
            json!({"spec": {"schedule": schedule, "concurrencyPolicy": policy, "jobTemplate": {"spec": {"template": {"spec": {
                "containers": [{"name": "c", "image": "a:1"}], "restartPolicy": "OnFailure"}}}}}})
        };
        for schedule in ["*/5 * * * *", "0 0 1 JAN-JUN MON-FRI", "@hourly", "@every 90m", "15,45 8-18 * * 1-5"] {
            assert_eq!(problems("CronJob", cron_job(schedule, "Allow")), Vec::<String>::new(), "{schedule}");
        }
        assert_eq!(
            problems("CronJob", cron_job("lots", "Allow")),
            ["spec.schedule: Invalid value: \"lots\": expected exactly 5 fields, found 1: [lots]"]
        );
        assert_eq!(problems("CronJob", cron_job("61 * * * *", "Allow")).len(), 1);
        assert_eq!(problems("CronJob", cron_job("@fortnightly", "Allow")).len(), 1);
        assert_eq!(
            problems("CronJob", cron_job("TZ=UTC 0 * * * *", "Allow")).last().map(String::as_str),
            Some("spec.schedule: Invalid value: \"TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead")
        );
        assert_eq!(
            problems("CronJob", cron_job("0 * * * *", "Sometimes")),
            ["spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\""]
        );
        let always = json!({"spec": {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "c", "image": "a:1"}], "restartPolicy": "Always"}}}}}});
        assert_eq!(
            problems("CronJob", always),
            ["spec.jobTemplate.spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""]
        );
    }
}
