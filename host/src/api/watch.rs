//! Watches over HTTP: a stream of JSON lines (`{"type":…,"object":…}`), one per event, in
//! the shape the client asked for — the object (in the version it watches through), its
//! metadata only, or a one-row Table (`kubectl get -w`). The registry hands over typed
//! changes; every encoding is made here, each shape at most once per event however many
//! watchers want it (the registry's [`Change::encoded`] keeps them).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{json, Value};

use super::shape::{object_revision, partial_object_metadata, Version};
use super::{table, ApiError};
use crate::registry::{Change, EventType, ListOptions, Object, Registry, Resource, Selectors, WatchEvent};

/// The most watch lines written out as one chunk.
const WATCH_BATCH: usize = 256;

/// What a watch asked for, read from its query.
pub(super) struct WatchOptions {
    /// `resourceVersion`: None or 0 watches from now, after the current state.
    pub(super) resource_version: Option<i64>,
    /// `allowWatchBookmarks`.
    pub(super) bookmarks: bool,
    /// `sendInitialEvents`, when the client set it.
    pub(super) send_initial_events: Option<bool>,
    pub(super) selectors: Selectors,
    /// How long the watch stays open.
    pub(super) timeout: Duration,
}

/// What a watch's events carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Shape {
    /// The objects, in the version watched through.
    Object,
    /// `PartialObjectMetadata`.
    Metadata,
    /// One-row Tables; the first carries the column definitions.
    Table,
}

/// A watch: the current state as ADDED events when no resourceVersion is given (or "0"),
/// then every change, one JSON object per line.
pub(super) async fn watch(
    registry: &Registry,
    resource: &Resource,
    namespace: Option<&str>,
    options: WatchOptions,
    shape: Shape,
) -> Result<Response, ApiError> {
    let WatchOptions { resource_version: requested, bookmarks, send_initial_events, selectors, timeout } = options;
    // Kubernetes: without a resourceVersion (or "0") a watch starts with the current state;
    // `sendInitialEvents` asks for that explicitly (from any version) and for a bookmark
    // annotated `k8s.io/initial-events-end` once it is sent.
    let send_initial = send_initial_events.unwrap_or(!matches!(requested, Some(rv) if rv > 0));
    if send_initial_events.is_some() && !bookmarks {
        return Err(ApiError::bad_request("sendInitialEvents requires allowWatchBookmarks=true"));
    }
    let mut encoder = Encoder::new(resource, shape);
    let mut initial = Vec::new();
    let since = if send_initial {
        let options =
            ListOptions { resource_version: requested, selectors: selectors.clone(), ..ListOptions::default() };
        let list = registry.list(resource, namespace, options).await?;
        for item in list.items {
            initial.push(encoder.object(EventType::Added, item));
        }
        if send_initial_events.is_some() {
            initial.push(line(
                "BOOKMARK",
                &json!({"kind": resource.kind, "apiVersion": resource.api_version(), "metadata": {
                    "resourceVersion": list.resource_version.to_string(),
                    "annotations": {"k8s.io/initial-events-end": "true"},
                }}),
            ));
        }
        list.resource_version
    } else {
        match requested {
            Some(rv) if rv > 0 => rv,
            _ => {
                registry
                    .list(resource, namespace, ListOptions { limit: 1, ..ListOptions::default() })
                    .await?
                    .resource_version
            }
        }
    };
    let events = match registry.watch(resource, namespace, since, bookmarks, selectors).await {
        Ok(events) => events.boxed(),
        // A watch from a revision too old to replay is an ERROR event in the stream, not a failed request.
        Err(crate::registry::Error::Gone(message)) => {
            futures::stream::once(async move { WatchEvent::Expired(message) }).boxed()
        }
        Err(e) => return Err(e.into()),
    };
    let (kind, api_version) = (resource.kind, resource.api_version());
    let lines = events.map(move |event| match event {
        WatchEvent::Change(change) => encoder.change(&change),
        WatchEvent::Bookmark(revision) => line(
            "BOOKMARK",
            &json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": revision.to_string()}}),
        ),
        WatchEvent::Expired(message) => line("ERROR", &ApiError::new(StatusCode::GONE, "Expired", message).status()),
    });
    // Lines that are ready together leave as one chunk: one TLS record and one write for a
    // burst, not one per event (what lets one server feed a thousand watchers).
    let chunks =
        futures::stream::iter(initial).chain(lines).ready_chunks(WATCH_BATCH).map(
            |lines| match <[Bytes; 1]>::try_from(lines) {
                Ok([one]) => one,
                Err(lines) => Bytes::from(lines.concat()),
            },
        );
    let stream = chunks.take_until(tokio::time::sleep(timeout)).map(Ok::<_, std::convert::Infallible>);
    Ok(([(header::CONTENT_TYPE, "application/json")], Body::from_stream(stream)).into_response())
}

