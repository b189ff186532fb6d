//! For unit tests across the host: a seeded registry on a real embedded store in a temp
//! dir (a real store, not a fake), removed when dropped.

use std::sync::Arc;

use super::Registry;
use crate::storage::embedded::EmbeddedStore;
use crate::storage::{StorageMetrics, Store};

pub(crate) struct TestRegistry {
    pub(crate) registry: Arc<Registry>,
    pub(crate) store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    /// A fresh store, a registry over it, and what `seed` creates in a new cluster.
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(
            EmbeddedStore::open(&dir.path().join("store"), StorageMetrics::unregistered()).await.expect("store"),
        );
        let registry = Arc::new(Registry::new(store.clone(), StorageMetrics::unregistered()));
        registry.seed(None).await.expect("seed");
        Self { registry, store, _dir: dir }
    }
}
