//! Exports: a connected client of one OST (`obd_export`), found again by the client's UUID when
//! it reconnects (`target_handle_connect`), with its connection count and last xid.

use super::record::Export;
use super::{Oss, Req, Wait};
use crate::node::Node;
use crate::ptlrpc::wire::rc::*;
use crate::ptlrpc::wire::*;
use tracing::{info, warn};

fn uuid_of(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).to_string()
}

impl Oss {
    /// OST_CONNECT: buffers target UUID, client UUID, the client's handle and its
    /// `obd_connect_data`; the reply carries ours (what both support).
    pub(super) fn connect(&mut self, node: &mut Node, mut req: Req, body: &PtlrpcBody) {
        let target = req.msg.buf(1, 0).map(uuid_of).unwrap_or_default();
        let idx = target.strip_prefix("lustre-OST").and_then(|s| s.get(..4)).and_then(|h| u32::from_str_radix(h, 16).ok());
        let Some(idx) = idx.filter(|i| self.osts.contains_key(i)) else {
            return self.reply(node, &req, ENODEV, vec![], 0); // no such target here
        };
        let uuid = req.msg.buf(2, 1).map(uuid_of).unwrap_or_default();
        let ocd = req.msg.buf(4, 72).ok().and_then(|b| ConnectData::parse(b, req.msg.swapped).ok()).unwrap_or_default();
        if uuid.is_empty() || body.conn_cnt == 0 {
            return self.error(node, &req, EPROTO);
        }
        // `ofd_parse_connect_data`: checksums asked for need a type we both know.
        let flags = ocd.flags & connect::OST_SUPPORTED;
        let cksum_types = ocd.cksum_types & OBD_CKSUM_CRC32C;
        if flags & connect::CKSUM != 0 && cksum_types == 0 {
            warn!(%uuid, types = ocd.cksum_types, "connect with checksums but no type we support");
            return self.reply(node, &req, EPROTO, vec![], 0);
        }
        let known = self.exports.iter().find(|(_, e)| e.uuid == uuid && e.ost == idx).map(|(h, _)| *h);
        let mut op_flags = MSG_CONNECT_REPLAYABLE;
        // `target_handle_connect` during recovery: a client it waits for is told to replay; a
        // new one must wait until recovery is over.
        match self.recovery_connect(idx, &uuid) {
            Some(true) => op_flags |= MSG_CONNECT_RECOVERING,
            Some(false) => {}
            None => {
                info!(%uuid, ost = idx, "new client during recovery: -EBUSY");
                return self.reply(node, &req, EBUSY, vec![], 0);
            }
        }
        let handle = match known {
            Some(h) => {
                let e = &self.exports[&h];
                if e.conn_cnt >= body.conn_cnt || body.conn_cnt == 1 {
                    // An older connect, or a new client instance claiming a known UUID.
                    warn!(%uuid, have = e.conn_cnt, got = body.conn_cnt, "already connected at this or a later connection count");
                    return self.reply(node, &req, EALREADY, vec![], 0);
                }
                op_flags |= MSG_CONNECT_RECONNECT;
                self.abort_bulk_of(node, h);
                h
            }
            None => {
                self.next_export += 1;
                self.next_export
            }
        };
        info!(%uuid, ost = idx, handle, conn_cnt = body.conn_cnt, reconnect = known.is_some(), "client connected");
        let last_request = (self.clock)();
        let creates = self.exports.remove(&handle).map(|e| e.creates).unwrap_or_default();
        self.osts.get_mut(&idx).expect("checked above").set_client(&uuid, true);
        self.exports.insert(handle, Export { peer: req.peer, uuid, ost: idx, conn_cnt: body.conn_cnt, last_xid: 0, last_mod_xid: 0, flags, last_request, creates });
        let reply = ConnectData { flags, version: ocd.version, index: idx, brw_size: crate::wire::LNET_MTU, cksum_types, instance: (self.next_export & 0xffff) as u32, maxbytes: super::super::store::MAX_OBJECT_BYTES };
        req.handle = handle;
        self.send(node, &req, PTL_RPC_MSG_REPLY, 0, vec![reply.emit()], 0, op_flags);
    }

    /// The client reconnected: its requests of the old connection that wait on a bulk transfer
    /// end without a reply (`target_bulk_io`: "Reconnect on bulk").
    fn abort_bulk_of(&mut self, node: &mut Node, handle: u64) {
        let mut ids: Vec<u64> = self.active.iter().filter(|((h, _), _)| *h == handle).map(|(_, id)| *id).collect();
        ids.sort_unstable();
        for id in ids {
            self.abandon_bulk(node, id, "the client reconnected");
        }
    }

    /// The ping evictor (`ping_evictor_main`): an export whose client has sent nothing, not even
    /// a ping, for PING_EVICT_TIMEOUT is dropped (`class_fail_export`) with its bulk transfers;
    /// the client's next request gets -ENOTCONN and it connects again.
    pub(super) fn evict_silent(&mut self, node: &mut Node) {
        let now = (self.clock)();
        let limit = crate::ptlrpc::pinger::ping_evict_timeout(self.obd_timeout);
        let mut silent: Vec<u64> = self.exports.iter().filter(|(_, e)| now.saturating_duration_since(e.last_request) > limit).map(|(h, _)| *h).collect();
        silent.sort_unstable(); // a fixed order keeps simulated runs replayable
        for h in silent {
            self.abort_bulk_of(node, h);
            let e = self.exports.remove(&h).expect("listed above");
            self.osts.get_mut(&e.ost).expect("exports name our OSTs").set_client(&e.uuid, false);
            self.evictions += 1;
            warn!(uuid = %e.uuid, ost = e.ost, handle = h, "evicting a client silent for more than {limit:?}");
            self.trace.push(serde_json::json!({"evicted": e.uuid, "ost": e.ost, "peer": e.peer}));
        }
    }

    /// The negotiated connect flags of `handle`'s export.
    pub(super) fn export_flags(&self, handle: u64) -> u64 {
        self.exports.get(&handle).map_or(0, |e| e.flags)
    }

    /// Gives up bulk transfer `id` without a reply (the client will resend).
    pub(super) fn abandon_bulk(&mut self, node: &mut Node, id: u64, why: &str) {
        let (req, buf, md) = match self.waits.remove(&id) {
            Some(Wait::BulkIn { req, buf, md, .. } | Wait::BulkOut { req, buf, md, .. }) => (req, buf, md),
            Some(Wait::Queued(q)) => return self.drop_request(&q.req, why), // no transfer started
            Some(w) => return drop(self.waits.insert(id, w)),
            None => return,
        };
        self.bulk_timeouts += 1;
        self.drop_request(&req, why);
        // The buffer goes back once LNet lets go of the MD (a late transfer may still land).
        self.waits.insert(id, Wait::Reply { buf });
        let _ = node.lnet.md_unlink(md);
    }
}
