//! ptlrpc transfer ids: one increasing sequence per node, started from the clock as
//! `ptlrpc_init_xid` does, so a new job or a restarted node never reuses an xid a server remembers.

/// A node's xids (`ptlrpc_last_xid`): one sequence for every import of the node, started from
/// the clock as `ptlrpc_init_xid` does (seconds << 20, room for a million RPCs a second), so a
/// new job, or the same node started again, never reuses an xid a server still remembers.
#[derive(Debug, Clone)]
pub struct Xids {
    last: u64,
}

/// `YEAR_2004` of `ptlrpc_init_xid`: a clock below this was never set.
const YEAR_2004: u64 = 1 << 30;

impl Xids {
    /// Starts from `now_ns`, the wall clock in nanoseconds (a node passes its LNet incarnation,
    /// which is that). A clock before 2004 (unset, or a simulation's virtual one) gives 62 bits
    /// mixed from it instead of Lustre's random ones, so a simulated run replays.
    pub fn new(now_ns: u64) -> Xids {
        let secs = now_ns / 1_000_000_000;
        let xid = if secs < YEAR_2004 {
            let mut x = now_ns ^ 0x5851_F42D_4C95_7F2D;
            x = (x ^ (x >> 33)).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
            x = (x ^ (x >> 33)).wrapping_mul(0xC4CE_B9FE_1A85_EC53);
            ((x ^ (x >> 33)) >> 2) | (1 << 61)
        } else {
            secs << 20
        };
        Xids { last: xid & !(super::wire::BULK_OPS_COUNT - 1) }
    }

    /// The next xid (`ptlrpc_next_xid`).
    pub fn next_xid(&mut self) -> u64 {
        self.last += super::wire::BULK_OPS_COUNT;
        self.last
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn xids_start_from_the_clock_and_step_by_bulk_ops() {
        // 2024-01-01 in ns: seconds << 20, as ptlrpc_init_xid.
        let mut x = super::Xids::new(1_704_067_200 * 1_000_000_000);
        assert_eq!(x.next_xid(), (1_704_067_200u64 << 20) + 128);
        assert_eq!(x.next_xid(), (1_704_067_200u64 << 20) + 256);
        // An unset clock: 62 mixed bits, aligned, distinct per start value, replayable.
        let (a, b) = (super::Xids::new(7).next_xid(), super::Xids::new(8).next_xid());
        assert!(a >= 1 << 61 && a % 128 == 0 && a != b && a == super::Xids::new(7).next_xid());
    }
}
