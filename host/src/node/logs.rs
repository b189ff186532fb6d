//! Container logs, as the kubelet keeps them: one file per container run,
//! `<pod dir>/<container>/<restart>.log`, each line in the CRI format
//! (`<RFC 3339 nanos> <stdout|stderr> <F|P> <text>`: P marks a partial line, cut at 16 KiB),
//! rotated at 10 MiB keeping 5 files. [`LogSink`] is what a guest's stdout and stderr
//! write to; [`read`] is what `pods/log` streams (tail, since, timestamps, limitBytes,
//! follow until the run ends); [`ContainerLog::attach`] is what `pods/attach` follows.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::stream::BoxStream;
use parking_lot::Mutex;
use tokio::sync::{broadcast, watch};

use crate::api::kubelet::LogOptions;

/// A line longer than this is written in parts.
const MAX_LINE: usize = 16 << 10;
/// The kubelet's containerLogMaxSize and containerLogMaxFiles.
const MAX_FILE: u64 = 10 << 20;
const MAX_FILES: usize = 5;

/// One container run's log file; shared by its stdout and stderr sinks.
pub struct ContainerLog {
    path: PathBuf,
    state: Mutex<LogState>,
    /// Bumped on every write; true once the run ended (followers stop).
    written: watch::Sender<(u64, bool)>,
    /// What is written, as written, for attached sessions (made by the first attach: most
    /// containers never have one, and a channel's buffer is kilobytes).
    attached: Mutex<Option<broadcast::Sender<(Stream, Bytes)>>>,
}

struct LogState {
    file: Option<std::fs::File>,
    size: u64,
    partial: [Vec<u8>; 2],
}

impl ContainerLog {
    /// Create (truncate) the log at `path`.
    pub fn create(path: PathBuf) -> std::io::Result<Arc<Self>> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::File::create(&path)?;
        Ok(Arc::new(Self {
            path,
            state: Mutex::new(LogState { file: Some(file), size: 0, partial: [Vec::new(), Vec::new()] }),
            written: watch::channel((0, false)).0,
            attached: Mutex::new(None),
        }))
    }

    /// The sink for stdout or stderr.
    pub fn sink(self: &Arc<Self>, stream: Stream) -> LogSink {
        LogSink { log: self.clone(), stream }
    }

    /// Watch for writes and the end.
    pub fn subscribe(&self) -> watch::Receiver<(u64, bool)> {
        self.written.subscribe()
    }

    /// What is written from now on, as written (an attached session's view).
    pub fn attach(&self) -> broadcast::Receiver<(Stream, Bytes)> {
        self.attached.lock().get_or_insert_with(|| broadcast::channel(256).0).subscribe()
    }

    fn write(&self, stream: Stream, bytes: &[u8]) {
        if let Some(attached) = self.attached.lock().as_ref().filter(|a| a.receiver_count() > 0) {
            let _ = attached.send((stream, Bytes::copy_from_slice(bytes)));
        }
        let mut state = self.state.lock();
        let index = stream as usize;
        state.partial[index].extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            let buffer = &mut state.partial[index];
            if let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                entry(&mut out, stream, 'F', &line[..line.len() - 1]);
            } else if buffer.len() >= MAX_LINE {
                let part: Vec<u8> = buffer.drain(..MAX_LINE).collect();
                entry(&mut out, stream, 'P', &part);
            } else {
                break;
            }
        }
        self.append(&mut state, &out);
    }

    fn append(&self, state: &mut LogState, out: &[u8]) {
        if out.is_empty() {
            return;
        }
        if state.size + out.len() as u64 > MAX_FILE {
            self.rotate(state);
        }
        if let Some(file) = state.file.as_mut() {
            if file.write_all(out).is_ok() {
                state.size += out.len() as u64;
            }
        }
        self.written.send_modify(|(n, _)| *n += 1);
    }

    /// `n.log` → `n.log.1` → ... → `n.log.5`, dropped past that.
    fn rotate(&self, state: &mut LogState) {
        let name = |i: usize| PathBuf::from(format!("{}.{i}", self.path.display()));
        let _ = std::fs::remove_file(name(MAX_FILES));
        for i in (1..MAX_FILES).rev() {
            let _ = std::fs::rename(name(i), name(i + 1));
        }
        let _ = std::fs::rename(&self.path, name(1));
        state.file = std::fs::File::create(&self.path).ok();
        state.size = 0;
    }

    /// The run ended: write what is left of partial lines; followers stop.
    pub fn finish(&self) {
        let mut state = self.state.lock();
        let mut out = Vec::new();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut state.partial[stream as usize]);
            if !rest.is_empty() {
                entry(&mut out, stream, 'F', &rest);
            }
        }
        self.append(&mut state, &out);
        self.written.send_modify(|(_, done)| *done = true);
    }

    /// A line of the runtime's own (a failed request), on stderr.
    pub fn note(&self, text: &str) {
        self.write(Stream::Stderr, format!("{text}\n").as_bytes());
    }
}

/// stdout or stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout = 0,
    Stderr = 1,
}

fn entry(out: &mut Vec<u8>, stream: Stream, tag: char, text: &[u8]) {
    let now = humantime::format_rfc3339_nanos(SystemTime::now());
    let name = if stream == Stream::Stdout { "stdout" } else { "stderr" };
    out.extend_from_slice(format!("{now} {name} {tag} ").as_bytes());
    out.extend_from_slice(text);
    out.push(b'\n');
}

/// A guest's stdout or stderr.
#[derive(Clone)]
pub struct LogSink {
    log: Arc<ContainerLog>,
    stream: Stream,
}

impl LogSink {
    /// A line from the runtime itself.
    pub fn write_line(&self, text: &str) {
        self.log.note(text);
    }
}

