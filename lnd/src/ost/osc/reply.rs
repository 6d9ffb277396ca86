//! What a reply means, as `osc_brw_fini_request` and the other osc interpret callbacks read it:
//! a READ's status is the bytes sent (fewer than asked is a short read: the rest is zeros, as
//! `handle_short_read`), checksums over those bytes; a WRITE whose checksum the server saw
//! differently is redone (`check_write_checksum` → -EAGAIN); -ENOTCONN reconnects.

use super::state::{Op, Rpc};
use super::Osc;
use crate::node::Node;
use crate::ptlrpc::pattern_fill;
use crate::ptlrpc::wire::rc::*;
use crate::ptlrpc::wire::*;
use std::time::Duration;

impl Osc {
    pub(super) fn finish(&mut self, node: &mut Node, mut rpc: Rpc, bytes: &[u8]) {
        let op = rpc.op;
        let (msg, body) = match LustreMsg::parse(bytes).and_then(|m| m.body().map(|b| (m, b))) {
            Ok(x) => x,
            Err(e) => {
                self.release(node, rpc);
                return self.fail(format!("{op:?}: bad reply: {e}"));
            }
        };
        // What a READ received (the server's count, checked against what landed).
        let read = match (op, &rpc.bulk) {
            (Op::Read { .. }, Some(b)) if body.status >= 0 => Some(b.got.unwrap_or(0)).filter(|&g| g == body.status as u64).map(|g| node.mem.to_vec(b.seg.off, g as usize).unwrap_or_default()),
            _ => None,
        };
        self.at_measured(&rpc, &body);
        let mut rec = serde_json::json!({"rpc": opc::name(body.opc), "xid": rpc.xid, "ost": self.job.targets[rpc.t].0, "status": body.status});
        // A digest of the bulk data moved (never the bytes themselves).
        let digest = match op {
            Op::Write { .. } => rpc.cksum.or_else(|| rpc.data.as_deref().map(|d| crc32c(0, d))).or_else(|| self.data_of(op).map(|d| crc32c(0, &d))),
            Op::Read { .. } => read.as_ref().map(|d| crc32c(0, d)),
            _ => None,
        };
        if let Some(d) = digest.filter(|_| body.status >= 0) {
            rec["data"] = serde_json::json!(format!("{d:08x}"));
        }
        self.trace.push(rec);
        self.free_committed(rpc.t, body.last_committed);
        if body.status == ENOTCONN && !matches!(op, Op::Connect { .. }) {
            return self.reconnect(node, rpc);
        }
        let obdo = msg.buf(1, OBDO_LEN).and_then(|b| Obdo::parse(b, msg.swapped));
        let server_cksum = obdo.as_ref().ok().filter(|o| o.valid & valid::FLCKSUM != 0).map(|o| o.cksum);
        let damaged = matches!(op, Op::Write { .. }) && rpc.cksum.zip(server_cksum).is_some_and(|(a, b)| a != b);
        if rpc.replay.is_some() || matches!(op, Op::ReplayDone { .. }) {
            if damaged || matches!(body.status, ENOMEM | EAGAIN | EIO) {
                return self.replay_again(node, rpc);
            }
            return self.replayed(node, rpc, body.status);
        }
        if body.status == 0 && body.transno != 0 && !damaged {
            let oid = obdo.as_ref().ok().map(|o| o.oid).filter(|_| matches!(op, Op::Create { .. }));
            self.retain(&mut rpc, body.transno, oid);
        }
        let brw = matches!(op, Op::Write { .. } | Op::Read { .. });
        if brw && matches!(body.status, ENOMEM | EAGAIN | EIO) {
            // `osc_recoverable_error`: the I/O is redone, as a new request, a little later.
            let delay = Duration::from_millis(self.job.timeout_ms.clamp(1, 1000));
            return self.again_later(node, rpc, &format!("status {} from the server", body.status), delay);
        }
        match op {
            // A new client while the target recovers: connect again a little later.
            Op::Connect { .. } if body.status == EBUSY => {
                let delay = Duration::from_millis(self.job.timeout_ms.clamp(1, 1000));
                return self.again_later(node, rpc, "the target is recovering", delay);
            }
            Op::Connect { t } if body.status == 0 => {
                let ocd = msg.buf(1, 72).ok().and_then(|b| ConnectData::parse(b, msg.swapped).ok()).unwrap_or_default();
                let imp = &mut self.imports[t];
                imp.handle = body.handle;
                imp.cksum = ocd.flags & connect::CKSUM != 0 && ocd.cksum_types & OBD_CKSUM_CRC32C != 0;
                if self.job.checksum && !imp.cksum {
                    tracing::warn!(job = %self.job.name, ost = self.job.targets[t].0, "the target does not checksum with CRC32C: bulk data goes unchecked");
                }
                if body.op_flags & MSG_CONNECT_RECOVERING != 0 {
                    self.release(node, rpc);
                    return self.start_replay(node, t);
                }
                imp.reconnecting = false;
                if !imp.replay.is_empty() && body.op_flags & MSG_CONNECT_RECONNECT == 0 {
                    // A new instance that does not recover us: what it had not committed is gone.
                    let n = std::mem::take(&mut imp.replay).len();
                    self.fail(format!("OST{:04x} restarted without recovering us: {n} uncommitted changes lost", self.job.targets[t].0));
                }
            }
            // A resent DESTROY whose first attempt did it.
            Op::Destroy { .. } if body.status == ENOENT && rpc.tries > 1 => {}
            _ if body.status < 0 => {
                if let Op::Connect { t } = op {
                    self.imports[t].reconnecting = false; // parked RPCs go again and fail on their own
                }
                let ost = self.job.targets[rpc.t].0;
                self.release(node, rpc);
                return self.fail(format!("{op:?} on OST{ost:04x}: status {}", body.status));
            }
            Op::Create { file, stripe } => match obdo {
                Ok(o) => {
                    self.objects.insert((file, stripe), (rpc.t, o.oid));
                }
                Err(e) => self.fail(format!("{op:?}: {e}")),
            },
            Op::Write { file, chunk } => {
                if let (Some(ours), Some(theirs)) = (rpc.cksum, server_cksum) {
                    if ours != theirs {
                        // Damaged on the way: the server wrote it; write it again.
                        return self.again(node, rpc, &format!("server checksum {theirs:#x}, ours {ours:#x}"), false);
                    }
                }
                let rc = msg.buf(2, 4).map(|b| i32::from_le_bytes(b[..4].try_into().unwrap()));
                match rc {
                    Ok(0) => {
                        self.report.bytes_written += self.chunk(chunk).2 as u64;
                        self.acked.insert((file, chunk));
                    }
                    other => self.fail(format!("{op:?}: niobuf rc {other:?}")),
                }
            }
            Op::Read { file, chunk } => {
                let Some(mut got) = read else {
                    let landed = rpc.bulk.as_ref().and_then(|b| b.got);
                    self.release(node, rpc);
                    return self.fail(format!("{op:?}: the server says {} bytes, {landed:?} arrived", body.status));
                };
                let len = self.chunk(chunk).2 as usize;
                if got.len() > len {
                    self.release(node, rpc);
                    return self.fail(format!("{op:?}: {} bytes for a {len}-byte read", got.len()));
                }
                let ck = server_cksum.map(|c| c == crc32c(0, &got));
                if self.job.checksum && ck == Some(false) {
                    // Damaged on the way: read it again (a new request).
                    return self.again(node, rpc, "read data failed its checksum", false);
                }
                got.resize(len, 0); // a short read: zeros past the end
                let want = if self.job.compare { self.data_of(op).unwrap_or_default() } else { Vec::new() };
                if self.job.compare && got != want {
                    // An acknowledged write (ours, or one the job whose files we read back was
                    // told of) that does not read back is a lost write. Of those, data that is
                    // neither what was written nor what was there before (zeros: a lost write
                    // leaves the old bytes) and that no checksum caught is a silent corruption.
                    if self.acked.contains(&(file, chunk)) {
                        self.report.lost_acked_writes += 1;
                        if got.iter().any(|&b| b != 0) {
                            self.report.silent_corruptions += 1;
                        }
                    }
                    let at = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
                    self.fail(format!("{op:?}: data differs at byte {at} of the chunk"));
                } else {
                    self.report.bytes_verified += len as u64;
                }
            }
            Op::Fallocate { len, .. } => match obdo {
                Ok(o) if o.size >= len => {}
                Ok(o) => self.fail(format!("{op:?}: size {} after preallocating {len} bytes", o.size)),
                Err(e) => self.fail(format!("{op:?}: {e}")),
            },
            Op::Getattr { want, .. } => match obdo {
                Ok(o) if o.size == want => {}
                Ok(o) => self.fail(format!("{op:?}: size {} (expected {want})", o.size)),
                Err(e) => self.fail(format!("{op:?}: {e}")),
            },
            Op::Connect { .. } | Op::Sync { .. } | Op::Punch { .. } | Op::Destroy { .. } | Op::Disconnect { .. } | Op::Ping { .. } | Op::ReplayDone { .. } => {}
        }
        self.release(node, rpc);
    }

    /// The bytes a WRITE of `op`'s chunk carries (what a READ of it must return).
    fn data_of(&self, op: Op) -> Option<Vec<u8>> {
        let (Op::Write { file, chunk } | Op::Read { file, chunk }) = op else { return None };
        let mut d = vec![0u8; self.chunk(chunk).2 as usize];
        pattern_fill(self.job.seed, file, chunk * self.job.stripe_size as u64, &mut d);
        Some(d)
    }
}
