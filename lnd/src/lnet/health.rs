//! LNet health (Lustre 2.12+): a value per local NI and per peer NI, at most
//! `LNET_MAX_HEALTH_VALUE`, lowered by `lnet_health_sensitivity` when a message fails for a
//! reason that is theirs and raised by as much on success; and the status classes an LND's
//! errors fall into (`enum lnet_msg_hstatus`).

use super::msg::errno;

/// `LNET_MAX_HEALTH_VALUE`: every NI and peer NI starts here.
pub const MAX_HEALTH: u32 = 1000;
/// `lnet_health_sensitivity`'s default (Lustre 2.12.9 and later).
pub const DEFAULT_SENSITIVITY: u32 = 100;

/// Why a message failed, as Lustre classes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    LocalInterrupt,
    LocalDropped,
    LocalAborted,
    LocalNoRoute,
    LocalError,
    LocalTimeout,
    RemoteError,
    RemoteDropped,
    RemoteTimeout,
    NetworkTimeout,
}

impl HealthStatus {
    /// The class of a completion status an LND reported as an errno, the way ksocklnd's
    /// `ksocknal_txlist_done` sorts its errors: a timeout is the network's, a refused, reset or
    /// unreachable peer dropped it, a cancelled transfer was aborted here, anything else is a
    /// local error. A NAK (the peer matched nothing, or not all of it) reached the peer: OK.
    pub fn of_errno(status: i32) -> HealthStatus {
        match status {
            0 | errno::ENODATA | errno::EMSGSIZE => HealthStatus::Ok,
            errno::ETIMEDOUT => HealthStatus::NetworkTimeout,
            errno::ENETDOWN | errno::EHOSTUNREACH | errno::ENETUNREACH | errno::ECONNRESET | errno::ECONNREFUSED => HealthStatus::RemoteDropped,
            errno::ECANCELED => HealthStatus::LocalAborted,
            _ => HealthStatus::LocalError,
        }
    }

    /// The local NI pays (`lnet_handle_local_failure`): the LOCAL_* classes and a network
    /// timeout (which both ends share since Lustre 2.13).
    pub fn hurts_local_ni(self) -> bool {
        use HealthStatus::*;
        matches!(self, LocalInterrupt | LocalDropped | LocalAborted | LocalNoRoute | LocalError | LocalTimeout | NetworkTimeout)
    }

    /// The peer NI pays (`lnet_handle_remote_failure_locked`): REMOTE_* and a network timeout.
    pub fn hurts_peer_ni(self) -> bool {
        use HealthStatus::*;
        matches!(self, RemoteError | RemoteDropped | RemoteTimeout | NetworkTimeout)
    }

    /// `lnet_health_check`: the message may go again over another path — local failures other
    /// than LOCAL_ERROR, and REMOTE_DROPPED; never an error or timeout of the peer or network.
    pub fn resendable(self) -> bool {
        use HealthStatus::*;
        matches!(self, LocalInterrupt | LocalDropped | LocalAborted | LocalNoRoute | LocalTimeout | RemoteDropped)
    }
}

/// One health value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health(pub u32);

impl Default for Health {
    fn default() -> Self {
        Health(MAX_HEALTH)
    }
}

impl Health {
    /// `lnet_dec_healthv_locked`: down by `sensitivity`, not below 0.
    pub fn fail(&mut self, sensitivity: u32) {
        self.0 = self.0.saturating_sub(sensitivity);
    }

    /// `lnet_inc_healthv` (2.14+): up by `sensitivity`, not above the maximum.
    pub fn succeed(&mut self, sensitivity: u32) {
        self.0 = self.0.saturating_add(sensitivity).min(MAX_HEALTH);
    }

    /// Below the maximum: Lustre queues such an NI for recovery pings.
    pub fn degraded(&self) -> bool {
        self.0 < MAX_HEALTH
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthStatus::*;

    /// `lnet_dec_healthv_locked` / `lnet_inc_healthv`: steps of the sensitivity, within 0..=1000.
    #[test]
    fn health_moves_by_the_sensitivity_within_its_bounds() {
        let mut h = Health::default();
        assert_eq!(h, Health(MAX_HEALTH));
        h.succeed(DEFAULT_SENSITIVITY);
        assert_eq!(h.0, 1000, "capped at LNET_MAX_HEALTH_VALUE");
        for _ in 0..3 {
            h.fail(DEFAULT_SENSITIVITY);
        }
        assert_eq!((h.0, h.degraded()), (700, true));
        for _ in 0..20 {
            h.fail(DEFAULT_SENSITIVITY);
        }
        assert_eq!(h.0, 0, "not below 0");
        h.succeed(DEFAULT_SENSITIVITY);
        assert_eq!(h.0, 100);
        h.fail(0);
        assert_eq!(h.0, 100, "sensitivity 0: health is off");
    }

    /// `lnet_health_check`: who pays for each class and which may be resent.
    #[test]
    fn each_class_hurts_whom_lustre_says_and_resends_as_it_does() {
        let all = [Ok, LocalInterrupt, LocalDropped, LocalAborted, LocalNoRoute, LocalError, LocalTimeout, RemoteError, RemoteDropped, RemoteTimeout, NetworkTimeout];
        let row = |s: HealthStatus| (s.hurts_local_ni(), s.hurts_peer_ni(), s.resendable());
        let want = [
            (false, false, false),
            (true, false, true),
            (true, false, true),
            (true, false, true),
            (true, false, true),
            (true, false, false), // LOCAL_ERROR: not resent
            (true, false, true),
            (false, true, false),
            (false, true, true), // REMOTE_DROPPED: the only remote class resent
            (false, true, false),
            (true, true, false), // NETWORK_TIMEOUT: both ends, not resent
        ];
        assert_eq!(all.map(row), want);
    }

    /// ksocklnd's sorting of its errors (`ksocknal_txlist_done`), and a NAK is no failure.
    #[test]
    fn lnd_errors_fall_into_their_classes() {
        assert_eq!(HealthStatus::of_errno(0), Ok);
        assert_eq!(HealthStatus::of_errno(errno::ENODATA), Ok, "the peer answered: it matched nothing");
        assert_eq!(HealthStatus::of_errno(errno::ETIMEDOUT), NetworkTimeout);
        for e in [errno::ENETDOWN, errno::EHOSTUNREACH, errno::ENETUNREACH, errno::ECONNRESET, errno::ECONNREFUSED] {
            assert_eq!(HealthStatus::of_errno(e), RemoteDropped, "{e}");
        }
        assert_eq!(HealthStatus::of_errno(errno::ECANCELED), LocalAborted);
        assert_eq!(HealthStatus::of_errno(errno::EIO), LocalError);
        assert_eq!(HealthStatus::of_errno(errno::ENOMEM), LocalError);
    }
}
