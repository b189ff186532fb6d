//! Refuse pods whose images are not pinned to a version (`:latest`, or no tag at all).
//! The twin of examples/python-no-latest: the same policy in Rust, for the test that
//! checks both decide alike and for the README's side-by-side.

use wasmkube_sdk::{Admission, Request, Response};

fn unpinned(image: &str) -> bool {
    let name = image.rsplit('/').next().unwrap_or(image);
    image.ends_with(":latest") || (!name.contains(':') && !name.contains('@'))
}

struct NoLatest;

impl Admission for NoLatest {
    fn validate(request: Request) -> Response {
        for field in ["initContainers", "containers"] {
            for image in request.object_pointer_all(&format!("/spec/{field}"), "image") {
                if unpinned(&image) {
                    return Response::deny(format!("{image}: pin a version instead of latest"));
                }
            }
        }
        Response::allow()
    }
}

wasmkube_sdk::export_admission!(NoLatest);
