//! The scheduling queue (kube-scheduler's PriorityQueue): every pod waiting for a node is
//! in exactly one place:
//!
//! - **active**: ready to try, highest priority first, then oldest;
//! - **backoff**: failed (an error, or unschedulable while the cluster changed), waiting
//!   out `initial × 2^(attempts-1)` (at most `max`) before it is active again;
//! - **unschedulable**: fits nowhere; it waits for a cluster event that might change that
//!   ([`SchedulingQueue::move_all`]: a node added or changed, a pod deleted), not for a
//!   timer, except that after [`UNSCHEDULABLE_FLUSH`] it is tried again regardless;
//! - **in flight**: being scheduled now.
//!
//! A cluster event that happens while a pod is in flight sends it to backoff rather than
//! unschedulable when its attempt fails, so an event is never missed by a pod that was
//! being looked at when it happened (kube-scheduler's move request cycle).
//!
//! The queue holds keys and what it orders by; it knows nothing of the API or policies.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// How long an unschedulable pod waits before it is tried again without an event
/// (kube-scheduler's podMaxInUnschedulablePodsDuration).
pub const UNSCHEDULABLE_FLUSH: Duration = Duration::from_secs(300);

/// A pod's key in the queue: its uid.
pub type Uid = String;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Active,
    Backoff(Instant),
    Unschedulable(Instant),
    InFlight { moves_at_pop: u64 },
}

struct Entry {
    place: Place,
    priority: i32,
    /// When it first entered the queue (its age, for ordering), as a sequence number.
    arrival: u64,
    attempts: u32,
}

#[derive(Default)]
struct Inner {
    pods: HashMap<Uid, Entry>,
    /// (priority, oldest first, uid); stale rows (the pod moved on) are skipped when popped.
    active: BinaryHeap<(i32, Reverse<u64>, Uid)>,
    backoff: BinaryHeap<Reverse<(Instant, Uid)>>,
    /// (since, uid) of unschedulable pods; stale rows skipped as in `active`.
    unschedulable: BinaryHeap<Reverse<(Instant, Uid)>>,
    arrivals: u64,
    /// Cluster events so far (see the module's note on pods in flight).
    moves: u64,
}

/// How many pods are where (for metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Depths {
    pub active: usize,
    pub backoff: usize,
    pub unschedulable: usize,
    pub in_flight: usize,
}

