//! A controller that does nothing: it reconciles ConfigMaps and answers no actions. The
//! controller benchmark measures what a reconcile costs with it (the host's call, the
//! request's JSON crossing into the component and being parsed, the answer coming back)
//! beside the same no-op compiled natively.

use wasmkube_controller_sdk::{gvr, Controller, Reconciled, Registration, Request, Value};

struct Noop;

impl Controller for Noop {
    fn configure(_config: Value) -> Result<Registration, String> {
        Ok(Registration::reconciles(gvr("", "v1", "configmaps")))
    }

    fn reconcile(request: Request) -> Result<Reconciled, String> {
        Ok(Reconciled::done(if request.object.is_some() { "exists" } else { "gone" }))
    }
}

wasmkube_controller_sdk::export_controller!(Noop);
