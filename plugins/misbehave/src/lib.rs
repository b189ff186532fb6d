//! A plugin that misbehaves on purpose, for the host's tests: its config says how it
//! answers `validate` — `allow`, `deny`, `trap` (panics), `loop` (never returns),
//! `alloc` (allocates without bound), `read-secrets` (reads through `client` what its
//! manifest does not grant, and reports the answer), `warn` (allows with a warning, which
//! names the config's `tag` if it has one: `misbehave[7] saw web`, so a test can tell
//! which version decided).

use std::sync::Mutex;

use wasmkube_sdk::{client, Admission, Request, Response, Value};

static BEHAVIOUR: Mutex<String> = Mutex::new(String::new());
static TAG: Mutex<Option<i64>> = Mutex::new(None);

struct Misbehave;

impl Admission for Misbehave {
    fn configure(config: Value) -> Result<(), String> {
        let behaviour = config.get("behaviour").and_then(Value::as_str).unwrap_or("allow").to_string();
        if behaviour == "refuse-config" {
            return Err("this plugin was told to refuse its config".into());
        }
        *BEHAVIOUR.lock().map_err(|_| "poisoned".to_string())? = behaviour;
        *TAG.lock().map_err(|_| "poisoned".to_string())? = config.get("tag").and_then(Value::as_i64);
        Ok(())
    }

    fn validate(request: Request) -> Response {
        let behaviour = BEHAVIOUR.lock().map(|b| b.clone()).unwrap_or_default();
        match behaviour.as_str() {
            "deny" => Response::deny(format!("misbehave denies {}", request.name)),
            "warn" => match TAG.lock().ok().and_then(|t| *t) {
                Some(tag) => Response::allow().warn(format!("misbehave[{tag}] saw {}", request.name)),
                None => Response::allow().warn(format!("misbehave saw {}", request.name)),
            },
            "trap" => panic!("misbehave traps on purpose"),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "read-secrets" => match client::list("", "v1", "secrets", request.namespace.as_deref(), "") {
                Ok(found) => Response::deny(format!("read {} secrets", found.len())),
                Err(e) => Response::deny(format!("client refused: {e:?}")),
            },
            _ => Response::allow(),
        }
    }
}

wasmkube_sdk::export_admission!(Misbehave);
