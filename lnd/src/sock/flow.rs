//! socklnd receive back-pressure: a connection whose message LNet parks (lazy portal, router
//! short of buffers or credits, delay rule) is read no further until LNet lets go of it, as
//! ksocklnd leaves a connection's next message unread until the current rx is consumed.

use super::io::{ConnId, SockIo};
use super::SockLnd;
use crate::lnet::Lnet;
use tracing::{debug, warn};

impl<I: SockIo> SockLnd<I> {
    /// Bytes read on `conn`: handled in order behind what it already has waiting.
    pub(super) fn take_data(&mut self, lnet: &mut Lnet, conn: ConnId, data: Vec<u8>) {
        let now = self.io.now();
        match self.conns.get_mut(&conn) {
            Some(c) => {
                c.last_rx = now;
                c.backlog.push_back(data);
            }
            None => {
                debug!(conn, bytes = data.len(), "data for an unknown connection dropped");
                self.io.recycle(conn, data);
                return;
            }
        }
        self.pump(lnet, conn);
    }

    /// Handles what `conn` has read, in order, until all of it is done or LNet parks a message.
    fn pump(&mut self, lnet: &mut Lnet, conn: ConnId) {
        loop {
            let Some(c) = self.conns.get_mut(&conn) else { return };
            if c.parked.is_some() {
                return;
            }
            if let Some(e) = c.pending.pop_front() {
                self.on_event(lnet, conn, e);
                continue;
            }
            if let Some(e) = c.broken.take() {
                self.stats.bad_peers += 1;
                warn!(conn, peer = %c.remote, "dropping connection: {e}");
                self.close_conn(lnet, conn, "protocol error");
                return;
            }
            let Some(data) = c.backlog.pop_front() else { return };
            let mut events = std::mem::take(&mut self.events);
            events.clear();
            let n = data.len();
            let spent = c.parser.input_owned(data, &mut events).unwrap_or_else(|e| {
                c.broken = Some(e);
                Vec::new()
            });
            c.pending.extend(events.drain(..));
            self.events = events;
            self.io.release(conn, n, spent);
        }
    }

    /// LNet holds the message of rx `rx`, read on `conn`: read nothing more from `conn`, and
    /// have the I/O stop reading its socket at once (TCP then holds the sender back).
    pub(super) fn park(&mut self, conn: ConnId, rx: u64) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.parked = Some(rx);
            if !c.read_paused {
                debug!(conn, "message parked by LNet: connection not read until it is released");
                c.read_paused = true;
                self.io.pause_read(conn, true);
            }
        }
    }

    /// LNet is done with rx `rx` of `conn`: if that is what stopped the connection, go on.
    pub(super) fn released(&mut self, conn: ConnId, rx: u64) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.parked == Some(rx) {
                c.parked = None;
                self.unparked.push(conn);
            }
        }
    }

    /// Carries on with connections LNet let go of; returns whether there were any.
    pub(super) fn flow(&mut self, lnet: &mut Lnet) -> bool {
        let mut any = false;
        while let Some(conn) = self.unparked.pop() {
            let now = self.io.now();
            let Some(c) = self.conns.get_mut(&conn) else { continue };
            // Our own wait is no silence of the peer's.
            c.last_rx = now;
            if c.read_paused {
                c.read_paused = false;
                self.io.pause_read(conn, false);
            }
            self.pump(lnet, conn);
            any = true;
        }
        any
    }

    /// Bytes received and not yet given to LNet's buffers: frames LNet holds, and what parked
    /// connections have read behind them.
    pub fn rx_held_bytes(&self) -> usize {
        let waiting: usize = self
            .conns
            .values()
            .map(|c| {
                let frames: usize = c.pending.iter().map(|e| if let super::conn::ConnEvent::Lnet { frame, .. } = e { frame.len() } else { 0 }).sum();
                frames + c.backlog.iter().map(Vec::len).sum::<usize>()
            })
            .sum();
        waiting + self.rxs.values().map(|(_, f)| f.len()).sum::<usize>()
    }
}
