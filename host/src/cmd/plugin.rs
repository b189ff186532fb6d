//! `wasmkube plugin ...`: the policy author's loop without a cluster (`check`, `test`)
//! and with one (`load`, `list`).
//!
//! `plugin test COMPONENT FIXTURE...` runs an admission plugin on AdmissionReview fixtures
//! (YAML or JSON) in this process — mutate, then validate the mutated object — prints each
//! decision and checks it against the fixture's `expect`:
//!
//! ```yaml
//! apiVersion: admission.k8s.io/v1
//! kind: AdmissionReview
//! request:
//!   operation: CREATE
//!   kind: {group: "", version: v1, kind: Pod}
//!   resource: {group: "", version: v1, resource: pods}
//!   namespace: default
//!   name: web
//!   object: {apiVersion: v1, kind: Pod, metadata: {name: web}, spec: {...}}
//! objects:            # what the plugin's client sees (optional)
//! - {resource: namespaces, object: {apiVersion: v1, kind: Namespace, metadata: {name: default}}}
//! expect:
//!   allowed: false
//!   messageContains: privileged
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde_json::{json, Value};

use crate::plugins::{
    AdmissionRequest, Client, ClientError, GroupVersionKind, GroupVersionResource, Manifest, Operation, PluginMetrics,
    PluginSet, PluginUser, Runtime, RuntimeConfig,
};

#[derive(clap::Subcommand, Debug)]
pub enum PluginCommand {
    /// Scaffold a plugin project that builds as it stands (Rust or Python).
    New(NewOptions),
    /// Build the plugin project in a folder into `<name>.wasm` beside its manifest.
    Build(BuildOptions),
    /// Compile a component and check that it implements its world (and accepts its config).
    Check(CheckOptions),
    /// Run an admission plugin on AdmissionReview fixtures without a server, and check
    /// each decision against the fixture's `expect`.
    Test(TestOptions),
    /// Load a component into a running server as a Plugin object (server-side apply).
    Load(LoadOptions),
    /// List the Plugin objects of a running server with their state.
    List(ServerOptions),
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    Rust,
    Python,
}

