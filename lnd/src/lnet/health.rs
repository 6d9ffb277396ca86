//! LNet health (Lustre 2.12+): a value per local NI and per peer NI, at most
//! `LNET_MAX_HEALTH_VALUE`, lowered by `lnet_health_sensitivity` when a message fails for a
//! reason that is theirs and raised by as much on success; and the status classes an LND's
//! errors fall into (`enum lnet_msg_hstatus`).

use super::msg::{errno, NiIdx};
use crate::wire::Nid;
use std::collections::{BTreeMap, HashMap};

/// `LNET_MAX_HEALTH_VALUE`: every NI and peer NI starts here.
pub const MAX_HEALTH: u32 = 1000;
/// `lnet_health_sensitivity`'s default (Lustre 2.13 and later).
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
    /// The class of a completion status an LND reported as an errno without saying more, the way
    /// ksocklnd's `ksocknal_txlist_done` sorts its errors: a timeout is a local one, a refused,
    /// reset or unreachable peer dropped it, a cancelled transfer was aborted here, anything else
    /// is a local error. A NAK (the peer matched nothing, or not all of it) is the peer's error.
    pub fn of_errno(status: i32) -> HealthStatus {
        match status {
            0 => HealthStatus::Ok,
            errno::ENODATA | errno::EMSGSIZE => HealthStatus::RemoteError,
            errno::ETIMEDOUT => HealthStatus::LocalTimeout,
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

/// How often a failure of each class was counted against an NI or peer NI (the "health
/// stats" of `lnetctl net show -v` / `peer show -v`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct HealthStats {
    pub interrupts: u64,
    pub dropped: u64,
    pub aborted: u64,
    pub no_route: u64,
    pub timeouts: u64,
    pub error: u64,
    pub network_timeout: u64,
    /// ACKs and REPLYs that did not come in time (`response_timeout_count`).
    pub response_timeouts: u64,
    /// Times it went onto the recovery queue.
    pub recoveries: u64,
}

impl HealthStats {
    /// Counts one failure of class `s`.
    pub fn count(&mut self, s: HealthStatus) {
        use HealthStatus::*;
        match s {
            Ok => {}
            LocalInterrupt => self.interrupts += 1,
            LocalDropped | RemoteDropped => self.dropped += 1,
            LocalAborted => self.aborted += 1,
            LocalNoRoute => self.no_route += 1,
            LocalTimeout | RemoteTimeout => self.timeouts += 1,
            LocalError | RemoteError => self.error += 1,
            NetworkTimeout => self.network_timeout += 1,
        }
    }
}

impl HealthStatus {
    /// The name `lctl net_drop_add -e` takes for the class (`local_dropped`, ...).
    pub fn name(self) -> &'static str {
        use HealthStatus::*;
        match self {
            Ok => "ok",
            LocalInterrupt => "local_interrupt",
            LocalDropped => "local_dropped",
            LocalAborted => "local_aborted",
            LocalNoRoute => "local_no_route",
            LocalError => "local_error",
            LocalTimeout => "local_timeout",
            RemoteError => "remote_error",
            RemoteDropped => "remote_dropped",
            RemoteTimeout => "remote_timeout",
            NetworkTimeout => "network_timeout",
        }
    }

    /// Every failure class, in `enum lnet_msg_hstatus` order.
    pub const FAILURES: [HealthStatus; 10] = {
        use HealthStatus::*;
        [LocalInterrupt, LocalDropped, LocalAborted, LocalNoRoute, LocalError, LocalTimeout, RemoteError, RemoteDropped, RemoteTimeout, NetworkTimeout]
    };

    /// The class named `s` (`lctl net_drop_add -e`'s names).
    pub fn from_name(s: &str) -> Option<HealthStatus> {
        Self::FAILURES.into_iter().find(|h| h.name() == s)
    }

    /// The errno a message failed with this class finalizes with.
    pub fn errno(self) -> i32 {
        use HealthStatus::*;
        match self {
            Ok => 0,
            LocalTimeout | RemoteTimeout | NetworkTimeout => errno::ETIMEDOUT,
            LocalAborted | LocalInterrupt => errno::ECANCELED,
            LocalNoRoute => errno::EHOSTUNREACH,
            RemoteDropped => errno::ECONNRESET,
            _ => errno::EIO,
        }
    }
}

/// A peer NI's state beside its credits (`struct lnet_peer_ni`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerNi {
    pub health: Health,
    /// `lpni_sel_priority`: lower is preferred.
    pub sel_priority: u32,
    /// Round robin: messages sent to it.
    pub seq: u64,
    pub stats: HealthStats,
    /// The lowest health it fell to.
    pub lowest: u32,
}

impl Default for PeerNi {
    fn default() -> Self {
        PeerNi { health: Health::default(), sel_priority: u32::MAX, seq: 0, stats: HealthStats::default(), lowest: MAX_HEALTH }
    }
}

impl PeerNi {
    /// A failure its class blames on it.
    pub fn fail(&mut self, sensitivity: u32) {
        self.health.fail(sensitivity);
        self.lowest = self.lowest.min(self.health.0);
    }
}

/// The LNet module parameters of health and resends, with Lustre's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunables {
    /// `lnet_health_sensitivity`: 0 switches health off.
    pub sensitivity: u32,
    /// `lnet_retry_count`: resends of one message at most.
    pub retry_count: u32,
    /// `lnet_transaction_timeout` (ms): a message and its resends, and the wait for its ACK or
    /// REPLY, must end within it.
    pub transaction_timeout_ms: u64,
    /// How often the monitor looks at the recovery queues, and the unit of the pings' backoff
    /// (ms; `lnet_recovery_interval`, 1 s: Lustre's monitor thread wakes about every second).
    pub recovery_interval_ms: u64,
    /// `lnet_response_tracking`: time out ACKs and REPLYs at the LNet level.
    pub response_tracking: bool,
}

