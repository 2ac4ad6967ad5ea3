//! The agent's clock: CLOCK_BOOTTIME, which keeps counting while the machine is
//! suspended. A lease measured on CLOCK_MONOTONIC would stop during a suspend and let an
//! agent wake up believing it still holds roles that moved long ago.

/// Milliseconds on CLOCK_BOOTTIME.
pub fn boot_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_BOOTTIME exists on every Linux since 2.6.39.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    assert_eq!(r, 0, "clock_gettime(CLOCK_BOOTTIME) failed");
    ts.tv_sec as u64 * 1_000 + ts.tv_nsec as u64 / 1_000_000
}

#[cfg(test)]
mod tests {
    #[test]
    fn boottime_advances() {
        let a = super::boot_ms();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while super::boot_ms() == a {
            assert!(
                std::time::Instant::now() < deadline,
                "CLOCK_BOOTTIME did not advance"
            );
            std::hint::spin_loop();
        }
    }
}
