//! The cluster benchmark driver behind `benches/run`: starts a real three-node Baton
//! cluster and a three-member etcd 3.4 cluster on loopback, runs the same workloads
//! against both, and reports them side by side (see `docs/benchmarks.md`).

pub mod baton_sys;
pub mod check;
pub mod cut;
pub mod etcd_agent;
pub mod etcd_sys;
pub mod journal;
pub mod procs;
pub mod report;
pub mod scale;
pub mod stats;
pub mod syscalls;
pub mod system;
pub mod workloads;

/// The etcd v3 API subset the driver speaks (generated from `proto/etcd_min.proto`).
#[allow(clippy::all)]
pub mod etcdpb {
    tonic::include_proto!("etcdserverpb");
}
