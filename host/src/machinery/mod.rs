//! The machinery the components share — this host's kube-runtime: shared informers
//! (`informer`: a list-and-watch cache per resource, its watcher a state machine stepped
//! once per event), work queues with per-key backoff (`queue`) and leader election on a
//! Lease (`leader`). The controller host, the scheduler and the simulated nodes use it,
//! and so will the node agent and the service proxy.
//!
//! It stands above the registry (it reads and writes through its verbs) and below every
//! component; it knows no component.

pub mod cidr;
pub mod events;
pub mod informer;
pub mod leader;
pub mod queue;
