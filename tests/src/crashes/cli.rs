//! The command line of the `crashes` binary.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};

use super::corrupt::{CorruptConfig, corrupt_campaign};
use super::crash::{CrashConfig, crash_campaign};
use super::damage::Kind;
use super::demos::{rollback_demo, stuck_demo};

pub(crate) const USAGE: &str = "\
crashes crash   [--kills N] [--writers N] [--rate W/S] [--check-every N] [--down-max DUR]
                [--snapshot-every N] [--lease DUR] [--seed N] [-v]
crashes corrupt [--cases N] [--kinds K,K,...] [--no-readd] [--lease DUR] [--seed N] [-v]
crashes kinds   (lists the damage kinds of the corruption campaign)
crashes rollback (one follower's sled tail cut, then the leader lost: are acks lost?)
crashes stuck    (one follower's sled tail cut behind the leader's purge point: does it catch up?)";

/// The `crashes` binary's command line (see the module docs and `USAGE`).
pub fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(mode) = args.next() else {
        println!("{USAGE}");
        bail!("say which campaign: crash or corrupt");
    };
    let rest: Vec<String> = args.collect();
    let clean = match mode.as_str() {
        "crash" => {
            let cfg = CrashConfig::parse(&rest)?;
            let copy = use_release_binary()?;
            println!(
                "crash campaign: {} kills, {} writers, seed {}, binary {}",
                cfg.kills,
                cfg.writers,
                cfg.seed,
                crate::baton_bin().display()
            );
            let report = crash_campaign(&cfg);
            if let Some(p) = copy {
                let _ = std::fs::remove_file(p);
            }
            let report = report?;
            println!("{report}");
            report.clean()
        }
        "corrupt" => {
            let cfg = CorruptConfig::parse(&rest)?;
            let copy = use_release_binary()?;
            println!(
                "corruption campaign: {} cases, seed {}, binary {}",
                cfg.cases,
                cfg.seed,
                crate::baton_bin().display()
            );
            let report = corrupt_campaign(&cfg);
            if let Some(p) = copy {
                let _ = std::fs::remove_file(p);
            }
            let report = report?;
            println!("{report}");
            report.clean()
        }
        "rollback" => {
            let copy = use_release_binary()?;
            let report = rollback_demo();
            if let Some(p) = copy {
                let _ = std::fs::remove_file(p);
            }
            let report = report?;
            println!("{report}");
            report.lost.is_empty()
        }
        "stuck" => {
            let copy = use_release_binary()?;
            let report = stuck_demo(Duration::from_secs(60));
            if let Some(p) = copy {
                let _ = std::fs::remove_file(p);
            }
            let report = report?;
            println!("{report}");
            report.caught_up
        }
        "kinds" => {
            for k in Kind::ALL.into_iter().chain(Kind::EXTRA) {
                println!("{:<18} {}", k.name(), k.about());
            }
            true
        }
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            true
        }
        other => bail!("unknown campaign {other:?}\n{USAGE}"),
    };
    if !clean {
        std::process::exit(1);
    }
    Ok(())
}

/// In a release build of this binary, run the release `baton` too (built here once and
/// copied aside; the copy is returned for removal), unless `BATON_BIN` says otherwise.
pub(crate) fn use_release_binary() -> Result<Option<PathBuf>> {
    if cfg!(debug_assertions) || std::env::var_os("BATON_BIN").is_some() {
        return Ok(None);
    }
    let workspace = crate::workspace_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "baton", "--bin", "baton"])
        .current_dir(&workspace)
        .status()
        .context("running cargo build --release -p baton")?;
    if !status.success() {
        bail!("cargo build --release -p baton failed: {status}");
    }
    let target = crate::target_dir();
    // A private copy: other builds in this workspace may replace target/release/baton
    // while the campaign restarts nodes.
    let bin = target.join("release").join("baton");
    let copy = std::env::temp_dir().join(format!("baton-crashes-{}", std::process::id()));
    std::fs::copy(&bin, &copy).with_context(|| format!("copying {}", bin.display()))?;
    // SAFETY: called from main before any other thread exists.
    unsafe { std::env::set_var("BATON_BIN", &copy) };
    Ok(Some(copy))
}

pub(crate) fn default_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

/// Walks `--flag value` pairs, calling `f(flag, value)`; `-v` sets `verbose`.
pub(crate) fn parse_flags(
    args: &[String],
    verbose: &mut bool,
    mut f: impl FnMut(&str, &str) -> Result<bool>,
) -> Result<()> {
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "-v" | "--verbose" => *verbose = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--no-readd" => {
                f("--no-readd", "")?;
            }
            _ => {
                let value = it.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
                if !f(flag, value)? {
                    bail!("unknown argument {flag:?}\n{USAGE}");
                }
            }
        }
    }
    Ok(())
}
