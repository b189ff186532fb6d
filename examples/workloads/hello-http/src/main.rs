//! An HTTP server component for pods: it exports `wasi:http/incoming-handler` (each request
//! on a fresh instance) and, through `main`, `wasi:cli/run` (what `kubectl exec` runs).
//!
//! - `GET /`           "hello from <HOSTNAME>" (the pod's name)
//! - `GET /env/NAME`   NAME's value
//! - `GET /trap`       traps (the request is answered 500; the pod lives on)
//! - `GET /spin`       loops forever (the request times out; the pod lives on)
//! - anything else     echoes the method and path
//!
//! Each request is logged on stdout.

use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

wasi::http::proxy::export!(Hello);

struct Hello;

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_else(|| "/".into());
        let method = format!("{:?}", request.method());
        println!("{method} {path}");
        let (status, text) = if path == "/" {
            (200, format!("hello from {}\n", std::env::var("HOSTNAME").unwrap_or_else(|_| "a WASI component".into())))
        } else if let Some(name) = path.strip_prefix("/env/") {
            (200, format!("{}\n", std::env::var(name).unwrap_or_default()))
        } else if path == "/trap" {
            std::process::abort()
        } else if path == "/spin" {
            #[allow(clippy::empty_loop)]
            loop {}
        } else {
            (404, format!("no route for {method} {path}\n"))
        };
        let response = OutgoingResponse::new(Fields::new());
        let _ = response.set_status_code(status);
        let Ok(body) = response.body() else { return };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(stream) = body.write() {
            let _ = stream.blocking_write_and_flush(text.as_bytes());
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

/// Run as a command (`kubectl exec POD -- hello-http ARGS`): `env NAME` prints NAME's value,
/// `exit N` exits with N, anything else is echoed.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["env", name] => println!("{}", std::env::var(name).unwrap_or_default()),
        ["exit", code] => {
            eprintln!("exiting with {code}");
            // WASI 0.2's exit is success or failure; exit-with-code carries the code.
            wasip2::cli::exit::exit_with_code(code.parse().unwrap_or(1));
        }
        _ => println!("hello-http serves HTTP; run as a command with arguments {args:?}"),
    }
}
