//! The watch verb and its events: [`WatchEvent`], whose changes are typed values
//! ([`Change`]: what happened, at which revision, to which stored object), shared by every
//! watcher of the resource. The registry knows no wire format: the API encodes a change
//! (a JSON line, a Table row, metadata only, another served version), each shape at most
//! once per event however many watchers want it ([`Change::encoded`]); in-process readers
//! (informers, the API server's own controllers) decode the object and parse no envelope.

use std::sync::Arc;

use bytes::Bytes;

use super::object;
use super::{Error, Object, Registry, Resource, Result, Revision, Selectors};
use crate::storage::cache::{CacheItem, CacheWatch, CachedEvent, Filter, WatchRequest};

pub use crate::storage::cache::EventType;

/// One watch event in the API's terms.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// ADDED, MODIFIED or DELETED.
    Change(Change),
    /// Every event up to this revision has been sent.
    Bookmark(Revision),
    /// The watch ended: the client must list again (410 Gone).
    Expired(String),
}

/// One change to one object as a watcher sees it: the store's event (shared by every
/// watcher of the resource) and its type for this watcher, which a selector may turn from
/// MODIFIED into ADDED (the object entered the selection) or DELETED (it left).
#[derive(Clone)]
pub struct Change {
    event: Arc<CachedEvent>,
    shown: EventType,
}

impl Change {
    /// A change read from another server's watch (`object` as it was served, with its
    /// resourceVersion, which is `revision`).
    pub(crate) fn from_wire(event_type: EventType, object: Bytes, revision: Revision) -> Self {
        let event = CachedEvent::new(revision, event_type, Bytes::new(), object, None);
        Change { event: Arc::new(event), shown: event_type }
    }

    /// ADDED, MODIFIED or DELETED, as this watcher sees it.
    pub fn event_type(&self) -> EventType {
        self.shown
    }

    /// The revision of the write (of the delete, for DELETED).
    pub fn revision(&self) -> Revision {
        self.event.revision()
    }

    /// The object after the change (for DELETED its last state) as the store holds it:
    /// without its resourceVersion. For a look at a field without decoding.
    pub fn stored(&self) -> &Bytes {
        self.event.object()
    }

    /// The object after the change (for DELETED its last state), decoded, carrying its
    /// resourceVersion like every object leaving the registry.
    pub fn object(&self) -> Result<Object> {
        object::decode_at(self.event.object(), self.event.revision())
    }

    /// [`Change::object`] as compact JSON, computed once per event for every reader.
    pub fn object_json(&self) -> Bytes {
        self.event.encoded("registry/object", |event| {
            match object::served_json(event.object(), event.revision()) {
                Ok(json) => json,
                // A stored value that is not an object cannot be served; readers see why.
                Err(e) => Bytes::from(serde_json::to_vec(&e.to_string()).unwrap_or_default()),
            }
        })
    }

    /// This change encoded as `shape`, computed by `encode` once per event and shape for
    /// every watcher (the event type shown is part of the shape: name it in `shape`).
    pub fn encoded(&self, shape: &str, encode: impl FnOnce(&Change) -> Bytes) -> Bytes {
        self.event.encoded(shape, |_| encode(self))
    }
}

impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Change").field("type", &self.shown).field("event", &self.event).finish()
    }
}

impl Registry {
    /// Watch `resource` from `since` (exclusive; 0 = now).
    pub async fn watch(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        since: Revision,
        bookmarks: bool,
        selector: Selectors,
    ) -> Result<impl futures::Stream<Item = WatchEvent> + Send + 'static + use<>> {
        let resource = self.current(resource)?;
        let selector = Arc::new(selector);
        let filter: Option<Filter> = if selector.is_empty() {
            None
        } else {
            let selector = selector.clone();
            Some(Arc::new(move |event: &CachedEvent| {
                let (before, after) = selection(&selector, event);
                before || after
            }))
        };
        let request = WatchRequest { since, key_prefix: Some(resource.list_prefix(namespace)), filter, bookmarks };
        let watch: CacheWatch = resource.cache().watch(request).await.map_err(Error::from_cache)?;
        use futures::StreamExt;
        Ok(watch.map(move |item| match item {
            Ok(CacheItem::Event(event)) => {
                let shown = match (event.event_type(), selector.is_empty()) {
                    (EventType::Modified, false) => match selection(&selector, &event) {
                        (false, true) => EventType::Added,
                        (true, false) => EventType::Deleted,
                        _ => EventType::Modified,
                    },
                    (other, _) => other,
                };
                WatchEvent::Change(Change { event, shown })
            }
            Ok(CacheItem::Progress(revision)) => WatchEvent::Bookmark(revision),
            Err(e) => WatchEvent::Expired(e.to_string()),
        }))
    }
}

/// Whether `selector` selected the object before and after `event`.
fn selection(selector: &Selectors, event: &CachedEvent) -> (bool, bool) {
    let selects = |bytes: &[u8]| serde_json::from_slice::<Object>(bytes).is_ok_and(|o| selector.matches_object(&o));
    let after = selects(event.object());
    let before = match event.event_type() {
        EventType::Added => false,
        EventType::Deleted => after,
        EventType::Modified => event.prev_object().is_some_and(|prev| selects(prev)),
    };
    (before, after)
}
