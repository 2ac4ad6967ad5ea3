//! Percentiles (nearest rank) over samples: the test harness's, so that a "p99" in a
//! benchmark table means what it means in the chaos and campaign reports.

pub use baton_tests::stats::{max, percentile};
