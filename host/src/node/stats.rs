//! The node's stats summary, as the kubelet's `/stats/summary` gives it (and metrics.k8s.io
//! is made of): each running container's CPU and memory from its [`super::usage::Usage`],
//! summed per pod; for the node, the machine's CPU (`/proc/stat`) and memory
//! (`/proc/meminfo`), as the kubelet reports its root cgroup.
//!
//! Reads only: what is counted is the runtime's business.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::api::kubelet::{ContainerStats, CpuStats, MemoryStats, NodeStats, PodReference, PodStats, Summary};

use super::context::Agent;

pub(super) fn summary(agent: &Agent) -> Summary {
    let now = crate::registry::now();
    let running: Vec<_> = agent.containers.lock().values().filter_map(|c| c.running.clone()).collect();
    let mut pods: BTreeMap<String, PodStats> = BTreeMap::new();
    for container in running {
        let usage = &container.guest.usage;
        let (rate, _window) = usage.rate();
        let memory = usage.memory();
        let stats = ContainerStats {
            name: container.name.clone(),
            start_time: container.started_at.clone(),
            cpu: CpuStats { time: now.clone(), usage_nano_cores: rate, usage_core_nano_seconds: usage.cpu_ns() },
            memory: MemoryStats {
                time: now.clone(),
                available_bytes: container.guest.memory_limit.map(|limit| limit.saturating_sub(memory)),
                usage_bytes: memory,
                working_set_bytes: memory,
                rss_bytes: memory,
            },
        };
        let meta = &container.pod;
        let pod = pods.entry(meta.uid.clone()).or_insert_with(|| PodStats {
            pod_ref: PodReference { name: meta.name.clone(), namespace: meta.namespace.clone(), uid: meta.uid.clone() },
            start_time: meta.start_time.clone(),
            cpu: CpuStats { time: now.clone(), ..CpuStats::default() },
            memory: MemoryStats { time: now.clone(), ..MemoryStats::default() },
            containers: Vec::new(),
        });
        pod.cpu.usage_nano_cores += stats.cpu.usage_nano_cores;
        pod.cpu.usage_core_nano_seconds += stats.cpu.usage_core_nano_seconds;
        pod.memory.usage_bytes += memory;
        pod.memory.working_set_bytes += memory;
        pod.memory.rss_bytes += memory;
        pod.containers.push(stats);
    }
    for pod in pods.values_mut() {
        pod.containers.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Summary { node: node_stats(agent, &now), pods: pods.into_values().collect() }
}

fn node_stats(agent: &Agent, now: &str) -> NodeStats {
    let busy_ns = machine_busy_ns().unwrap_or_default();
    let rate = {
        let mut sample = agent.machine_cpu.lock();
        let elapsed = sample.at.map(|at| at.elapsed());
        match elapsed {
            Some(elapsed) if elapsed.as_millis() < 1000 => {}
            _ => {
                let window = elapsed.unwrap_or_default().as_nanos().max(1);
                if sample.at.is_some() {
                    sample.rate = (busy_ns.saturating_sub(sample.busy_ns) as u128 * 1_000_000_000 / window) as u64;
                }
                sample.at = Some(Instant::now());
                sample.busy_ns = busy_ns;
            }
        }
        sample.rate
    };
    let (total, free, available) = machine_memory();
    NodeStats {
        node_name: agent.config.node_name.clone(),
        start_time: agent.started_at.clone(),
        cpu: CpuStats { time: now.to_string(), usage_nano_cores: rate, usage_core_nano_seconds: busy_ns },
        memory: MemoryStats {
            time: now.to_string(),
            available_bytes: Some(available),
            usage_bytes: total.saturating_sub(free),
            working_set_bytes: total.saturating_sub(available),
            rss_bytes: total.saturating_sub(available),
        },
    }
}

/// The machine's CPU time spent busy (all but idle and iowait), in nanoseconds.
fn machine_busy_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    busy_ticks(stat.lines().next()?).map(|ticks| ticks.saturating_mul(1_000_000_000) / clock_ticks())
}

/// Busy ticks from `/proc/stat`'s `cpu` line: user nice system idle iowait irq softirq steal.
fn busy_ticks(line: &str) -> Option<u64> {
    let mut fields = line.split_whitespace();
    (fields.next()? == "cpu").then_some(())?;
    let ticks: Vec<u64> = fields.take(8).filter_map(|f| f.parse().ok()).collect();
    (ticks.len() >= 5).then(|| ticks.iter().sum::<u64>() - ticks[3] - ticks[4])
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// MemTotal, MemFree and MemAvailable, in bytes.
fn machine_memory() -> (u64, u64, u64) {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("MemTotal:"), field("MemFree:"), field("MemAvailable:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_time_leaves_out_idle_and_iowait() {
        assert_eq!(busy_ticks("cpu  10 2 3 1000 50 1 1 0 0 0"), Some(17));
        assert_eq!(busy_ticks("cpu0 10 2 3 1000 50"), None, "only the machine's line");
        assert_eq!(busy_ticks("cpu 1 2"), None);
    }
}
