//! A client connection with a bound on how long a write may wait for the client to read:
//! past it, the write fails and the server closes the connection. A watcher that stopped
//! reading (its socket buffers full) would otherwise hold the connection, and whatever is
//! queued for it, forever — also after the watch cache has ended its watch.
//!
//! Owns the byte stream's timing only; what is written is the HTTP server's business.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long a write may wait for a client to read when `--write-timeout` is not given.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// `inner`, whose writes (and flushes) fail with `TimedOut` once they have waited
/// `limit` for the client without moving a byte.
pub struct WriteDeadline<T> {
    inner: T,
    limit: Duration,
    /// Since when writing has been stalled, as a timer that fires at the limit.
    stalled: Option<Pin<Box<Sleep>>>,
    /// Counts the connections closed this way.
    timeouts: prometheus::IntCounter,
}

/// `wasmkube_apiserver_write_timeouts_total`, registered in `registry`.
pub fn write_timeouts(registry: &prometheus::Registry) -> prometheus::Result<prometheus::IntCounter> {
    let counter = prometheus::IntCounter::new(
        "wasmkube_apiserver_write_timeouts_total",
        "Connections closed because a write waited --write-timeout for a client that read nothing.",
    )?;
    registry.register(Box::new(counter.clone()))?;
    Ok(counter)
}

impl<T> WriteDeadline<T> {
    pub fn new(inner: T, limit: Duration, timeouts: prometheus::IntCounter) -> Self {
        Self { inner, limit, stalled: None, timeouts }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// What a write that returned `poll` means: progress ends a stall; waiting starts or
    /// continues one, and fails once it reached the limit.
    fn deadline<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match poll {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.timeouts.inc();
                        tracing::debug!(?limit, "closing a connection whose client reads nothing");
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("the client read nothing for {limit:?}"),
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.deadline(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.deadline(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.deadline(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.deadline(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Over a real loopback TCP connection: writes to a client that reads go on however
    /// long they take in total; writes to one that stopped reading fail at the limit.
    #[tokio::test]
    async fn a_write_to_a_client_that_stopped_reading_fails_at_the_limit() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let client = tokio::spawn(async move {
            let mut socket = tokio::net::TcpStream::connect(address).await.expect("connect");
            // Read the first MiB, then stop reading (but keep the connection open).
            let mut first = vec![0u8; 1 << 20];
            socket.read_exact(&mut first).await.expect("read");
            futures::future::pending::<()>().await;
            drop(socket);
        });
        let (socket, _) = listener.accept().await.expect("accept");
        let timeouts = prometheus::IntCounter::new("timeouts", "test").expect("counter");
        let mut server = WriteDeadline::new(socket, Duration::from_millis(300), timeouts.clone());
        let chunk = vec![7u8; 64 * 1024];
        let mut written = 0usize;
        let error = loop {
            match server.write_all(&chunk).await {
                Ok(()) => written += chunk.len(),
                Err(e) => break e,
            }
            assert!(written < 1 << 30, "a GiB went to a client that reads nothing");
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert_eq!(timeouts.get(), 1);
        assert!(written >= 1 << 20, "the MiB the client read was written first ({written} bytes)");
        client.abort();
    }
}
