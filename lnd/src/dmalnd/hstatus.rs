//! The health classes of the DMA LND's failures (`msg_health_status`), so LNet knows whom to
//! blame and whether another path may be tried.

use crate::lnet::health::HealthStatus;
use crate::lnet::{errno, Lnet, MsgId};

/// `lnet_finalize` with the health class of a DMA LND failure, sorted as o2iblnd sorts its
/// own: nobody at the fabric address (refused at once, as `kiblnd_peer_connect_failed` treats
/// ECONNREFUSED), the peer reported down, or an error completion (`kiblnd_tx_complete`) —
/// REMOTE_DROPPED; our device gone — LOCAL_DROPPED (the connect failure's "anything else");
/// cancelled here — LOCAL_ABORTED; a transmit the peer never pulled in time — REMOTE_TIMEOUT
/// (`kiblnd_abort_txs` for a tx waiting on its peer); a NAK with a status — REMOTE_ERROR
/// (`kiblnd_handle_completion`); anything else a local error.
pub fn hstatus(st: i32) -> HealthStatus {
    match st {
        0 => HealthStatus::Ok,
        errno::EHOSTUNREACH | errno::ECONNRESET | errno::EIO => HealthStatus::RemoteDropped,
        errno::ENETDOWN => HealthStatus::LocalDropped,
        errno::ECANCELED => HealthStatus::LocalAborted,
        errno::ETIMEDOUT => HealthStatus::RemoteTimeout,
        errno::ENODATA | errno::EPROTO | errno::EMSGSIZE => HealthStatus::RemoteError,
        _ => HealthStatus::LocalError,
    }
}

pub(super) fn finalize(lnet: &mut Lnet, msg: MsgId, st: i32) {
    lnet.finalize_hs(msg, st, hstatus(st));
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthStatus::*;

    /// Every errno the DMA LND finalizes with, and its class (o2iblnd's choices, see above).
    #[test]
    fn every_dma_lnd_error_has_its_class() {
        let table = [
            (0, Ok),
            (errno::EHOSTUNREACH, RemoteDropped),
            (errno::ECONNRESET, RemoteDropped),
            (errno::EIO, RemoteDropped),
            (errno::ENETDOWN, LocalDropped),
            (errno::ECANCELED, LocalAborted),
            (errno::ETIMEDOUT, RemoteTimeout),
            (errno::ENODATA, RemoteError),
            (errno::EPROTO, RemoteError),
            (errno::EMSGSIZE, RemoteError),
            (errno::ENOMEM, LocalError),
            (errno::EINVAL, LocalError),
        ];
        for (e, want) in table {
            assert_eq!(hstatus(e), want, "{}", errno::name(e));
        }
        // What LNet may do next: a vanished peer or our lost device try another path; a
        // timeout or a NAK does not.
        assert!(hstatus(errno::EHOSTUNREACH).resendable() && hstatus(errno::ENETDOWN).resendable());
        assert!(!hstatus(errno::ETIMEDOUT).resendable() && !hstatus(errno::ENODATA).resendable());
    }
}
