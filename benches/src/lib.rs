//! The cluster benchmark driver behind `benches/run`: starts a real three-node Baton
//! cluster and a three-member etcd 3.4 cluster on loopback, runs the same workloads
//! against both, and reports them side by side (see `docs/benchmarks.md`).

pub mod baton_sys;
pub mod check;
pub mod etcd_agent;
pub mod etcd_sys;
pub mod journal;
pub mod procs;
pub mod report;
pub mod scale;
pub mod stats;
pub mod syscalls;
pub mod workloads;

/// The etcd v3 API subset the driver speaks (generated from `proto/etcd_min.proto`).
#[allow(clippy::all)]
pub mod etcdpb {
    tonic::include_proto!("etcdserverpb");
}

/// Wall-clock nanoseconds since the Unix epoch (role processes stamp their start with
/// `date +%s%N`, so failover times are measured on the same clock).
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
