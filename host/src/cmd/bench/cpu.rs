//! CPU time by thread, read from `/proc/self/task` (Linux): what lets a benchmark that runs
//! its clients in the server's process print the server's CPU per operation, a figure that
//! means something on a shared machine where throughput alone does not. The server runs on
//! its own runtime ([`server_runtime`]); its threads, the store's and the plugin runtime's
//! epoch ticker are counted, the clients' are not. Another process (etcd) is counted whole
//! ([`process_cpu`]).

use std::time::Duration;

/// Names (as `/proc/.../comm` shows them, at most 15 bytes) of the threads that do the
/// server's work.
const SERVER_THREADS: &[&str] = &[SERVER_RUNTIME_THREAD, "store-committer", "store-syncer", "wasmkube-epoch"];

/// What the server's runtime calls its threads (workers and blocking ones alike).
const SERVER_RUNTIME_THREAD: &str = "api-server";

/// A runtime of its own for the server under test, so its CPU can be told from the
/// clients'. Its blocking threads are kept for the process's life: a thread that exits takes
/// its CPU time out of the per-thread sums.
pub(super) fn server_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .thread_name(SERVER_RUNTIME_THREAD)
        .thread_keep_alive(Duration::from_secs(24 * 3600))
        .enable_all()
        .build()
}

/// CPU time (user + system) used so far by the server's live threads. Linux only; zero
/// elsewhere (the figures that use it then print 0).
pub(super) fn server_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Duration::ZERO };
    let mut ticks = 0u64;
    for task in tasks.flatten() {
        let path = task.path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else { continue };
        if !SERVER_THREADS.iter().any(|s| name.trim_end() == *s) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else { continue };
        ticks += stat_cpu_ticks(&stat).unwrap_or(0);
    }
    from_ticks(ticks)
}

/// CPU time (user + system) used so far by process `pid`, all its threads (etcd, for the
/// raw-etcd baseline). Zero where `/proc` cannot tell.
pub(super) fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    from_ticks(stat_cpu_ticks(&stat).unwrap_or(0))
}

fn from_ticks(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(ticks as f64 / ticks_per_second)
}

/// utime + stime of a `/proc/<pid>/task/<tid>/stat` line: fields 14 and 15, counted after
/// the command name (which may hold spaces and parentheses, so it is skipped to the last `)`).
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 (state): utime (14) is fields[11], stime (15) fields[12].
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Microseconds of server CPU per operation between two readings of [`server_cpu`].
pub(super) fn micros_per(before: Duration, after: Duration, operations: f64) -> f64 {
    if operations > 0.0 {
        after.saturating_sub(before).as_secs_f64() * 1e6 / operations
    } else {
        f64::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_system_ticks_are_read_past_an_odd_command_name() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 37 5 0 0 20 0 3 0 12345 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some(42));
        assert_eq!(stat_cpu_ticks("4242 (x) S 1"), None);
    }

    /// CPU time of the calling thread.
    fn thread_cpu() -> Duration {
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `now` is a valid timespec to write to.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
        Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
    }

    /// Spin until this thread has used `cpu` of CPU time (however long that takes on a busy machine).
    fn spin(cpu: Duration) {
        let start = thread_cpu();
        let mut x = 0u64;
        while thread_cpu() - start < cpu {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }

    /// CPU used on the server runtime shows up in `server_cpu`; CPU used elsewhere does not.
    #[test]
    fn only_the_server_threads_are_counted() {
        let runtime = server_runtime().expect("runtime");
        let before = server_cpu();
        spin(Duration::from_millis(200));
        let elsewhere = server_cpu().saturating_sub(before);
        let before = server_cpu();
        runtime.block_on(async { tokio::spawn(async { spin(Duration::from_millis(200)) }).await }).expect("spin");
        let on_the_server = server_cpu().saturating_sub(before);
        // Ticks are 10 ms: a little is lost at each end.
        assert!(on_the_server >= Duration::from_millis(170), "200 ms on a server thread, counted {on_the_server:?}");
        assert!(elsewhere <= Duration::from_millis(30), "200 ms on the test's thread, counted {elsewhere:?}");
    }
}
