//! `baton-sim --seeds N [--from SEED] [--trace] [--plant BUG]`

use std::time::Instant;

use baton_sim::{Bugs, run_seed_caught};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Deterministic simulation of a Baton cluster")]
struct Args {
    /// How many seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Print each run's trace.
    #[arg(long)]
    trace: bool,
    /// Plant a bug: ack-before-flush, no-self-fence, no-clock-restart (the last needs
    /// the `planted-bugs` feature).
    #[arg(long)]
    plant: Vec<String>,
    /// Stop at the first seed with a violation.
    #[arg(long)]
    stop_on_violation: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let mut bugs = Bugs::default();
    for p in &args.plant {
        match p.as_str() {
            "ack-before-flush" => bugs.ack_before_flush = true,
            "no-self-fence" => bugs.no_self_fence = true,
            "no-clock-restart" if cfg!(feature = "planted-bugs") => bugs.no_clock_restart = true,
            "no-clock-restart" => {
                eprintln!("no-clock-restart needs a build with --features planted-bugs");
                return std::process::ExitCode::from(2);
            }
            other => {
                eprintln!("unknown bug {other:?}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let started = Instant::now();
    let mut violations = 0usize;
    let mut run = 0u64;
    for seed in args.from..args.from.saturating_add(args.seeds) {
        let o = run_seed_caught(seed, bugs);
        run += 1;
        if args.trace {
            for l in &o.trace {
                println!("{l}");
            }
        }
        if !o.violations.is_empty() {
            violations += o.violations.len();
            println!("seed {seed}: {} violation(s)", o.violations.len());
            for v in o.violations.iter().take(5) {
                println!("  {v}");
            }
            let plant: String = args.plant.iter().map(|p| format!(" --plant {p}")).collect();
            println!(
                "  replay: cargo run --release -p baton-sim -- --from {seed} --seeds 1 --trace{plant}"
            );
            if args.stop_on_violation {
                break;
            }
        }
    }
    eprintln!("{run} seeds in {:.1} s", started.elapsed().as_secs_f64());
    println!("simulated {run} seeds, {violations} violations");
    if violations == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
