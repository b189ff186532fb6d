//! Controllers that run inside the server. Until the controller host (informers, work
//! queues, leader election, controllers as plugins) exists, the namespace finalizer lives
//! here, so that deleting a namespace works the way kubectl users expect; and the CRD
//! controller, which is part of the API server itself (every server runs it).

pub mod crd;
pub mod namespace;
pub mod plugins;
