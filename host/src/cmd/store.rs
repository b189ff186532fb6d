//! `wasmkube store ...`: snapshots of the embedded store (`save` works while the server
//! runs, through the admin socket in the data dir) and a write-load generator used by the
//! crash test and by anyone measuring a disk.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::storage::embedded::{self, EmbeddedStore};
use crate::storage::{StorageMetrics, Store, StoreError};

/// The admin socket's name inside the store directory; only the data dir's owner can reach it.
const ADMIN_SOCKET: &str = "admin.sock";

#[derive(clap::Subcommand, Debug)]
pub enum StoreCommand {
    /// Save or restore a snapshot of the embedded store (like `etcdctl snapshot`).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Write keys (`/load/<pid>/<writer>/<n>`) from concurrent writers until killed or done,
    /// printing `ACK <key> <revision>` for every acknowledged (durable) write.
    Load(LoadOptions),
}

#[derive(clap::Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Write a consistent snapshot to FILE; works while `wasmkube serve` runs on the data dir.
    Save {
        /// The server's --data-dir.
        #[arg(long)]
        data_dir: PathBuf,
        file: PathBuf,
    },
    /// Restore FILE into a new, empty --data-dir.
    Restore {
        /// The data dir to create; must not exist or be empty.
        #[arg(long)]
        data_dir: PathBuf,
        file: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
pub struct LoadOptions {
    #[arg(long)]
    data_dir: PathBuf,
    /// Concurrent writers.
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Keys per writer; 0 writes until killed.
    #[arg(long, default_value_t = 0)]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 1024)]
    value_bytes: usize,
}

pub async fn run(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Snapshot(SnapshotCommand::Save { data_dir, file }) => save(&data_dir, &file).await,
        StoreCommand::Snapshot(SnapshotCommand::Restore { data_dir, file }) => restore(&data_dir, &file).await,
        StoreCommand::Load(options) => load(options).await,
    }
}

async fn save(data_dir: &Path, file: &Path) -> anyhow::Result<()> {
    let dir = data_dir.to_path_buf();
    let partial = file.with_extension("partial");
    let info = match EmbeddedStore::open(&dir, StorageMetrics::unregistered()).await {
        Ok(store) => {
            let store = Arc::new(store);
            let (writer, path) = (store.clone(), partial.clone());
            let info = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let mut out =
                    std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
                let info = writer.write_snapshot(&mut out)?;
                out.sync_all()?;
                Ok(info)
            })
            .await??;
            store.close().await?;
            info
        }
        Err(StoreError::DataDirInUse(_)) => save_through_server(&dir, &partial).await?,
        Err(e) => return Err(e).context("cannot open the store to snapshot it"),
    };
    std::fs::rename(&partial, file).with_context(|| format!("cannot move the snapshot to {}", file.display()))?;
    println!(
        "saved snapshot of {} at revision {} ({} records) to {}",
        data_dir.display(),
        info.revision,
        info.records,
        file.display()
    );
    Ok(())
}

/// The server holds the data dir: ask it for the snapshot over its admin socket.
async fn save_through_server(dir: &Path, partial: &Path) -> anyhow::Result<embedded::SnapshotInfo> {
    let socket = dir.join(ADMIN_SOCKET);
    let mut stream = tokio::net::UnixStream::connect(&socket)
        .await
        .with_context(|| format!("the data dir is in use but its server does not answer on {}", socket.display()))?;
    stream.write_all(b"snapshot\n").await?;
    let mut out =
        tokio::fs::File::create(partial).await.with_context(|| format!("cannot create {}", partial.display()))?;
    tokio::io::copy(&mut stream, &mut out).await.context("receiving the snapshot")?;
    out.sync_all().await?;
    drop(out);
    let path = partial.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut input = std::fs::File::open(&path)?;
        embedded::inspect_snapshot(&mut input).context("the server sent an incomplete snapshot")
    })
    .await?
}

async fn restore(data_dir: &Path, file: &Path) -> anyhow::Result<()> {
    let dir = data_dir.to_path_buf();
    let path = file.to_path_buf();
    let info = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut input = std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(embedded::restore_snapshot(&mut input, &dir)?)
    })
    .await??;
    println!("restored revision {} ({} records) into {}", info.revision, info.records, data_dir.display());
    Ok(())
}

/// Serve snapshots on the admin socket in the store's directory for as long as the process runs.
pub(super) fn serve_admin_socket(store: Arc<EmbeddedStore>) {
    let path = store.dir().join(ADMIN_SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "no admin socket; `store snapshot save` needs the server stopped");
            return;
        }
    };
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                if let Err(e) = answer_admin(store, stream).await {
                    tracing::warn!(error = %e, "admin request failed");
                }
            });
        }
    });
}

async fn answer_admin(store: Arc<EmbeddedStore>, stream: tokio::net::UnixStream) -> anyhow::Result<()> {
    let mut reader = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut stream = reader.into_inner();
    if line.trim() != "snapshot" {
        stream.write_all(b"unknown request\n").await?;
        return Ok(());
    }
    let mut stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    let info = tokio::task::spawn_blocking(move || store.write_snapshot(&mut stream)).await??;
    tracing::info!(revision = info.revision, records = info.records, "snapshot sent");
    Ok(())
}

async fn load(options: LoadOptions) -> anyhow::Result<()> {
    let store = Arc::new(EmbeddedStore::open(&options.data_dir, StorageMetrics::unregistered()).await?);
    let value = Bytes::from(vec![b'x'; options.value_bytes]);
    let acks = Arc::new(parking_lot::Mutex::new(std::io::stdout()));
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..options.writers {
        let (store, value, acks) = (store.clone(), value.clone(), acks.clone());
        let keys = options.keys;
        writers.spawn(async move {
            let mut n = 0u64;
            while keys == 0 || n < keys {
                let key = format!("/load/{}/{writer}/{n}", std::process::id());
                let kv = store.create(key.clone().into(), value.clone()).await?;
                let mut out = acks.lock();
                writeln!(out, "ACK {key} {}", kv.mod_revision)?;
                out.flush()?;
                n += 1;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    store.close().await?;
    Ok(())
}
