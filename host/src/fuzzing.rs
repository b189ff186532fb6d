//! Inputs for the fuzz targets of the body decoders (unit tests only): arbitrary JSON
//! values drawn from the words Kubernetes objects and patches use, so that generated
//! inputs reach the decoders' interesting paths (directives, merge keys, nesting) and
//! not only their first syntax check.
//!
//! Each target runs [`cases`] inputs from one fixed seed, so a run in CI is bounded and
//! repeatable; `WASMKUBE_FUZZ_CASES` runs longer and `WASMKUBE_FUZZ_SEED` (a number, or
//! `random`) explores elsewhere. A failure prints its smallest input: add it to the
//! target's unit tests when fixing it.

use proptest::prelude::*;
use serde_json::Value;

/// How many inputs each fuzz target tries (`WASMKUBE_FUZZ_CASES`, default 10,000).
pub(crate) fn cases() -> u32 {
    std::env::var("WASMKUBE_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(10_000)
}

/// Where the inputs come from (`WASMKUBE_FUZZ_SEED`: a number or `random`; default fixed).
fn seed() -> proptest::test_runner::RngSeed {
    use proptest::test_runner::RngSeed;
    match std::env::var("WASMKUBE_FUZZ_SEED").ok().as_deref() {
        Some("random") => RngSeed::Random,
        Some(number) => number.parse().map_or(RngSeed::Fixed(SEED), RngSeed::Fixed),
        None => RngSeed::Fixed(SEED),
    }
}

/// The seed of the runs in CI.
const SEED: u64 = 0x7761_736d_6b75_6265;

/// The proptest configuration of a fuzz target.
pub(crate) fn config() -> ProptestConfig {
    ProptestConfig { cases: cases(), failure_persistence: None, rng_seed: seed(), ..ProptestConfig::default() }
}

/// Keys of Kubernetes objects and strategic-merge directives.
const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "labels",
    "spec",
    "containers",
    "image",
    "ports",
    "containerPort",
    "protocol",
    "env",
    "value",
    "volumes",
    "tolerations",
    "finalizers",
    "$patch",
    "$retainKeys",
    "$deleteFromPrimaryList/finalizers",
    "$setElementOrder/containers",
    "$setElementOrder/ports",
    "a",
    "",
];

/// Strings, directive values among them.
const STRINGS: &[&str] = &["replace", "merge", "delete", "web", "TCP", "", "a.b", "\u{0}", "ü"];

/// A JSON value up to a few levels deep, made of [`KEYS`] and [`STRINGS`].
pub(crate) fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        proptest::sample::select(STRINGS).prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

/// JSON text: a value's encoding with a few bytes changed, cut or repeated, so that most
/// inputs are nearly valid.
pub(crate) fn json_text() -> impl Strategy<Value = Vec<u8>> {
    (json_value(), proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..4)).prop_map(
        |(value, edits)| {
            let mut text = serde_json::to_vec(&value).unwrap_or_default();
            for (at, byte, how) in edits {
                if text.is_empty() {
                    break;
                }
                let i = at.index(text.len());
                match how {
                    0 => text[i] = byte,
                    1 => text.truncate(i),
                    _ => {
                        let piece = text[i..].to_vec();
                        text.extend_from_slice(&piece);
                    }
                }
            }
            text
        },
    )
}
