//! Cgroup statistics with runc's JSON key names.
//!
//! The shapes and keys follow runc's `types/events.go` (`Stats`, `Cpu`, `Memory`, `Pids`,
//! `Blkio`, `NetworkInterface`), which is what `runc events --stats` prints inside its
//! `{"type":"stats","id":...,"data":{...}}` object, so the host can pass `data` through
//! unchanged. The agent fills them from cgroup v2 files (`cpu.stat`, `memory.current`,
//! `memory.max`, `memory.swap.*`, `memory.stat`, `pids.*`, `io.stat`) the way runc's cgroup v2
//! manager does, and network counters from `/proc/net/dev` of the container's network namespace.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// All statistics of one container (runc `types.Stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// CPU usage and throttling.
    #[serde(default)]
    pub cpu: Cpu,
    /// Memory usage, limits and the raw `memory.stat` counters.
    #[serde(default)]
    pub memory: Memory,
    /// Task counts.
    #[serde(default)]
    pub pids: Pids,
    /// Block I/O counters.
    #[serde(default)]
    pub blkio: Blkio,
    /// Per-interface network counters (runc's key is snake_case here).
    #[serde(default, rename = "network_interfaces")]
    pub network_interfaces: Vec<NetworkInterface>,
}

/// CPU statistics (runc `types.Cpu`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cpu {
    /// Usage in nanoseconds.
    #[serde(default)]
    pub usage: CpuUsage,
    /// CFS throttling counters.
    #[serde(default)]
    pub throttling: Throttling,
}

/// CPU time in nanoseconds (runc `types.CpuUsage`; cgroup v2 `cpu.stat` is in microseconds and
/// is multiplied by 1000, as runc does).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuUsage {
    /// Total CPU time (`usage_usec` * 1000).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub total: u64,
    /// Per-CPU totals (not available from cgroup v2; empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    /// Time in kernel mode (`system_usec` * 1000).
    #[serde(default)]
    pub kernel: u64,
    /// Time in user mode (`user_usec` * 1000).
    #[serde(default)]
    pub user: u64,
}

/// CFS throttling (runc `types.Throttling`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttling {
    /// Enforcement periods elapsed (`nr_periods`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub periods: u64,
    /// Periods in which the group was throttled (`nr_throttled`).
    #[serde(default, rename = "throttled_periods", skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    /// Total throttled time in nanoseconds (`throttled_usec` * 1000).
    #[serde(default, rename = "throttled_time", skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

/// Memory statistics (runc `types.Memory`), in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// Page cache (`file` in `memory.stat`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache: u64,
    /// Memory usage (`memory.current`, limit from `memory.max`).
    #[serde(default)]
    pub usage: MemoryEntry,
    /// Memory + swap usage (`memory.swap.current` + `memory.current`, as runc reports it).
    #[serde(default)]
    pub swap: MemoryEntry,
    /// The whole `memory.stat` file, key by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

/// One memory counter (runc `types.MemoryEntry`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryEntry {
    /// Limit in bytes; `u64::MAX` when unlimited (`max`), as runc reports it.
    #[serde(default)]
    pub limit: u64,
    /// Usage in bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub usage: u64,
    /// Peak usage in bytes (`memory.peak` when present).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max: u64,
    /// Times the limit was hit (`max` in `memory.events`).
    #[serde(default)]
    pub failcnt: u64,
}

/// Task counts (runc `types.Pids`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pids {
    /// `pids.current`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub current: u64,
    /// `pids.max`; 0 when unlimited, as runc reports it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub limit: u64,
}

/// Block I/O counters (runc `types.Blkio`), from `io.stat`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blkio {
    /// Bytes per device and op (`Read`, `Write`).
    #[serde(
        default,
        rename = "ioServiceBytesRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    /// Operations per device and op (`Read`, `Write`).
    #[serde(
        default,
        rename = "ioServicedRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

/// One block I/O counter (runc `types.BlkioEntry`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlkioEntry {
    /// Device major number.
    #[serde(default)]
    pub major: u64,
    /// Device minor number.
    #[serde(default)]
    pub minor: u64,
    /// `Read` or `Write`.
    #[serde(default)]
    pub op: String,
    /// The count.
    #[serde(default)]
    pub value: u64,
}

/// Counters of one network interface (runc `types.NetworkInterface`). The Go struct has no JSON
/// tags, so runc prints its field names as they are: `Name`, `RxBytes`, ... (PascalCase).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkInterface {
    /// Interface name.
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Send errors.
    pub tx_errors: u64,
    /// Sent packets dropped.
    pub tx_dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_runc_events_json() {
        let mut s = Stats::default();
        s.cpu.usage.total = 5_000;
        s.cpu.throttling.throttled_periods = 2;
        s.memory.usage = MemoryEntry {
            limit: 1 << 20,
            usage: 4096,
            max: 0,
            failcnt: 0,
        };
        s.pids.current = 3;
        s.blkio.io_service_bytes_recursive.push(BlkioEntry {
            major: 254,
            minor: 0,
            op: "Read".into(),
            value: 512,
        });
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(v["cpu"]["usage"]["total"], 5000);
        assert_eq!(v["cpu"]["throttling"]["throttled_periods"], 2);
        assert_eq!(v["memory"]["usage"]["limit"], 1 << 20);
        assert_eq!(v["memory"]["usage"]["failcnt"], 0);
        assert_eq!(v["pids"]["current"], 3);
        assert_eq!(v["blkio"]["ioServiceBytesRecursive"][0]["op"], "Read");
        assert!(v["network_interfaces"].is_array());
        s.network_interfaces.push(NetworkInterface {
            name: "lo".into(),
            rx_bytes: 7,
            ..NetworkInterface::default()
        });
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(v["network_interfaces"][0]["Name"], "lo");
        assert_eq!(v["network_interfaces"][0]["RxBytes"], 7);
        assert_eq!(v["network_interfaces"][0]["TxDropped"], 0);
        let back: Stats = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }
}
