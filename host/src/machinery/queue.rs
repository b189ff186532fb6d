//! A controller's work queue (client-go's rate-limited workqueue): keys deduplicated while
//! they wait, never handed to two workers at once (a key added while it is being
//! reconciled waits until that reconcile is done), per-key exponential backoff on
//! failure (5 ms doubling to 1000 s) together with a global token bucket (10 per second,
//! burst 100) for retries, and delayed adds (`requeue-after`).
//!
//! Pure bookkeeping on tokio primitives: it knows nothing of what a key means.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The first retry's delay; doubles per failure of the same key.
const BASE_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_secs(1000);
/// Retries across all keys: tokens per second, and the bucket's size.
const RETRY_RATE: f64 = 10.0;
const RETRY_BURST: f64 = 100.0;

struct State<K> {
    queue: VecDeque<K>,
    /// Keys waiting in `queue` (or to be put back there when their reconcile ends).
    dirty: HashSet<K>,
    processing: HashSet<K>,
    failures: HashMap<K, u32>,
    /// Keys with a delayed add pending, and when it fires.
    waiting: HashMap<K, Instant>,
    /// The retry bucket: tokens, and when they were counted.
    tokens: f64,
    counted: Instant,
    shut_down: bool,
    adds: u64,
    retries: u64,
}

