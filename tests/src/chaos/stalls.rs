//! Host stalls: how long the observer's host fails to schedule a runnable thread.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::now_ns;

/// A thread that sleeps 10 ms at a time and records every oversleep beyond 100 ms: the
/// host (two cores, debug binaries) not scheduling a runnable thread of the observer.
/// Context for gaps in the journal that no fault explains.
pub(crate) struct StallMeter {
    pub(crate) stalls: Arc<Mutex<Vec<(u64, u64)>>>,
    pub(crate) worker: crate::Worker,
}

impl StallMeter {
    pub(crate) fn start() -> StallMeter {
        let stalls = Arc::new(Mutex::new(Vec::new()));
        let st = stalls.clone();
        let worker = crate::Worker::spawn(move |sp| {
            while !sp.load(Ordering::SeqCst) {
                let before = Instant::now();
                let t = now_ns();
                std::thread::sleep(Duration::from_millis(10));
                let over = before.elapsed().saturating_sub(Duration::from_millis(10));
                if over > Duration::from_millis(100) {
                    st.lock().unwrap().push((t, over.as_nanos() as u64));
                }
            }
        });
        StallMeter { stalls, worker }
    }

    pub(crate) fn stop(&mut self) -> Vec<(u64, u64)> {
        self.worker.stop();
        self.stalls.lock().unwrap().clone()
    }
}
