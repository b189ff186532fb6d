"""An HTTP server component in Python (componentize-py): it exports only
wasi:http/incoming-handler, so a pod runs it as a server on its pod IP, each request on a
fresh instance, and `kubectl exec` into it answers that it exports no wasi:cli/run.

- GET /           "hello from <HOSTNAME> in Python"
- GET /env/NAME   NAME's value
- anything else   404
"""

import os

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = request.path_with_query() or "/"
        print(f"GET {path}", flush=True)
        if path == "/":
            status, text = 200, f"hello from {os.environ.get('HOSTNAME', 'a WASI component')} in Python\n"
        elif path.startswith("/env/"):
            status, text = 200, os.environ.get(path[len("/env/"):], "") + "\n"
        else:
            status, text = 404, f"no route for {path}\n"
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        response.set_status_code(status)
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        stream = body.write()
        stream.blocking_write_and_flush(text.encode())
        stream.__exit__(None, None, None)
        OutgoingBody.finish(body, None)