/// A work queue of keys `K`.
pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    ready: Notify,
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
                waiting: HashMap::new(),
                tokens: RETRY_BURST,
                counted: Instant::now(),
                shut_down: false,
                adds: 0,
                retries: 0,
            }),
            ready: Notify::new(),
        })
    }

    /// Queue `key` (once, however often it is added before a worker takes it).
    pub fn add(&self, key: K) {
        let mut state = self.state.lock();
        if state.shut_down || !state.dirty.insert(key.clone()) {
            return;
        }
        state.adds += 1;
        if !state.processing.contains(&key) {
            state.queue.push_back(key);
            drop(state);
            self.ready.notify_one();
        }
    }

    /// Queue `key` after `delay` (an earlier pending add of the same key wins).
    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let at = Instant::now() + delay;
        {
            let mut state = self.state.lock();
            if state.shut_down {
                return;
            }
            match state.waiting.get(&key) {
                Some(pending) if *pending <= at => return,
                _ => {
                    state.waiting.insert(key.clone(), at);
                }
            }
        }
        let queue = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let Some(queue) = queue.upgrade() else { return };
            let due = {
                let mut state = queue.state.lock();
                // A later, earlier-firing add replaced this one: it does the add.
                if state.waiting.get(&key) == Some(&at) {
                    state.waiting.remove(&key);
                    true
                } else {
                    false
                }
            };
            if due {
                queue.add(key);
            }
        });
    }

    /// Queue `key` again after its backoff: the longer of its own (doubling per failure)
    /// and the global retry bucket's.
    pub fn add_rate_limited(self: &Arc<Self>, key: K) {
        let delay = {
            let mut state = self.state.lock();
            let failures = state.failures.entry(key.clone()).or_insert(0);
            let own = BASE_DELAY.saturating_mul(2u32.saturating_pow((*failures).min(30))).min(MAX_DELAY);
            *failures += 1;
            state.retries += 1;
            let now = Instant::now();
            let elapsed = now.duration_since(state.counted).as_secs_f64();
            state.tokens = (state.tokens + elapsed * RETRY_RATE).min(RETRY_BURST);
            state.counted = now;
            state.tokens -= 1.0;
            let bucket =
                if state.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-state.tokens / RETRY_RATE) };
            own.max(bucket)
        };
        self.add_after(key, delay);
    }

    /// Forget `key`'s failures (its reconcile worked).
    pub fn forget(&self, key: &K) {
        self.state.lock().failures.remove(key);
    }

    /// How often `key` failed in a row.
    pub fn failures(&self, key: &K) -> u32 {
        self.state.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// The next key to reconcile; None once the queue is shut down.
    pub async fn next(&self) -> Option<K> {
        loop {
            let notified = self.ready.notified();
            {
                let mut state = self.state.lock();
                if state.shut_down {
                    return None;
                }
                if let Some(key) = state.queue.pop_front() {
                    state.dirty.remove(&key);
                    state.processing.insert(key.clone());
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    /// The reconcile of `key` is over: if it was added meanwhile, it waits again.
    pub fn done(&self, key: &K) {
        let mut state = self.state.lock();
        state.processing.remove(key);
        if state.dirty.contains(key) && !state.shut_down {
            state.queue.push_back(key.clone());
            drop(state);
            self.ready.notify_one();
        }
    }

    /// Keys waiting for a worker.
    pub fn depth(&self) -> usize {
        self.state.lock().queue.len()
    }

    /// (adds, retries) since the queue was made.
    pub fn counts(&self) -> (u64, u64) {
        let state = self.state.lock();
        (state.adds, state.retries)
    }

    /// Hand out no more keys; workers waiting in `next` get None.
    pub fn shut_down(&self) {
        self.state.lock().shut_down = true;
        self.ready.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_queued_once_and_never_handed_out_twice_at_once() {
        let queue = WorkQueue::new();
        queue.add("a");
        queue.add("a");
        queue.add("b");
        assert_eq!(queue.depth(), 2);
        let first = queue.next().await;
        assert_eq!(first, Some("a"));
        // Added while being reconciled: not handed out until done.
        queue.add("a");
        assert_eq!(queue.next().await, Some("b"));
        assert_eq!(queue.depth(), 0);
        queue.done(&"a");
        assert_eq!(queue.next().await, Some("a"));
    }

    #[tokio::test]
    async fn failures_back_off_exponentially_and_forget_resets() {
        let queue = WorkQueue::new();
        for _ in 0..3 {
            queue.add_rate_limited("k");
        }
        assert_eq!(queue.failures(&"k"), 3);
        queue.forget(&"k");
        assert_eq!(queue.failures(&"k"), 0);
        // The first delayed add (5 ms) fires; the later, longer ones are superseded.
        let started = Instant::now();
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), queue.next()).await.ok().flatten(), Some("k"));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// Each failure of a key doubles its delay (paused tokio time: the delays are exact).
    #[tokio::test(start_paused = true)]
    async fn a_failing_key_waits_twice_as_long_each_time() {
        let queue = WorkQueue::new();
        for expected in [5, 10, 20, 40] {
            let started = Instant::now();
            queue.add_rate_limited("k");
            assert_eq!(queue.next().await, Some("k"));
            assert_eq!(started.elapsed(), Duration::from_millis(expected));
            queue.done(&"k");
        }
        queue.forget(&"k");
        let started = Instant::now();
        queue.add_rate_limited("k");
        assert_eq!(queue.next().await, Some("k"));
        assert_eq!(started.elapsed(), BASE_DELAY, "forget starts the backoff over");
    }

    /// Past the bucket's burst, retries of any keys are spread at the bucket's rate.
    #[tokio::test(start_paused = true)]
    async fn retries_past_the_burst_wait_for_the_global_bucket() {
        let queue = WorkQueue::new();
        let started = Instant::now();
        for key in 0..=RETRY_BURST as u32 {
            queue.add_rate_limited(key);
        }
        for _ in 0..RETRY_BURST as u32 {
            let key = queue.next().await.expect("a key");
            assert!(key < RETRY_BURST as u32, "the burst goes first");
            queue.done(&key);
        }
        assert_eq!(started.elapsed(), BASE_DELAY);
        assert_eq!(queue.next().await, Some(RETRY_BURST as u32));
        assert_eq!(started.elapsed(), Duration::from_secs_f64(1.0 / RETRY_RATE), "one token's wait");
    }

    #[tokio::test]
    async fn shut_down_wakes_waiting_workers() {
        let queue: Arc<WorkQueue<u32>> = WorkQueue::new();
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.next().await }
        });
        tokio::task::yield_now().await;
        queue.shut_down();
        assert_eq!(waiting.await.ok().flatten(), None);
    }
}
