//! The chaos runner's stubborn roles: the role's shell starts the journal writer in the
//! background with SIGTERM ignored and waits for it (as a daemon that handles TERM badly
//! would). SIGTERM to the role's group ends the shell at once and leaves the writer;
//! only the wrapper's SIGKILL after the grace stops it. Every fault that stops a role
//! (kill -9 of its agent, a freeze, a partition, a failback) then goes through that
//! path, and the observer's overlap checks (journal and `/proc`) catch a writer that
//! outlives its role. The writer's command line is the plain writer's plus
//! [`IGNORE_TERM_FLAG`], so the `/proc` sampler finds it by the same marker.

use std::path::Path;

use serde_json::{Value, json};

/// The role kind the agents run the stubborn command for.
pub const KIND: &str = "stubborn";
/// `chaos role-writer ... --ignore-term`: the writer ignores SIGTERM.
pub const IGNORE_TERM_FLAG: &str = "--ignore-term";

/// The shell command of a stubborn role: a background writer that ignores SIGTERM, and
/// a shell that waits for it.
pub fn command(exe: &Path, socket: &Path) -> String {
    format!(
        "'{}' role-writer --socket '{}' {IGNORE_TERM_FLAG} & wait",
        exe.display(),
        socket.display()
    )
}

/// Which roles (by index, from 0) are stubborn: every second one, so that with six
/// roles both a failback role and a plain one are.
pub fn is_stubborn(index: usize) -> bool {
    index % 2 == 1
}

/// What the `/proc` sampler saw of stubborn writers.
#[derive(Clone, Debug, Default)]
pub struct StubbornStats {
    /// Stubborn writer processes seen.
    pub seen: usize,
    /// For each one that outlived its shell (SIGTERM ignored): how long, ms, until it
    /// was gone (SIGKILL), to within a sample period.
    pub outlived_shell_ms: Vec<f64>,
}

impl StubbornStats {
    pub fn json(&self, roles: &[String], stats: Value) -> Value {
        json!({
            "roles": roles,
            "writers_seen": self.seen,
            "outlived_their_shell": self.outlived_shell_ms.len(),
            "outlived_shell_by": stats,
        })
    }
}