pub struct SchedulingQueue {
    inner: Mutex<Inner>,
    ready: Notify,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl SchedulingQueue {
    /// kube-scheduler's defaults are 1 s and 10 s.
    pub fn new(initial_backoff: Duration, max_backoff: Duration) -> Self {
        Self { inner: Mutex::default(), ready: Notify::new(), initial_backoff, max_backoff }
    }

    /// A pod to schedule (new, or seen again: then only its priority is updated).
    pub fn add(&self, uid: &str, priority: i32) {
        let mut inner = self.inner.lock();
        if let Some(entry) = inner.pods.get_mut(uid) {
            entry.priority = priority;
            return;
        }
        inner.arrivals += 1;
        let arrival = inner.arrivals;
        inner.pods.insert(uid.to_string(), Entry { place: Place::Active, priority, arrival, attempts: 0 });
        inner.active.push((priority, Reverse(arrival), uid.to_string()));
        drop(inner);
        self.ready.notify_one();
    }

    /// The pod is gone, bound, or not ours any more.
    pub fn remove(&self, uid: &str) {
        self.inner.lock().pods.remove(uid);
    }

    /// The next pod to schedule (waits for one); it is in flight until `done`, `unschedulable`
    /// or `retry`.
    pub async fn pop(&self) -> Uid {
        loop {
            let notified = self.ready.notified();
            let wake = {
                let mut inner = self.inner.lock();
                let now = Instant::now();
                self.flush(&mut inner, now);
                if let Some(uid) = Self::pop_active(&mut inner) {
                    return uid;
                }
                Self::next_wake(&inner)
            };
            match wake {
                Some(at) => {
                    let _ = tokio::time::timeout_at(at.into(), notified).await;
                }
                None => notified.await,
            }
        }
    }

    fn pop_active(inner: &mut Inner) -> Option<Uid> {
        let moves = inner.moves;
        while let Some((_, Reverse(arrival), uid)) = inner.active.pop() {
            let Some(entry) = inner.pods.get_mut(&uid) else { continue };
            if entry.place != Place::Active || entry.arrival != arrival {
                continue;
            }
            entry.place = Place::InFlight { moves_at_pop: moves };
            return Some(uid);
        }
        None
    }

    /// Backoffs that are over, and unschedulable pods that waited long enough, become active.
    fn flush(&self, inner: &mut Inner, now: Instant) {
        while let Some(Reverse((at, _))) = inner.backoff.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, uid))) = inner.backoff.pop() else { break };
            Self::activate(inner, &uid, |place| place == Place::Backoff(at));
        }
        while let Some(Reverse((since, _))) = inner.unschedulable.peek() {
            if now.duration_since(*since) < UNSCHEDULABLE_FLUSH {
                break;
            }
            let Some(Reverse((since, uid))) = inner.unschedulable.pop() else { break };
            Self::activate(inner, &uid, |place| place == Place::Unschedulable(since));
        }
    }

    fn activate(inner: &mut Inner, uid: &str, expected: impl Fn(Place) -> bool) {
        let Some(entry) = inner.pods.get_mut(uid) else { return };
        if !expected(entry.place) {
            return;
        }
        entry.place = Place::Active;
        let row = (entry.priority, Reverse(entry.arrival), uid.to_string());
        inner.active.push(row);
    }

    fn next_wake(inner: &Inner) -> Option<Instant> {
        let backoff = inner.backoff.peek().map(|Reverse((at, _))| *at);
        let unschedulable = inner.unschedulable.peek().map(|Reverse((since, _))| *since + UNSCHEDULABLE_FLUSH);
        backoff.into_iter().chain(unschedulable).min()
    }

    /// The pod in flight was placed (or dropped): it leaves the queue.
    pub fn done(&self, uid: &str) {
        self.remove(uid);
    }

    /// The pod in flight fits nowhere: it waits for a cluster event (or, if one happened
    /// during its attempt, backs off).
    pub fn unschedulable(&self, uid: &str) {
        let mut inner = self.inner.lock();
        let moves = inner.moves;
        let Some(entry) = inner.pods.get_mut(uid) else { return };
        let Place::InFlight { moves_at_pop } = entry.place else { return };
        entry.attempts += 1;
        if moves_at_pop != moves {
            let at = Instant::now() + backoff(self.initial_backoff, self.max_backoff, entry.attempts);
            entry.place = Place::Backoff(at);
            inner.backoff.push(Reverse((at, uid.to_string())));
            drop(inner);
            self.ready.notify_one();
        } else {
            let since = Instant::now();
            entry.place = Place::Unschedulable(since);
            inner.unschedulable.push(Reverse((since, uid.to_string())));
        }
    }

    /// The pod's attempt failed (a policy error, a failed binding): it backs off. A pod
    /// that had left the queue (its binding failed) comes back.
    pub fn retry(&self, uid: &str, priority: i32) {
        let mut inner = self.inner.lock();
        if !inner.pods.contains_key(uid) {
            inner.arrivals += 1;
            let arrival = inner.arrivals;
            inner.pods.insert(uid.to_string(), Entry { place: Place::Active, priority, arrival, attempts: 0 });
        }
        let Some(entry) = inner.pods.get_mut(uid) else { return };
        entry.attempts += 1;
        let at = Instant::now() + backoff(self.initial_backoff, self.max_backoff, entry.attempts);
        entry.place = Place::Backoff(at);
        inner.backoff.push(Reverse((at, uid.to_string())));
        drop(inner);
        self.ready.notify_one();
    }

    /// A cluster event that may make unschedulable pods fit: each goes to backoff if its
    /// backoff is not over yet, else straight to active.
    pub fn move_all(&self) {
        let mut inner = self.inner.lock();
        inner.moves += 1;
        let now = Instant::now();
        let (initial, max) = (self.initial_backoff, self.max_backoff);
        let mut to_backoff = Vec::new();
        let mut to_active = Vec::new();
        let waiting = std::mem::take(&mut inner.unschedulable);
        for Reverse((since, uid)) in waiting {
            let Some(entry) = inner.pods.get_mut(&uid) else { continue };
            if entry.place != Place::Unschedulable(since) {
                continue;
            }
            let until = since + backoff(initial, max, entry.attempts);
            if until > now {
                entry.place = Place::Backoff(until);
                to_backoff.push(Reverse((until, uid)));
            } else {
                entry.place = Place::Active;
                to_active.push((entry.priority, Reverse(entry.arrival), uid));
            }
        }
        let woke = !to_active.is_empty() || !to_backoff.is_empty();
        inner.backoff.extend(to_backoff);
        inner.active.extend(to_active);
        drop(inner);
        if woke {
            self.ready.notify_one();
        }
    }

    pub fn depths(&self) -> Depths {
        let inner = self.inner.lock();
        let mut depths = Depths::default();
        for entry in inner.pods.values() {
            match entry.place {
                Place::Active => depths.active += 1,
                Place::Backoff(_) => depths.backoff += 1,
                Place::Unschedulable(_) => depths.unschedulable += 1,
                Place::InFlight { .. } => depths.in_flight += 1,
            }
        }
        depths
    }

    /// How many times the pod has failed so far.
    #[cfg(test)]
    pub fn attempts(&self, uid: &str) -> u32 {
        self.inner.lock().pods.get(uid).map_or(0, |e| e.attempts)
    }
}