impl wasmtime_wasi::cli::IsTerminal for LogSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for LogSink {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for LogSink {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.log.write(self.stream, bytes);
        std::task::Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// One parsed log line.
struct Line<'a> {
    time: &'a str,
    partial: bool,
    text: &'a [u8],
}

fn parse_line(line: &[u8]) -> Option<Line<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or_default();
    Some(Line { time, partial: tag == b"P", text })
}

/// Render the complete lines of `data` per `options`; how many bytes were consumed (a
/// trailing incomplete line is left for later).
fn render(data: &[u8], options: &LogOptions, out: &mut Vec<u8>) -> usize {
    let mut consumed = 0;
    for raw in data.split_inclusive(|b| *b == b'\n') {
        if raw.last() != Some(&b'\n') {
            break;
        }
        consumed += raw.len();
        let Some(line) = parse_line(&raw[..raw.len() - 1]) else { continue };
        if let Some(since) = options.since {
            match humantime::parse_rfc3339_weak(line.time) {
                Ok(at) if at < since => continue,
                _ => {}
            }
        }
        if options.timestamps {
            out.extend_from_slice(line.time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(line.text);
        if !line.partial {
            out.push(b'\n');
        }
    }
    consumed
}

/// Keep the last `n` lines of rendered text.
fn tail(text: Vec<u8>, n: u64) -> Vec<u8> {
    if n == 0 {
        return Vec::new();
    }
    let mut newlines = 0;
    for (i, b) in text.iter().enumerate().rev() {
        if *b == b'\n' && i + 1 != text.len() {
            newlines += 1;
            if newlines == n {
                return text[i + 1..].to_vec();
            }
        }
    }
    text
}

/// The log of one run as `pods/log` streams it.
pub fn read(log: Arc<ContainerLog>, options: LogOptions) -> BoxStream<'static, Bytes> {
    let mut changes = log.subscribe();
    let path = log.path.clone();
    let stream = async_stream(move |sender: tokio::sync::mpsc::Sender<Bytes>| async move {
        let mut offset = 0u64;
        let mut remaining = options.limit_bytes.unwrap_or(u64::MAX);
        let mut first = true;
        loop {
            let done = changes.borrow_and_update().1;
            let data = read_from(&path, offset).await;
            let mut out = Vec::new();
            offset += render(&data, &options, &mut out) as u64;
            if first {
                if let Some(n) = options.tail_lines {
                    out = tail(out, n);
                }
                first = false;
            }
            if !out.is_empty() {
                out.truncate(remaining.min(out.len() as u64) as usize);
                remaining -= out.len() as u64;
                if sender.send(Bytes::from(out)).await.is_err() {
                    return;
                }
            }
            if remaining == 0 || !options.follow || done {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
        }
    });
    Box::pin(stream)
}

async fn read_from(path: &Path, offset: u64) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let Ok(mut file) = tokio::fs::File::open(path).await else { return Vec::new() };
    if file.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
        return Vec::new();
    }
    let mut data = Vec::new();
    let _ = file.take(MAX_FILE * 2).read_to_end(&mut data).await;
    data
}

/// A stream fed by a task that sends into a channel.
fn async_stream<F, Fut>(producer: F) -> impl futures::Stream<Item = Bytes> + Send + 'static
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    tokio::spawn(producer(sender));
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    async fn all(log: &Arc<ContainerLog>, options: LogOptions) -> String {
        let chunks: Vec<Bytes> = read(log.clone(), options).collect().await;
        String::from_utf8(chunks.concat()).unwrap()
    }

    #[tokio::test]
    async fn lines_read_back_with_tail_timestamps_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let log = ContainerLog::create(dir.path().join("c/0.log")).unwrap();
        let (out, err) = (log.sink(Stream::Stdout), log.sink(Stream::Stderr));
        out.log.write(Stream::Stdout, b"one\ntw");
        err.log.write(Stream::Stderr, b"oops\n");
        out.log.write(Stream::Stdout, b"o\nthree");
        assert_eq!(all(&log, LogOptions::default()).await, "one\noops\ntwo\n");
        log.finish();
        assert_eq!(all(&log, LogOptions::default()).await, "one\noops\ntwo\nthree\n");
        assert_eq!(all(&log, LogOptions { tail_lines: Some(2), ..Default::default() }).await, "two\nthree\n");
        assert_eq!(all(&log, LogOptions { limit_bytes: Some(5), ..Default::default() }).await, "one\no");
        let stamped = all(&log, LogOptions { timestamps: true, tail_lines: Some(1), ..Default::default() }).await;
        assert!(stamped.ends_with("Z three\n") && stamped.len() > 25, "{stamped}");
        let later = SystemTime::now() + Duration::from_secs(5);
        assert_eq!(all(&log, LogOptions { since: Some(later), ..Default::default() }).await, "");
        let raw = std::fs::read_to_string(dir.path().join("c/0.log")).unwrap();
        assert!(raw.lines().any(|l| l.contains(" stderr F oops")), "{raw}");
    }

    #[tokio::test]
    async fn a_follower_sees_lines_written_later_and_stops_when_the_run_ends() {
        let dir = tempfile::tempdir().unwrap();
        let log = ContainerLog::create(dir.path().join("0.log")).unwrap();
        log.write(Stream::Stdout, b"first\n");
        let follower = tokio::spawn(all_owned(log.clone()));
        log.write(Stream::Stdout, b"second\n");
        log.finish();
        let text = tokio::time::timeout(Duration::from_secs(10), follower).await.unwrap().unwrap();
        assert_eq!(text, "first\nsecond\n");
    }

    async fn all_owned(log: Arc<ContainerLog>) -> String {
        all(&log, LogOptions { follow: true, ..Default::default() }).await
    }
}
