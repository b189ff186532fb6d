//! `wasmkube token create [--ttl 24h] [--description TEXT]`: a bootstrap token for a node
//! to join with (`kubeadm token create`), printed in k3s' K10 form — the hash of the cluster
//! CA the node will check, then `<id>.<secret>`. The server is found as kubectl finds it.

use anyhow::Context;

use crate::auth::bootstrap::{BootstrapToken, JoinToken, NAMESPACE};

#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a bootstrap token for joining nodes and print it (K10<CA hash>::<id>.<secret>).
    Create(CreateOptions),
}

#[derive(clap::Args, Debug)]
pub struct CreateOptions {
    /// How long the token is valid (`0` for ever).
    #[arg(long, default_value = "24h")]
    ttl: String,
    /// What the token is for (kept in its Secret).
    #[arg(long, default_value = "a token for joining nodes, made by wasmkube token create")]
    description: String,
    #[command(flatten)]
    client: super::image::ClientOptions,
}

pub async fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create(options) => create(options).await,
    }
}

async fn create(options: CreateOptions) -> anyhow::Result<()> {
    let expiration = match options.ttl.trim() {
        "0" | "0s" => None,
        ttl => {
            let ttl = humantime::parse_duration(ttl)
                .with_context(|| format!("--ttl {ttl:?} is not a duration such as 24h, 30m or 0"))?;
            Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now() + ttl).to_string())
        }
    };
    let server = super::image::connect(&options.client)?;
    let ca = server
        .client
        .get(format!("{}/cacerts", server.api))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("reading the cluster CA from {}/cacerts", server.api))?
        .text()
        .await?;
    let token = BootstrapToken::generate();
    let secret = token.secret(&options.description, expiration.as_deref());
    let response = server
        .client
        .post(format!("{}/api/v1/namespaces/{NAMESPACE}/secrets", server.api))
        .json(&secret)
        .send()
        .await
        .with_context(|| format!("reaching {}", server.api))?;
    if !response.status().is_success() {
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        anyhow::bail!(
            "the server refused the token's Secret ({status}): {}",
            body["message"].as_str().unwrap_or("no message")
        );
    }
    println!("{}", JoinToken::format(&ca, &token));
    Ok(())
}
