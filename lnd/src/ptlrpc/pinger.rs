//! The pinger's timing (`obd_support.h`): clients ping an idle import every obd_timeout / 4, and
//! a server evicts an export silent for six ping intervals (PING_EVICT_TIMEOUT).

use std::time::Duration;

/// Lustre's default `obd_timeout` (OBD_TIMEOUT_DEFAULT, 100 s).
pub const OBD_TIMEOUT: Duration = Duration::from_secs(100);

/// `ping_interval`: obd_timeout / 4 (Lustre rounds to whole seconds, at least 1; here whole
/// milliseconds, so tests can run short timeouts).
pub fn ping_interval(obd_timeout: Duration) -> Duration {
    (obd_timeout / 4).max(Duration::from_millis(1))
}

/// PING_EVICT_TIMEOUT: six ping intervals — a client may miss a ping or two before the server
/// gives up on it.
pub fn ping_evict_timeout(obd_timeout: Duration) -> Duration {
    ping_interval(obd_timeout) * 6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lustres_defaults() {
        assert_eq!((ping_interval(OBD_TIMEOUT), ping_evict_timeout(OBD_TIMEOUT)), (Duration::from_secs(25), Duration::from_secs(150)));
        assert_eq!(ping_interval(Duration::ZERO), Duration::from_millis(1));
    }
}
