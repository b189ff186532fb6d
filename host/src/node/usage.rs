//! What one container uses, counted as the kubelet's cgroup would count it: the CPU time of
//! every poll of its guests' futures (the polling thread's own CPU clock, read before and
//! after), and the bytes its instances' memories and tables hold (every instance of the
//! container — its run, each HTTP request, each exec — against one limit).
//!
//! With `limits.cpu` it throttles as CFS quota does: in each 100 ms period the container's
//! guests may run for limit × 100 ms; past that, their next polls wait for the next period.
//! A guest yields only at epoch ticks (every 10 ms), so a poll may overrun the quota: the
//! overrun is carried into the next periods as debt, and the average holds.
//!
//! Owns the accounting only: what runs is the runtime's business, what is reported the
//! stats'.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// CFS's default period.
const PERIOD: Duration = Duration::from_millis(100);
/// A rate is measured over at least this long (shorter asks get the last one).
const MIN_WINDOW: Duration = Duration::from_secs(1);

/// One container's CPU and memory.
pub(crate) struct Usage {
    cpu_ns: AtomicU64,
    memory: AtomicU64,
    /// CPU nanoseconds allowed per period, from `limits.cpu`.
    quota: Option<u64>,
    period: Mutex<Period>,
    sample: Mutex<Sample>,
}

struct Period {
    start: Instant,
    used: u64,
}

/// The last rate measured, for `usageNanoCores`.
struct Sample {
    at: Instant,
    cpu_ns: u64,
    rate: u64,
    window: Duration,
}

impl Usage {
    /// Accounting for a container limited to `cpu_millis` thousandths of a core, if any.
    pub(crate) fn new(cpu_millis: Option<u64>) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            cpu_ns: AtomicU64::new(0),
            memory: AtomicU64::new(0),
            quota: cpu_millis.map(|m| (PERIOD.as_nanos() as u64).saturating_mul(m) / 1000).map(|q| q.max(1)),
            period: Mutex::new(Period { start: now, used: 0 }),
            sample: Mutex::new(Sample { at: now, cpu_ns: 0, rate: 0, window: Duration::ZERO }),
        })
    }

    /// CPU time used in all, in nanoseconds.
    pub(crate) fn cpu_ns(&self) -> u64 {
        self.cpu_ns.load(Ordering::Relaxed)
    }

    /// Bytes held now.
    pub(crate) fn memory(&self) -> u64 {
        self.memory.load(Ordering::Relaxed)
    }

    /// Take `bytes` more, unless that passes `limit`; the total after, or the total it would be.
    pub(crate) fn grow(&self, bytes: u64, limit: Option<u64>) -> Result<u64, u64> {
        let mut current = self.memory.load(Ordering::Relaxed);
        loop {
            let grown = current.saturating_add(bytes);
            if limit.is_some_and(|limit| grown > limit) {
                return Err(grown);
            }
            match self.memory.compare_exchange_weak(current, grown, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(grown),
                Err(now) => current = now,
            }
        }
    }

    /// Give back `bytes` (an instance dropped).
    pub(crate) fn release(&self, bytes: u64) {
        let _ = self.memory.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| Some(m.saturating_sub(bytes)));
    }

    /// CPU cores in use (nanocores) over the window since the last measure (at least a
    /// second; the first measure covers the time since the container started), and the window.
    pub(crate) fn rate(&self) -> (u64, Duration) {
        let mut sample = self.sample.lock();
        let elapsed = sample.at.elapsed();
        if elapsed >= MIN_WINDOW || sample.window.is_zero() {
            let cpu = self.cpu_ns();
            let spent = cpu.saturating_sub(sample.cpu_ns) as u128;
            sample.rate = (spent * 1_000_000_000 / elapsed.as_nanos().max(1)) as u64;
            sample.window = elapsed;
            sample.at = Instant::now();
            sample.cpu_ns = cpu;
        }
        (sample.rate, sample.window)
    }

    /// Count `ns` of CPU time.
    fn charge(&self, ns: u64) {
        self.cpu_ns.fetch_add(ns, Ordering::Relaxed);
        if self.quota.is_some() {
            let mut period = self.period.lock();
            self.roll(&mut period, Instant::now());
            period.used = period.used.saturating_add(ns);
        }
    }

    /// Move to the current period, paying the quota of each one passed off the debt.
    fn roll(&self, period: &mut Period, now: Instant) {
        let Some(quota) = self.quota else { return };
        let passed = (now.saturating_duration_since(period.start).as_nanos() / PERIOD.as_nanos()) as u32;
        if passed > 0 {
            period.start += PERIOD * passed;
            period.used = period.used.saturating_sub(quota.saturating_mul(u64::from(passed)));
        }
    }

    /// When the guests may run again, if the quota of this period is spent.
    fn throttled_until(&self, now: Instant) -> Option<Instant> {
        let quota = self.quota?;
        let mut period = self.period.lock();
        self.roll(&mut period, now);
        (period.used >= quota).then(|| period.start + PERIOD)
    }

    /// `future`, with the CPU time of its polls counted here (and throttled to the quota).
    pub(crate) fn meter<F: Future>(self: &Arc<Self>, future: F) -> Metered<F> {
        Metered { inner: Box::pin(future), usage: self.clone(), wait: None }
    }
}

