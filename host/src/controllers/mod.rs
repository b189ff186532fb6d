//! Controllers that run inside the server. Until the controller host (informers, work
//! queues, leader election, controllers as plugins) exists, only the namespace finalizer
//! lives here, so that deleting a namespace works the way kubectl users expect.

pub mod namespace;