impl Default for Tunables {
    fn default() -> Self {
        Tunables { sensitivity: DEFAULT_SENSITIVITY, retry_count: 2, transaction_timeout_ms: 50_000, recovery_interval_ms: 1000, response_tracking: true }
    }
}

impl Tunables {
    /// Resends allowed: none while health is off (sensitivity 0 sets `lnet_retry_count` to 0).
    pub fn retries(&self) -> u32 {
        if self.sensitivity == 0 { 0 } else { self.retry_count }
    }
}

/// `LNET_MAX_RECOVERY_PING_INTERVAL`: the longest wait between two recovery pings (seconds).
pub const MAX_RECOVERY_PING_INTERVAL_S: u64 = 900;

/// When an NI pinged `ping_count` times already is pinged next: 2^count intervals (seconds in
/// Lustre) from now, 900 once the count passes 9 (`lnet_get_next_recovery_ping`, 2.15).
pub fn next_recovery_ping_ms(ping_count: u32, now_ms: u64, interval_ms: u64) -> u64 {
    let s = if ping_count > 9 { MAX_RECOVERY_PING_INTERVAL_S } else { 1u64 << ping_count };
    now_ms + s * interval_ms
}

/// The reserved portal and match bits of LNet pings (`LNET_RESERVED_PORTAL`,
/// `LNET_PROTO_PING_MATCHBITS`).
pub const PING_PORTAL: u32 = 0;
pub const PING_MATCH_BITS: u64 = 0x8000_0000_0000_0000;
/// `LNET_PID_LUSTRE`: the process every Lustre node answers pings as.
pub const PID_LUSTRE: u32 = 12345;

/// Who a recovery ping is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pinged {
    Local(NiIdx),
    Peer(Nid),
}

/// A queued NI's pings: how many since its last success, when the next is due, one in flight.
#[derive(Debug, Clone, Copy, Default)]
pub struct PingState {
    pub count: u32,
    pub next_ms: u64,
    pub pending: bool,
}

#[derive(Debug, Default)]
pub struct Recovery {
    pub local: BTreeMap<NiIdx, PingState>,
    pub peers: BTreeMap<Nid, PingState>,
    /// Recovery pings in flight, by MD.
    pub pings: HashMap<u64, Pinged>,
    pub next_scan_ms: u64,
    /// MDs that may wait for an ACK or REPLY (recounted at each scan), and when to scan.
    pub tracked: usize,
    pub next_rsp_scan_ms: u64,
}

impl Recovery {
    pub fn is_ping(&self, md: super::md::MdHandle) -> bool {
        !self.pings.is_empty() && self.pings.contains_key(&md.0)
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

    /// ksocklnd's sorting of its errors (`ksocknal_txlist_done`); a NAK is the peer's error
    /// (`kiblnd_handle_completion`: a completion with a negative status is REMOTE_ERROR).
    #[test]
    fn lnd_errors_fall_into_their_classes() {
        assert_eq!(HealthStatus::of_errno(0), Ok);
        assert_eq!(HealthStatus::of_errno(errno::ENODATA), RemoteError, "the peer answered: it matched nothing");
        assert_eq!(HealthStatus::of_errno(errno::ETIMEDOUT), LocalTimeout);
        for e in [errno::ENETDOWN, errno::EHOSTUNREACH, errno::ENETUNREACH, errno::ECONNRESET, errno::ECONNREFUSED] {
            assert_eq!(HealthStatus::of_errno(e), RemoteDropped, "{e}");
        }
        assert_eq!(HealthStatus::of_errno(errno::ECANCELED), LocalAborted);
        assert_eq!(HealthStatus::of_errno(errno::EIO), LocalError);
        assert_eq!(HealthStatus::of_errno(errno::ENOMEM), LocalError);
    }

    /// `lctl net_drop_add -e`: every class has its name, and the names read back.
    #[test]
    fn class_names_read_back() {
        for h in HealthStatus::FAILURES {
            assert_eq!(HealthStatus::from_name(h.name()), Some(h));
            assert_eq!(HealthStatus::of_errno(h.errno()) == Ok, false, "{h:?} finalizes with an error");
        }
        assert_eq!(HealthStatus::from_name("ok"), None, "not a failure");
        assert_eq!(HealthStatus::from_name("remote_droped"), None);
    }

    /// Lustre 2.15's defaults, and sensitivity 0 switching resends off.
    #[test]
    fn defaults_are_lustres_and_sensitivity_0_turns_resends_off() {
        let t = Tunables::default();
        assert_eq!((t.sensitivity, t.transaction_timeout_ms, t.retry_count), (100, 50_000, 2));
        assert_eq!(Tunables { sensitivity: 0, ..t }.retries(), 0);
    }

    /// `lnet_get_next_recovery_ping`: 1, 2, 4 ... seconds, never more than 900.
    #[test]
    fn recovery_pings_back_off_exponentially_up_to_900_s() {
        let waits: Vec<u64> = (0..12).map(|n| next_recovery_ping_ms(n, 5, 1000) - 5).collect();
        assert_eq!(waits, [1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 512000, 900000, 900000]);
        assert_eq!(next_recovery_ping_ms(u32::MAX, 0, 1000), 900_000);
        assert_eq!(next_recovery_ping_ms(3, 0, 10), 80, "a shorter interval scales the backoff");
    }
}