/// A future whose polls are counted against a container's [`Usage`].
pub(crate) struct Metered<F> {
    inner: Pin<Box<F>>,
    usage: Arc<Usage>,
    /// Throttled: the end of the period it waits for.
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if let Some(wait) = self.wait.as_mut() {
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.wait = None;
        }
        let now = Instant::now();
        if let Some(until) = self.usage.throttled_until(now) {
            let mut wait = Box::pin(tokio::time::sleep_until(until.into()));
            if wait.as_mut().poll(cx).is_pending() {
                self.wait = Some(wait);
                return Poll::Pending;
            }
        }
        let before = thread_cpu_ns();
        let polled = self.inner.as_mut().poll(cx);
        self.usage.charge(thread_cpu_ns().saturating_sub(before));
        polled
    }
}

/// The calling thread's CPU time, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    (now.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(now.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_shared_by_every_instance_under_one_limit() {
        let usage = Usage::new(None);
        assert_eq!(usage.grow(600, Some(1000)), Ok(600));
        assert_eq!(usage.grow(600, Some(1000)), Err(1200), "a second instance meets the first one's bytes");
        usage.release(600);
        assert_eq!(usage.grow(600, Some(1000)), Ok(600));
        assert_eq!(usage.memory(), 600);
    }

    #[test]
    fn an_overrun_is_paid_off_over_the_following_periods() {
        let usage = Usage::new(Some(100)); // 10 ms per 100 ms period
        let start = usage.period.lock().start;
        usage.charge(35_000_000); // one long poll: 35 ms
        assert_eq!(usage.throttled_until(start), Some(start + PERIOD));
        // Two periods later 20 ms of the debt are paid, 15 ms are left: still throttled.
        assert_eq!(usage.throttled_until(start + PERIOD * 2), Some(start + PERIOD * 3));
        // The third leaves 5 ms, less than a period's quota: it runs again.
        assert_eq!(usage.throttled_until(start + PERIOD * 3), None);
        assert_eq!(usage.cpu_ns(), 35_000_000);
    }

    #[test]
    fn without_a_limit_nothing_waits() {
        let usage = Usage::new(None);
        usage.charge(10_000_000_000);
        assert_eq!(usage.throttled_until(Instant::now()), None);
    }

    #[tokio::test]
    async fn a_metered_future_counts_its_polls() {
        let usage = Usage::new(None);
        let spun = usage
            .meter(async {
                let start = thread_cpu_ns();
                let mut x = 0u64;
                while thread_cpu_ns() - start < 5_000_000 {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                x
            })
            .await;
        assert!(spun > 0);
        assert!(usage.cpu_ns() >= 5_000_000, "counted {} ns", usage.cpu_ns());
    }
}
