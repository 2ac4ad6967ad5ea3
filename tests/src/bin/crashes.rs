//! Crash and corruption campaigns with the real `baton` binary on loopback: the command
//! line of [`baton_tests::crashes`], where the campaigns and their documentation live.
//!
//! ```text
//! cargo run --release -p baton-tests --bin crashes -- crash --kills 1000
//! cargo run --release -p baton-tests --bin crashes -- corrupt --cases 100
//! ```

fn main() -> anyhow::Result<()> {
    baton_tests::crashes::main()
}