/// `initial × 2^(attempts-1)`, at most `max`.
fn backoff(initial: Duration, max: Duration, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(20);
    initial.saturating_mul(1 << doublings).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> SchedulingQueue {
        SchedulingQueue::new(Duration::from_millis(20), Duration::from_millis(80))
    }

    async fn pop_now(q: &SchedulingQueue) -> Option<Uid> {
        tokio::time::timeout(Duration::from_millis(5), q.pop()).await.ok()
    }

    #[tokio::test]
    async fn higher_priority_first_then_oldest() {
        let q = queue();
        q.add("low", 0);
        q.add("high", 10);
        q.add("low2", 0);
        q.add("high", 10); // seen again: stays where it was
        assert_eq!(pop_now(&q).await.as_deref(), Some("high"));
        assert_eq!(pop_now(&q).await.as_deref(), Some("low"));
        assert_eq!(pop_now(&q).await.as_deref(), Some("low2"));
        assert_eq!(pop_now(&q).await, None);
        assert_eq!(q.depths().in_flight, 3);
    }

    #[tokio::test]
    async fn unschedulable_pods_wait_for_an_event_not_a_timer() {
        let q = queue();
        q.add("p", 0);
        let uid = pop_now(&q).await.expect("active");
        q.unschedulable(&uid);
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(pop_now(&q).await, None, "no event, no retry");
        assert_eq!(q.depths().unschedulable, 1);
        q.move_all();
        assert_eq!(pop_now(&q).await.as_deref(), Some("p"), "its backoff (20 ms) is over: straight to active");
    }

    #[tokio::test]
    async fn an_event_during_the_attempt_sends_the_pod_to_backoff() {
        let q = queue();
        q.add("p", 0);
        let uid = pop_now(&q).await.expect("active");
        q.move_all(); // a node was added while "p" was being scheduled
        q.unschedulable(&uid);
        assert_eq!(q.depths().backoff, 1);
        let started = Instant::now();
        assert_eq!(tokio::time::timeout(Duration::from_secs(1), q.pop()).await.ok().as_deref(), Some("p"));
        assert!(started.elapsed() >= Duration::from_millis(15), "it waited out its backoff");
    }

    #[tokio::test]
    async fn errors_back_off_exponentially_up_to_the_max() {
        assert_eq!(backoff(Duration::from_secs(1), Duration::from_secs(10), 1), Duration::from_secs(1));
        assert_eq!(backoff(Duration::from_secs(1), Duration::from_secs(10), 3), Duration::from_secs(4));
        assert_eq!(backoff(Duration::from_secs(1), Duration::from_secs(10), 9), Duration::from_secs(10));
        let q = queue();
        q.add("p", 0);
        q.add("other", 0);
        let first = pop_now(&q).await.expect("p");
        q.retry(&first, 0);
        assert_eq!(pop_now(&q).await.as_deref(), Some("other"), "others proceed while p backs off");
        assert_eq!(q.attempts("p"), 1);
        assert_eq!(tokio::time::timeout(Duration::from_secs(1), q.pop()).await.ok().as_deref(), Some("p"));
    }

    #[tokio::test]
    async fn a_removed_pod_is_never_popped() {
        let q = queue();
        q.add("gone", 0);
        q.remove("gone");
        assert_eq!(pop_now(&q).await, None);
        q.add("gone", 0);
        assert_eq!(pop_now(&q).await.as_deref(), Some("gone"), "added again after removal");
    }
}
