//! The admin writer: `server add w-N` through the CLI all run long, each acknowledged
//! name to be read back at the end.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::stopping;
use crate::{CliOutput, now_ns, run_baton};

#[derive(Clone, Debug)]
pub(crate) struct AdminWrite {
    pub(crate) name: String,
    pub(crate) acked: bool,
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
    pub(crate) error: String,
}

pub(crate) struct AdminWriter {
    pub(crate) writes: Arc<Mutex<Vec<AdminWrite>>>,
    pub(crate) worker: crate::Worker,
}

pub(crate) fn cli(directory: &str, args: &[&str], timeout: Duration) -> CliOutput {
    let mut full = vec!["--directory".to_string(), directory.to_string()];
    full.extend(args.iter().map(|s| s.to_string()));
    full.extend(["-o".to_string(), "json".to_string()]);
    run_baton(&full, timeout)
}

impl AdminWriter {
    pub(crate) fn start(directory: String) -> AdminWriter {
        let writes = Arc::new(Mutex::new(Vec::new()));
        let w = writes.clone();
        let worker = crate::Worker::spawn(move |s| {
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) && !stopping() {
                n += 1;
                let name = format!("w-{n}");
                let start_ns = now_ns();
                let out = cli(&directory, &["server", "add", &name], crate::CLI_TIMEOUT);
                let end_ns = now_ns();
                w.lock().unwrap().push(AdminWrite {
                    name,
                    acked: out.ok(),
                    start_ns,
                    end_ns,
                    error: if out.ok() {
                        String::new()
                    } else {
                        out.stderr.trim().to_string()
                    },
                });
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        AdminWriter { writes, worker }
    }

    pub(crate) fn stop(&mut self) {
        self.worker.stop();
    }
}
