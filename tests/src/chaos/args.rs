//! The command line of `chaos run`.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use super::faults::Kind;
use crate::now_ns;
use crate::tools::parse_duration;

pub(crate) struct RunArgs {
    pub(crate) duration: Duration,
    pub(crate) seed: u64,
    pub(crate) lease: Duration,
    pub(crate) report: Option<PathBuf>,
    pub(crate) prefix: String,
    pub(crate) workdir: PathBuf,
    pub(crate) baton: PathBuf,
    pub(crate) roles: usize,
    pub(crate) keep: bool,
    /// Fault kinds to draw from (all when empty).
    pub(crate) kinds: Vec<Kind>,
    /// Force SIGSTOP freezing even where a cgroup freezer exists.
    pub(crate) sigstop: bool,
    /// Plant a rogue role process as the second fault (the run must then fail).
    pub(crate) plant_rogue: bool,
    /// Make the second fault a dup-agent fault whose holder is frozen first, so the
    /// directory rightly hands the name to the duplicate, which runs the roles (the run
    /// must then fail: the observer sees a duplicate that ran).
    pub(crate) plant_dup: bool,
}

pub(crate) fn run_args(args: &[String]) -> Result<RunArgs> {
    let mut a = RunArgs {
        duration: Duration::from_secs(300),
        seed: now_ns() % 1_000_000,
        lease: Duration::from_secs(2),
        report: None,
        prefix: String::new(),
        workdir: PathBuf::new(),
        baton: PathBuf::new(),
        roles: 6,
        keep: false,
        kinds: Vec::new(),
        sigstop: false,
        plant_rogue: false,
        plant_dup: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (flag.clone(), None),
        };
        let mut value = || -> Result<String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--duration" => a.duration = parse_duration(&value()?).map_err(anyhow::Error::msg)?,
            "--seed" => a.seed = value()?.parse().context("--seed")?,
            "--lease" => a.lease = parse_duration(&value()?).map_err(anyhow::Error::msg)?,
            "--report" => a.report = Some(PathBuf::from(value()?)),
            "--prefix" => a.prefix = value()?,
            "--workdir" => a.workdir = PathBuf::from(value()?),
            "--baton" => a.baton = PathBuf::from(value()?),
            "--roles" => a.roles = value()?.parse().context("--roles")?,
            "--keep" => a.keep = true,
            "--plant" => match value()?.as_str() {
                "rogue" => a.plant_rogue = true,
                "dup" => a.plant_dup = true,
                other => bail!("--plant takes rogue or dup, not {other:?}"),
            },
            "--freezer" => match value()?.as_str() {
                "sigstop" => a.sigstop = true,
                "auto" => a.sigstop = false,
                other => bail!("--freezer is auto or sigstop, not {other:?}"),
            },
            "--faults" => {
                for name in value()?.split(',').filter(|n| !n.is_empty()) {
                    let k = Kind::ALL
                        .iter()
                        .map(|(k, _)| *k)
                        .find(|k| k.name() == name)
                        .ok_or_else(|| {
                            anyhow!(
                                "unknown fault {name:?}; the kinds are {}",
                                Kind::ALL
                                    .iter()
                                    .map(|(k, _)| k.name())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        })?;
                    a.kinds.push(k);
                }
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    if !valid_prefix(&a.prefix) {
        bail!("--prefix must be bt followed by 2-6 lowercase letters or digits");
    }
    if a.workdir.as_os_str().is_empty() || a.baton.as_os_str().is_empty() {
        bail!("--workdir and --baton are required");
    }
    if !(3..=6).contains(&a.roles) {
        bail!("--roles must be 3 to 6");
    }
    if a.lease < Duration::from_millis(500) {
        bail!("--lease must be at least 500ms");
    }
    a.baton = fs::canonicalize(&a.baton)
        .with_context(|| format!("no baton binary at {}", a.baton.display()))?;
    Ok(a)
}

pub(crate) fn valid_prefix(p: &str) -> bool {
    p.len() >= 4
        && p.len() <= 8
        && p.starts_with("bt")
        && p.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}