/// Turns objects and changes into this watch's lines.
struct Encoder {
    shape: Shape,
    resource: Resource,
    version: Version,
    /// The name of this watch's shape of an event of each type (ADDED, MODIFIED, DELETED):
    /// watchers that name the same shape share its encoding.
    names: [String; 3],
    /// No Table row has been sent yet: the next one carries the column definitions.
    first_row: bool,
}

impl Encoder {
    fn new(resource: &Resource, shape: Shape) -> Self {
        let version = Version::of(resource);
        let name = |event_type: EventType| {
            let event_type = type_name(event_type);
            match shape {
                // Without a conversion every version shows the stored object.
                Shape::Object if !version.converts => format!("api/object/{event_type}"),
                Shape::Object => format!("api/object/{}/{event_type}", version.api_version()),
                Shape::Metadata => format!("api/metadata/{event_type}"),
                Shape::Table => format!("api/table/{}/{event_type}", version.api_version()),
            }
        };
        let names = [EventType::Added, EventType::Modified, EventType::Deleted].map(name);
        Self { shape, resource: resource.clone(), version, names, first_row: true }
    }

    /// A change's line: shared with every watcher of this shape, but for the first Table
    /// row, which alone carries the column definitions.
    fn change(&mut self, change: &Change) -> Bytes {
        if self.shape == Shape::Table && self.first_row {
            return match change.object() {
                Ok(object) => self.object(change.event_type(), object),
                Err(e) => line("ERROR", &e.to_string().into()),
            };
        }
        let name = &self.names[match change.event_type() {
            EventType::Added => 0,
            EventType::Modified => 1,
            EventType::Deleted => 2,
        }];
        change.encoded(name, |change| {
            let event_type = change.event_type();
            if self.shape == Shape::Object && !self.version.converts {
                // The object as served, already JSON: no parse, no copy but the line's.
                return raw_line(type_name(event_type), &change.object_json());
            }
            match change.object() {
                Ok(object) => self.shown(event_type, object),
                Err(e) => line("ERROR", &e.to_string().into()),
            }
        })
    }

    /// An object's line (a listed object, or a change decoded).
    fn object(&mut self, event_type: EventType, object: Object) -> Bytes {
        if self.shape != Shape::Table || !self.first_row {
            return self.shown(event_type, object);
        }
        self.first_row = false;
        let revision = object_revision(&object);
        line(type_name(event_type), &table::table(&self.resource, &[object], revision))
    }

    /// An object's line in this watch's shape (a Table row without column definitions).
    fn shown(&self, event_type: EventType, mut object: Object) -> Bytes {
        let event_type = type_name(event_type);
        match self.shape {
            Shape::Object => {
                self.version.set(&mut object);
                line(event_type, &Value::Object(object))
            }
            Shape::Metadata => line(event_type, &Value::Object(partial_object_metadata(&object))),
            Shape::Table => {
                let revision = object_revision(&object);
                let mut shown = table::table(&self.resource, &[object], revision);
                shown["columnDefinitions"] = json!([]);
                line(event_type, &shown)
            }
        }
    }
}

fn type_name(event_type: EventType) -> &'static str {
    match event_type {
        EventType::Added => "ADDED",
        EventType::Modified => "MODIFIED",
        EventType::Deleted => "DELETED",
    }
}

