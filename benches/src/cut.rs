//! Cutting a node off the network on loopback, while its process keeps running, as a node
//! behind a failed switch port: iptables drops every packet the node sends (matched by
//! its group id: each node of a benchmark cluster runs with a group of its own, see
//! `ClusterOpts::gid_base`) and every TCP packet sent to its listening ports. Ports alone
//! would not do: the connections a node opens (Raft appends from a leader) leave from
//! ephemeral ports. Its peers and clients see it go silent, with no reset or refusal.
//!
//! Needs root and `iptables` (the benches' driver runs as root on the bench machine,
//! like the chaos runner). Every rule carries a comment naming this driver's pid, so
//! [`Cut::heal`] removes exactly its own rules; dropping a [`Cut`] heals it too, so a
//! workload that fails half-way does not leave the machine's loopback cut.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// How to recognise one node's traffic.
#[derive(Clone, Debug)]
pub struct Target {
    /// The TCP ports it listens on (clients, peers).
    pub ports: Vec<u16>,
    /// The group id it runs with.
    pub gid: u32,
}

/// The rules that cut one node off; removed by [`Cut::heal`] or on drop.
pub struct Cut {
    /// The rules added, as (chain, specification), to delete them again.
    rules: Vec<(&'static str, Vec<String>)>,
    healed: bool,
}

impl Cut {
    /// Drop everything `target` sends and every TCP packet on `lo` to its ports.
    pub fn apply(target: &Target) -> Result<Cut> {
        let tag = format!("baton-bench-{}", std::process::id());
        let mut cut = Cut {
            rules: Vec::new(),
            healed: false,
        };
        let gid = target.gid.to_string();
        let mut wanted = vec![("OUTPUT", vec!["-m", "owner", "--gid-owner", &gid])];
        let ports: Vec<String> = target.ports.iter().map(|p| p.to_string()).collect();
        for port in &ports {
            wanted.push(("INPUT", vec!["-i", "lo", "-p", "tcp", "--dport", port]));
        }
        for (chain, head) in wanted {
            let mut rule: Vec<String> = head.iter().map(|s| s.to_string()).collect();
            rule.extend(["-m", "comment", "--comment", &tag, "-j", "DROP"].map(|s| s.to_string()));
            iptables("-I", chain, &rule)?;
            cut.rules.push((chain, rule));
        }
        Ok(cut)
    }

    /// Remove the rules: the node is reachable again.
    pub fn heal(mut self) -> Result<()> {
        self.remove()
    }

    fn remove(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.healed, true) {
            return Ok(());
        }
        let mut first_error = None;
        for (chain, rule) in self.rules.drain(..) {
            if let Err(e) = iptables("-D", chain, &rule) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("  could not remove a cut's iptables rules: {e:#}");
        }
    }
}

/// Whether this machine can cut nodes off (root and a working `iptables`); the reason
/// when it cannot.
pub fn available() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("cutting a node off needs root (iptables)");
    }
    let out = Command::new("iptables")
        .args(["-w", "-L", "INPUT", "-n"])
        .output()
        .context("running iptables")?;
    if !out.status.success() {
        bail!(
            "iptables -L INPUT failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn iptables(op: &str, chain: &str, rule: &[String]) -> Result<()> {
    let out = Command::new("iptables")
        .args(["-w", op, chain])
        .args(rule)
        .output()
        .context("running iptables")?;
    if !out.status.success() {
        bail!(
            "iptables {op} {chain} {}: {}",
            rule.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
