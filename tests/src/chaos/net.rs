//! The network: a namespace per host on a private bridge, and partitions.

use anyhow::{Result, bail};

use super::PORT;
use super::sys::sh;

#[derive(Clone, Debug)]
pub(crate) struct Net {
    pub(crate) prefix: String,
    pub(crate) subnet: u8,
}

impl Net {
    pub(crate) fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    pub(crate) fn ip(&self, host: &str) -> String {
        let last = match host {
            "n1" => 1,
            "n2" => 2,
            "n3" => 3,
            "a" => 11,
            "b" => 12,
            "c" => 13,
            "d" => 14,
            _ => 254,
        };
        format!("10.77.{}.{last}", self.subnet)
    }

    pub(crate) fn node_addr(&self, id: usize) -> String {
        format!("{}:{PORT}", self.ip(&format!("n{id}")))
    }

    /// The node's peer port (Raft), on the same host as its client port.
    pub(crate) fn peer_addr(&self, id: usize) -> String {
        format!("{}:{}", self.ip(&format!("n{id}")), PORT + 100)
    }

    pub(crate) fn directory(&self) -> String {
        (1..=3)
            .map(|i| self.node_addr(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every host; `d` runs only the duplicate agents of dup-agent faults.
    pub(crate) fn hosts() -> [&'static str; 7] {
        ["n1", "n2", "n3", "a", "b", "c", "d"]
    }

    /// A /24 under 10.77.0.0/16 that no interface or route of this host uses.
    pub(crate) fn pick_subnet(prefix: &str) -> Result<u8> {
        let addrs = sh("ip", &["-4", "-o", "addr", "show"])?;
        let routes = sh("ip", &["-4", "route", "show", "table", "all"])?;
        let h = prefix
            .bytes()
            .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
        for i in 0..250u32 {
            let k = ((h + i) % 250 + 1) as u8;
            let net = format!("10.77.{k}.");
            if !addrs.contains(&net) && !routes.contains(&net) {
                return Ok(k);
            }
        }
        bail!("no free /24 under 10.77.0.0/16")
    }

    pub(crate) fn setup(&self) -> Result<()> {
        let sw = self.ns("sw");
        sh("ip", &["netns", "add", &sw])?;
        sh("ip", &["-n", &sw, "link", "set", "lo", "up"])?;
        sh("ip", &["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        sh("ip", &["-n", &sw, "link", "set", "br0", "up"])?;
        for h in Net::hosts() {
            let ns = self.ns(h);
            let port = format!("v-{h}");
            sh("ip", &["netns", "add", &ns])?;
            sh(
                "ip",
                &[
                    "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ],
            )?;
            sh(
                "ip",
                &["-n", &sw, "link", "set", &port, "master", "br0", "up"],
            )?;
            sh("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            sh(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{}/24", self.ip(h)),
                    "dev",
                    "eth0",
                ],
            )?;
            sh("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        let root = self.ns("h");
        sh(
            "ip",
            &[
                "link", "add", &root, "type", "veth", "peer", "name", "v-root", "netns", &sw,
            ],
        )?;
        sh(
            "ip",
            &["-n", &sw, "link", "set", "v-root", "master", "br0", "up"],
        )?;
        sh(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", self.ip("root")),
                "dev",
                &root,
            ],
        )?;
        sh("ip", &["link", "set", &root, "up"])?;
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cut {
    /// iptables DROP of everything but loopback, in and out, inside the namespace.
    Drop,
    /// The namespace's only link down.
    LinkDown,
}

impl Cut {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Cut::Drop => "iptables DROP",
            Cut::LinkDown => "link down",
        }
    }
}

pub(crate) fn cut(net: &Net, host: &str, how: Cut) -> Result<()> {
    let ns = net.ns(host);
    match how {
        Cut::Drop => {
            let rules: [&[&str]; 4] = [
                &["INPUT", "-i", "lo", "-j", "ACCEPT"],
                &["INPUT", "-j", "DROP"],
                &["OUTPUT", "-o", "lo", "-j", "ACCEPT"],
                &["OUTPUT", "-j", "DROP"],
            ];
            for rule in rules {
                let mut args = vec!["netns", "exec", &ns, "iptables", "-w", "-A"];
                args.extend_from_slice(rule);
                sh("ip", &args)?;
            }
        }
        Cut::LinkDown => {
            sh("ip", &["-n", &ns, "link", "set", "eth0", "down"])?;
        }
    }
    Ok(())
}

pub(crate) fn heal(net: &Net, host: &str, iptables: bool) -> Result<()> {
    let ns = net.ns(host);
    if iptables {
        sh(
            "ip",
            &["netns", "exec", &ns, "iptables", "-w", "-F", "INPUT"],
        )?;
        sh(
            "ip",
            &["netns", "exec", &ns, "iptables", "-w", "-F", "OUTPUT"],
        )?;
    }
    sh("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
    Ok(())
}
