//! The node agent [kubelet]. Today: simulated nodes (`sim`), which register Nodes and
//! run the pods bound to them on paper, for controllers, the scheduler and scale tests.

pub mod sim;