/// `{"type":…,"object":…}` and a newline.
fn line(event_type: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": event_type, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// [`line`] around an object that is JSON already.
fn raw_line(event_type: &str, object: &[u8]) -> Bytes {
    let mut line = Vec::with_capacity(object.len() + 32);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(event_type.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(object);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

#[cfg(test)]
mod tests {
    use futures::{Stream, StreamExt};
    use serde_json::{json, Value};

    use super::{Encoder, Shape};
    use crate::registry::testing::TestRegistry;
    use crate::registry::{Change, LabelSelector, Selectors, WatchEvent, WriteOptions};

    async fn next_change(events: &mut (impl Stream<Item = WatchEvent> + Unpin)) -> Change {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.next()).await;
        match event.expect("an event in time").expect("the watch goes on") {
            WatchEvent::Change(change) => change,
            other => panic!("{other:?}"),
        }
    }

    fn parse(line: &[u8]) -> Value {
        assert!(line.ends_with(b"\n"), "a line");
        serde_json::from_slice(line).expect("JSON")
    }

    /// Two watchers of one resource get each shape of an event as the same bytes (made
    /// once), the first Table row alone carries the columns, and a watcher whose selector
    /// the object leaves sees a DELETED line of its own.
    #[tokio::test]
    async fn each_shape_of_an_event_is_encoded_once_for_every_watcher() {
        let test = TestRegistry::start().await;
        let registry = &test.registry;
        let cms = registry.resource("", "v1", "configmaps").expect("served");
        let watch = |selectors: Selectors| registry.watch(&cms, Some("default"), 0, false, selectors);
        let (mut a, mut b) = (
            Box::pin(watch(Selectors::default()).await.expect("a")),
            Box::pin(watch(Selectors::default()).await.expect("b")),
        );
        let labelled = Selectors { labels: LabelSelector::parse("app=x").expect("selector"), ..Selectors::default() };
        let mut selected = Box::pin(watch(labelled).await.expect("selected"));

        let options = WriteOptions::default();
        let cm = json!({"metadata": {"name": "one", "labels": {"app": "x"}}, "data": {"k": "1"}});
        registry.create(&cms, Some("default"), cm, &options).await.expect("create");
        let unlabelled = json!({"metadata": {"name": "one"}, "data": {"k": "2"}});
        let written = registry.update(&cms, Some("default"), "one", unlabelled, None, &options).await.expect("update");

        let (added_a, added_b) = (next_change(&mut a).await, next_change(&mut b).await);
        let (modified_a, modified_b) = (next_change(&mut a).await, next_change(&mut b).await);
        let encoders = |shape| (Encoder::new(&cms, shape), Encoder::new(&cms, shape));

        let (mut object_a, mut object_b) = encoders(Shape::Object);
        let line = object_a.change(&modified_a);
        assert_eq!(line.as_ptr(), object_b.change(&modified_b).as_ptr(), "encoded once for both watchers");
        let shown = parse(&line);
        assert_eq!(shown["type"], "MODIFIED");
        assert_eq!(shown["object"], Value::Object(written.object), "the object as the registry serves it");

        let (mut metadata_a, mut metadata_b) = encoders(Shape::Metadata);
        let line = metadata_a.change(&added_a);
        assert_eq!(line.as_ptr(), metadata_b.change(&added_b).as_ptr());
        let shown = parse(&line);
        assert_eq!(
            (shown["type"].as_str(), shown["object"]["kind"].as_str()),
            (Some("ADDED"), Some("PartialObjectMetadata"))
        );
        assert!(shown["object"].get("data").is_none(), "{shown}");

        let (mut table_a, mut table_b) = encoders(Shape::Table);
        let (first_a, first_b) = (table_a.change(&added_a), table_b.change(&added_b));
        assert_ne!(first_a.as_ptr(), first_b.as_ptr(), "a first row is each watcher's own");
        assert!(parse(&first_a)["object"]["columnDefinitions"].as_array().is_some_and(|c| !c.is_empty()));
        let row = table_a.change(&modified_a);
        assert_eq!(row.as_ptr(), table_b.change(&modified_b).as_ptr());
        let shown = parse(&row);
        assert_eq!(shown["object"]["columnDefinitions"], json!([]));
        assert_eq!(shown["object"]["rows"][0]["cells"][0], "one");

        // The selected watcher saw the object enter, then leave its selection.
        let (entered, left) = (next_change(&mut selected).await, next_change(&mut selected).await);
        let mut object_selected = Encoder::new(&cms, Shape::Object);
        assert_eq!(parse(&object_selected.change(&entered))["type"], "ADDED");
        let line = object_selected.change(&left);
        assert_ne!(line.as_ptr(), object_a.change(&modified_a).as_ptr());
        assert_eq!(parse(&line)["type"], "DELETED");
    }
}