#[derive(clap::Args, Debug)]
pub struct NewOptions {
    /// The language of the project.
    #[arg(long, value_enum)]
    lang: Language,
    /// The plugin world; only `admission` so far.
    kind: String,
    /// The plugin's name (a DNS label); the project goes into a folder of that name.
    name: String,
    /// Where the Rust SDK is (default: the one beside the source this binary was built from).
    #[arg(long)]
    sdk: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct BuildOptions {
    /// The project folder (default: the current one).
    #[arg(default_value = ".")]
    dir: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct CheckOptions {
    /// The component (.wasm).
    component: PathBuf,
    /// Its manifest (a Plugin object); default: an admission plugin with config `{}`.
    #[arg(long)]
    manifest: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct TestOptions {
    /// The component (.wasm).
    component: PathBuf,
    /// AdmissionReview fixtures (YAML or JSON files).
    #[arg(required = true)]
    fixtures: Vec<PathBuf>,
    /// Its manifest (config, capabilities, timeout); default: both phases, config `{}`.
    #[arg(long)]
    manifest: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ServerOptions {
    /// The server's data dir (its admin credentials are read from there).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The server's URL (default: the kubeconfig's).
    #[arg(long)]
    server: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct LoadOptions {
    /// The component (.wasm): uploaded to the server, which stores it by digest (so it
    /// need not be on the server's machine).
    component: PathBuf,
    /// The Plugin's name.
    #[arg(long)]
    name: String,
    /// Its manifest, whose spec is applied with `module` set to the component; default:
    /// a validating admission plugin on every request.
    #[arg(long)]
    manifest: Option<PathBuf>,
    #[command(flatten)]
    server: ServerOptions,
}

pub async fn run(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::New(options) => new(options),
        PluginCommand::Build(options) => build(options),
        PluginCommand::Check(options) => check(options).await,
        PluginCommand::Test(options) => test(options).await,
        PluginCommand::Load(options) => load(options).await,
        PluginCommand::List(options) => list(options).await,
    }
}

fn default_manifest(name: &str) -> Manifest {
    let text = format!(
        "apiVersion: wasmkube.io/v1alpha1\nkind: Plugin\nmetadata: {{name: {name}}}\nspec:\n  kind: admission\n  module: component.wasm\n  phases: [mutate, validate]\n  capabilities: [{{apiGroups: ['*'], resources: ['*'], verbs: [get, list]}}]\n"
    );
    // The text above is fixed and valid.
    Manifest::parse(&text).unwrap_or_else(|e| unreachable!("the default manifest is valid: {e}"))
}

fn read_manifest(path: Option<&Path>, name: &str) -> anyhow::Result<Manifest> {
    match path {
        None => Ok(default_manifest(name)),
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading the manifest {}", path.display()))?;
            Manifest::parse(&text).map_err(|e| anyhow::anyhow!("the manifest {} is invalid: {e}", path.display()))
        }
    }
}

fn stem(path: &Path) -> String {
    path.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin").replace('_', "-")
}

/// A runtime with no artifact cache of its own beyond the user's.
fn runtime() -> anyhow::Result<Arc<Runtime>> {
    Ok(Runtime::new(RuntimeConfig::default())?)
}

async fn check(options: CheckOptions) -> anyhow::Result<()> {
    let manifest = read_manifest(options.manifest.as_deref(), &stem(&options.component))?;
    let bytes =
        std::fs::read(&options.component).with_context(|| format!("reading {}", options.component.display()))?;
    let set = PluginSet::new(runtime()?, PluginMetrics::unregistered()?);
    let started = Instant::now();
    let digest =
        set.load(manifest.clone(), bytes.clone(), &options.component.display().to_string()).await.with_context(
            || format!("{} cannot serve as a plugin of the {} world", options.component.display(), manifest.world),
        )?;
    println!(
        "{}: implements wasmkube:plugin/{} ({} bytes, {digest}); loaded in {:.1} ms",
        options.component.display(),
        manifest.world,
        bytes.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}

/// The objects a fixture says the plugin's client sees.
struct FixtureClient {
    objects: Vec<(String, Value)>,
}

impl FixtureClient {
    fn matching<'a>(&'a self, resource: &'a str, namespace: Option<&'a str>) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .iter()
            .filter(move |(r, o)| {
                r == resource
                    && namespace.is_none_or(|ns| o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns))
            })
            .map(|(_, o)| o)
    }
}

#[async_trait::async_trait]
impl Client for FixtureClient {
    async fn get(
        &self,
        _: &str,
        _: &str,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<String>, ClientError> {
        Ok(self
            .matching(resource, namespace)
            .find(|o| o.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
            .map(Value::to_string))
    }

    async fn list(
        &self,
        _: &str,
        _: &str,
        resource: &str,
        namespace: Option<&str>,
        selector: &str,
    ) -> Result<Vec<String>, ClientError> {
        let selector =
            crate::registry::LabelSelector::parse(selector).map_err(|e| ClientError::Invalid(e.to_string()))?;
        Ok(self
            .matching(resource, namespace)
            .filter(|o| o.as_object().is_some_and(|o| selector.matches_object(o)))
            .map(Value::to_string)
            .collect())
    }
}

fn text(value: &Value, pointer: &str) -> String {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// The request of an AdmissionReview fixture.
fn fixture_request(review: &Value) -> anyhow::Result<AdmissionRequest> {
    let request = review.get("request").context("the fixture has no `request`")?;
    let operation = match text(request, "/operation").as_str() {
        "" | "CREATE" => Operation::Create,
        "UPDATE" => Operation::Update,
        "DELETE" => Operation::Delete,
        "CONNECT" => Operation::Connect,
        other => anyhow::bail!("request.operation {other:?} is not CREATE, UPDATE, DELETE or CONNECT"),
    };
    let object = request.get("object").filter(|o| !o.is_null());
    let kind = object.map(|o| text(o, "/kind")).unwrap_or_default();
    let api_version = object.map(|o| text(o, "/apiVersion")).unwrap_or_default();
    let (group, version) =
        api_version.split_once('/').map_or((String::new(), api_version.clone()), |(g, v)| (g.into(), v.into()));
    let string_or =
        |pointer: &str, default: String| Some(text(request, pointer)).filter(|s| !s.is_empty()).unwrap_or(default);
    Ok(AdmissionRequest {
        uid: string_or("/uid", "fixture".into()),
        kind: GroupVersionKind {
            group: string_or("/kind/group", group.clone()),
            version: string_or("/kind/version", version.clone()),
            kind: string_or("/kind/kind", kind.clone()),
        },
        resource: GroupVersionResource {
            group: string_or("/resource/group", group),
            version: string_or("/resource/version", version),
            resource: string_or("/resource/resource", format!("{}s", kind.to_lowercase())),
        },
        sub_resource: Some(text(request, "/subResource")).filter(|s| !s.is_empty()),
        name: string_or("/name", object.map(|o| text(o, "/metadata/name")).unwrap_or_default()),
        namespace: Some(string_or("/namespace", object.map(|o| text(o, "/metadata/namespace")).unwrap_or_default()))
            .filter(|s| !s.is_empty()),
        operation,
        user_info: PluginUser {
            username: string_or("/userInfo/username", "fixture-user".into()),
            uid: text(request, "/userInfo/uid"),
            groups: request
                .pointer("/userInfo/groups")
                .and_then(Value::as_array)
                .map(|g| g.iter().filter_map(Value::as_str).map(String::from).collect())
                .unwrap_or_default(),
        },
        object: object.map(Value::to_string),
        old_object: request.get("oldObject").filter(|o| !o.is_null()).map(Value::to_string),
        dry_run: request.get("dryRun").and_then(Value::as_bool).unwrap_or(false),
    })
}

async fn test(options: TestOptions) -> anyhow::Result<()> {
    let name = stem(&options.component);
    let manifest = read_manifest(options.manifest.as_deref(), &name)?;
    let bytes =
        std::fs::read(&options.component).with_context(|| format!("reading {}", options.component.display()))?;
    let runtime = runtime()?;
    let (mut passed, mut failed) = (0usize, 0usize);
    for path in &options.fixtures {
        let text_of =
            std::fs::read_to_string(path).with_context(|| format!("reading the fixture {}", path.display()))?;
        let review: Value = serde_yaml_ng::from_str(&text_of)
            .with_context(|| format!("the fixture {} is not YAML or JSON", path.display()))?;
        let mut request = fixture_request(&review).with_context(|| format!("the fixture {}", path.display()))?;
        let objects = review
            .get("objects")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|o| {
                (
                    o.get("resource").and_then(Value::as_str).unwrap_or_default().to_string(),
                    o.get("object").cloned().unwrap_or_default(),
                )
            })
            .collect();
        // A fresh plugin set per fixture: its config and client are the fixture's.
        let mut manifest = manifest.clone();
        if let Some(config) = review.get("config") {
            manifest.config = config.to_string();
        }
        let set = PluginSet::new(runtime.clone(), PluginMetrics::unregistered()?);
        set.set_client(Arc::new(FixtureClient { objects }));
        set.load(manifest.clone(), bytes.clone(), "test")
            .await
            .with_context(|| format!("loading {}", options.component.display()))?;
        let module = set.snapshot().first().map(|p| p.module.clone()).context("the plugin loaded")?;
        let mut decision = json!({"allowed": true});
        let mut warnings = Vec::new();
        if manifest.phases.contains(&crate::plugins::Phase::Mutate) {
            let answer = module.mutate(&request).await.map_err(|e| anyhow::anyhow!("mutate failed: {e}"))?;
            warnings.extend(answer.warnings.clone());
            if !answer.allowed {
                decision = json!({"allowed": false, "message": answer.message, "code": answer.code});
            } else if let (Some(patch), Some(object)) = (&answer.patch, &request.object) {
                let mut document: Value = serde_json::from_str(object)?;
                let operations: json_patch::Patch =
                    serde_json::from_str(patch).context("the plugin's patch is not a JSON patch")?;
                json_patch::patch(&mut document, &operations).context("the plugin's patch does not apply")?;
                decision["patched"] = document.clone();
                request.object = Some(document.to_string());
            }
        }
        if decision["allowed"] == true && manifest.phases.contains(&crate::plugins::Phase::Validate) {
            let answer = module.validate(&request).await.map_err(|e| anyhow::anyhow!("validate failed: {e}"))?;
            warnings.extend(answer.warnings.clone());
            if !answer.allowed {
                decision = json!({"allowed": false, "message": answer.message, "code": answer.code});
            }
        }
        let allowed = decision["allowed"] == true;
        let message = decision["message"].as_str().unwrap_or_default().to_string();
        let mut problems = Vec::new();
        if let Some(expect) = review.get("expect") {
            if let Some(want) = expect.get("allowed").and_then(Value::as_bool) {
                if want != allowed {
                    problems.push(format!(
                        "expected {}, got {}",
                        if want { "allowed" } else { "denied" },
                        if allowed { "allowed" } else { "denied" }
                    ));
                }
            }
            if let Some(want) = expect.get("messageContains").and_then(Value::as_str) {
                if !message.contains(want) {
                    problems.push(format!("expected the message to contain {want:?}, got {message:?}"));
                }
            }
            if let Some(want) = expect.get("patched") {
                let got = decision.get("patched").cloned().unwrap_or(Value::Null);
                if !contains(&got, want) {
                    problems.push(format!("expected the patched object to contain {want}, got {got}"));
                }
            }
        }
        let shown = if allowed { "allowed".to_string() } else { format!("denied: {message}") };
        let warned = if warnings.is_empty() { String::new() } else { format!(" (warnings: {})", warnings.join("; ")) };
        if problems.is_empty() {
            passed += 1;
            println!("PASS {}: {shown}{warned}", path.display());
        } else {
            failed += 1;
            println!("FAIL {}: {shown}{warned}: {}", path.display(), problems.join("; "));
        }
    }
    println!("{passed} passed, {failed} failed");
    anyhow::ensure!(failed == 0, "{failed} of {} fixtures failed", passed + failed);
    Ok(())
}

/// Whether `value` holds everything `want` holds (objects: recursively; the rest: equal).
fn contains(value: &Value, want: &Value) -> bool {
    match (value, want) {
        (Value::Object(have), Value::Object(want)) => {
            want.iter().all(|(k, w)| have.get(k).is_some_and(|h| contains(h, w)))
        }
        _ => value == want,
    }
}

/// An HTTPS client with the admin credentials of the server's data dir.
fn admin_client(options: &ServerOptions) -> anyhow::Result<(reqwest::Client, String)> {
    let data_dir = options.data_dir.clone().unwrap_or_else(super::serve::default_data_dir);
    let client = super::admin_https_client(&data_dir, "wasmkube-plugin")?;
    let server = match &options.server {
        Some(server) => server.clone(),
        None => {
            let kubeconfig = std::fs::read_to_string(data_dir.join(super::serve::KUBECONFIG_FILE))
                .with_context(|| format!("reading the kubeconfig in {}", data_dir.display()))?;
            let value: Value = serde_yaml_ng::from_str(&kubeconfig)?;
            text(&value, "/clusters/0/cluster/server")
        }
    };
    Ok((client, server))
}

async fn load(options: LoadOptions) -> anyhow::Result<()> {
    let bytes = std::fs::read(&options.component)
        .with_context(|| format!("reading the component {}", options.component.display()))?;
    let (client, server) = admin_client(&options.server)?;
    let spec = match &options.manifest {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let value: Value = serde_yaml_ng::from_str(&text)?;
            value.get("spec").cloned().context("the manifest has no spec")?
        }
        None => json!({"kind": "admission", "phases": ["validate"]}),
    };
    let upload = client
        .post(format!("{server}/apis/wasmkube.io/v1alpha1/modules"))
        .header("content-type", "application/wasm")
        .body(bytes);
    let what = format!("the module {}", options.component.display());
    let uploaded = answer(upload, &server, &what).await?;
    let digest = uploaded["digest"].as_str().context("the server's answer to the upload names no digest")?;
    let mut spec = spec;
    spec["module"] = json!(digest);
    let object = json!({"apiVersion": "wasmkube.io/v1alpha1", "kind": "Plugin", "metadata": {"name": options.name}, "spec": spec});
    let url =
        format!("{server}/apis/wasmkube.io/v1alpha1/plugins/{}?fieldManager=wasmkube-plugin&force=true", options.name);
    let apply = client.patch(url).header("content-type", "application/apply-patch+yaml").body(object.to_string());
    answer(apply, &server, "the Plugin").await?;
    println!(
        "plugin.wasmkube.io/{} applied (module {} uploaded as {digest})",
        options.name,
        options.component.display()
    );
    Ok(())
}

/// Send `request` to `server`; its JSON answer, or an error naming `what` was refused and
/// the server's message.
async fn answer(request: reqwest::RequestBuilder, server: &str, what: &str) -> anyhow::Result<Value> {
    let response = request.send().await.with_context(|| format!("reaching {server}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    anyhow::ensure!(
        status.is_success(),
        "the server refused {what} ({status}): {}",
        body["message"].as_str().unwrap_or_default()
    );
    Ok(body)
}

async fn list(options: ServerOptions) -> anyhow::Result<()> {
    let (client, server) = admin_client(&options)?;
    let body = answer(client.get(format!("{server}/apis/wasmkube.io/v1alpha1/plugins")), &server, "the list").await?;
    println!("{:<24} {:<10} {:<8} {:<8} {:<20} LAST ERROR", "NAME", "KIND", "MODE", "READY", "DIGEST");
    for item in body["items"].as_array().into_iter().flatten() {
        let ready = item["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .and_then(|c| c["status"].as_str())
            .unwrap_or("-");
        let digest = text(item, "/status/digest");
        let short = digest.get(..19).unwrap_or(&digest);
        println!(
            "{:<24} {:<10} {:<8} {:<8} {:<20} {}",
            text(item, "/metadata/name"),
            text(item, "/spec/kind"),
            Some(text(item, "/spec/mode")).filter(|m| !m.is_empty()).unwrap_or_else(|| "Enforce".into()),
            ready,
            short,
            text(item, "/status/lastError"),
        );
    }
    Ok(())
}

/// The WIT package this binary serves, for projects that need it beside them (Python).
const WIT: &str = include_str!("../../../wit/plugin.wit");

fn new(options: NewOptions) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    if options.kind != "admission" {
        problems.push(format!("{:?}: the plugin kinds served are: admission", options.kind));
    }
    let name = &options.name;
    let label_ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !label_ok {
        problems.push(format!("{name:?}: a plugin's name is a DNS label (lowercase letters, digits and '-')"));
    }
    let dir = PathBuf::from(name);
    if dir.exists() {
        problems.push(format!("{} already exists: choose another name or remove it", dir.display()));
    }
    let sdk = match (options.lang, &options.sdk) {
        (Language::Rust, Some(sdk)) => Some(sdk.clone()),
        (Language::Rust, None) => Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/rust")),
        (Language::Python, _) => None,
    };
    let sdk = match sdk {
        Some(sdk) => match std::fs::canonicalize(&sdk) {
            Ok(sdk) => Some(sdk),
            Err(_) => {
                problems.push(format!(
                    "the Rust SDK is not at {}: pass --sdk <path to wasmkube's sdk/rust>",
                    sdk.display()
                ));
                None
            }
        },
        None => None,
    };
    super::InvalidOptions::check(problems)?;
    let file = name.replace('-', "_");
    std::fs::create_dir_all(dir.join("fixtures"))?;
    let manifest = format!(
        "apiVersion: wasmkube.io/v1alpha1\nkind: Plugin\nmetadata: {{name: {name}}}\nspec:\n  kind: admission\n  module: {file}.wasm\n  phases: [validate]\n  rules: [{{apiGroups: ['*'], resources: ['*'], operations: [CREATE, UPDATE]}}]\n  timeout: 500ms\n  failurePolicy: Fail\n"
    );
    std::fs::write(dir.join("manifest.yaml"), manifest)?;
    let fixture = |label: &str, allowed: bool| {
        format!(
            "apiVersion: admission.k8s.io/v1\nkind: AdmissionReview\nrequest:\n  operation: CREATE\n  namespace: default\n  object: {{apiVersion: v1, kind: ConfigMap, metadata: {{name: c, namespace: default, labels: {{{label}}}}}}}\nexpect: {{allowed: {allowed}}}\n"
        )
    };
    std::fs::write(dir.join("fixtures/allowed.yaml"), fixture("app: web", true))?;
    std::fs::write(dir.join("fixtures/denied.yaml"), fixture("example.com/deny: 'true'", false))?;
    match options.lang {
        Language::Rust => {
            let sdk = sdk.map(|s| s.display().to_string()).unwrap_or_default();
            std::fs::create_dir_all(dir.join("src"))?;
            std::fs::write(
                dir.join("Cargo.toml"),
                format!(
                    "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nwasmkube-sdk = {{ path = \"{sdk}\" }}\n\n[profile.release]\nopt-level = \"s\"\nlto = true\nstrip = true\npanic = \"abort\"\n\n# A project of its own, not a member of any workspace around it.\n[workspace]\n"
                ),
            )?;
            std::fs::write(
                dir.join("src/lib.rs"),
                "//! An admission plugin: refuses objects labelled `example.com/deny=true`.\n\nuse wasmkube_sdk::{Admission, Request, Response};\n\nstruct Plugin;\n\nimpl Admission for Plugin {\n    fn validate(request: Request) -> Response {\n        match request.label(\"example.com/deny\") {\n            Some(\"true\") => Response::deny(format!(\"{} is labelled example.com/deny=true\", request.name)),\n            _ => Response::allow(),\n        }\n    }\n}\n\nwasmkube_sdk::export_admission!(Plugin);\n",
            )?;
        }
        Language::Python => {
            std::fs::create_dir_all(dir.join("wit"))?;
            std::fs::write(dir.join("wit/plugin.wit"), WIT)?;
            std::fs::write(
                dir.join("app.py"),
                "\"\"\"An admission plugin: refuses objects labelled example.com/deny=true.\"\"\"\n\nimport json\n\nfrom wit_world import exports\nfrom wit_world.imports.admission_types import AdmissionResponse\n\n\ndef answer(allowed, message=None):\n    return AdmissionResponse(allowed=allowed, message=message, code=None, patch=None, warnings=[])\n\n\nclass Admit(exports.Admit):\n    def configure(self, config):\n        json.loads(config)\n\n    def mutate(self, request):\n        return answer(True)\n\n    def validate(self, request):\n        obj = json.loads(request.object) if request.object else {}\n        labels = obj.get(\"metadata\", {}).get(\"labels\", {})\n        if labels.get(\"example.com/deny\") == \"true\":\n            return answer(False, f\"{request.name} is labelled example.com/deny=true\")\n        return answer(True)\n",
            )?;
        }
    }
    println!("created {}/ ({:?}): build it with `wasmkube plugin build {name}`, then `wasmkube plugin test {name}/{file}.wasm {name}/fixtures/*.yaml`", name, options.lang);
    Ok(())
}

fn build(options: BuildOptions) -> anyhow::Result<()> {
    let dir = std::fs::canonicalize(&options.dir).with_context(|| format!("finding {}", options.dir.display()))?;
    let manifest_text = std::fs::read_to_string(dir.join("manifest.yaml"))
        .with_context(|| format!("{} has no manifest.yaml (make one with `wasmkube plugin new`)", dir.display()))?;
    let manifest = Manifest::parse(&manifest_text).map_err(|e| anyhow::anyhow!("manifest.yaml is invalid: {e}"))?;
    let output = dir.join(&manifest.module);
    let run = |command: &mut std::process::Command, what: &str| -> anyhow::Result<()> {
        let status = command.status().with_context(|| format!("running {what}"))?;
        anyhow::ensure!(status.success(), "{what} failed ({status})");
        Ok(())
    };
    if dir.join("Cargo.toml").exists() {
        let target = dir.join("target");
        run(
            std::process::Command::new("cargo")
                .args(["build", "--release", "--target", "wasm32-wasip2"])
                .current_dir(&dir)
                .env("CARGO_TARGET_DIR", &target),
            "cargo build --target wasm32-wasip2 (is the target installed? rustup target add wasm32-wasip2)",
        )?;
        let built = target.join("wasm32-wasip2/release").join(format!("{}.wasm", manifest.name.replace('-', "_")));
        std::fs::copy(&built, &output).with_context(|| format!("copying {}", built.display()))?;
    } else if dir.join("app.py").exists() {
        let componentize = std::env::var_os("WASMKUBE_PYTHON")
            .map(PathBuf::from)
            .and_then(|python| python.parent().map(|bin| bin.join("componentize-py")))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("componentize-py"));
        run(
            std::process::Command::new(&componentize)
                .args(["-d", "wit", "-w", "admission", "componentize", "app", "-o"])
                .arg(&output)
                .current_dir(&dir),
            "componentize-py (install it with: pip install componentize-py)",
        )?;
    } else {
        anyhow::bail!("{} holds neither Cargo.toml (Rust) nor app.py (Python)", dir.display());
    }
    println!("built {}", output.display());
    Ok(())
}
