//! User calls on match entries and memory descriptors (`LNetMEAttach`, `LNetMDAttach`,
//! `LNetMDBind`, `LNetMDUnlink`, `LNetMEUnlink`), and the pins in-flight messages hold on MDs.

use super::md::{Md, Me};
use super::*;

impl Lnet {
    /// Creates a match entry on `portal`.
    pub fn me_attach(&mut self, portal: u32, match_id: ProcessId, match_bits: u64, ignore_bits: u64, unlink: bool, pos: Insert) -> Result<MeHandle, LnetError> {
        let h = MeHandle(self.mes.insert(Me { portal, match_id, match_bits, ignore_bits, unlink, md: None }));
        let list = self.portals.entry(portal).or_default();
        let at = match pos {
            Insert::Head => 0,
            Insert::Tail => list.len(),
            Insert::Before(r) | Insert::After(r) => {
                let Some(i) = list.iter().position(|&m| m == r) else {
                    self.mes.remove(h.0);
                    return Err(LnetError::NoSuchMe);
                };
                if matches!(pos, Insert::After(_)) { i + 1 } else { i }
            }
        };
        list.insert(at, h);
        Ok(h)
    }

    /// Attaches an MD to a match entry; it unlinks with the ME if the ME was made `unlink`.
    pub fn md_attach(&mut self, me: MeHandle, spec: MdSpec) -> Result<MdHandle, LnetError> {
        let m = self.mes.get(me.0).ok_or(LnetError::NoSuchMe)?;
        if m.md.is_some() {
            return Err(LnetError::MeBusy);
        }
        let auto = m.unlink;
        let portal = m.portal;
        let h = MdHandle(self.mds.insert(Md::new(spec, auto, Some(me))));
        self.mes.get_mut(me.0).unwrap().md = Some(h);
        if self.lazy.contains(&portal) && self.delayed.contains_key(&portal) {
            self.retry_delayed(portal);
        }
        Ok(h)
    }

    /// Makes `portal` lazy (Lustre's request portals): PUTs that match nothing wait for a
    /// buffer instead of being dropped.
    pub fn set_lazy(&mut self, portal: u32) {
        self.lazy.insert(portal);
    }

    /// The PUTs waiting on `portal` try again, oldest first, until one finds nothing to match
    /// (the new buffers are used up): it and those behind it wait on, in order
    /// (`lnet_ptl_attach_md` → `lnet_ptl_match_delay`). Trying them all on every new buffer
    /// cost a server with thousands waiting quadratic time.
    fn retry_delayed(&mut self, portal: u32) {
        let Some(mut waiting) = self.delayed.remove(&portal) else { return };
        while let Some((ni, hdr, from, private)) = waiting.pop_front() {
            // It matches now, is dropped, or goes back in the (now fresh) queue.
            self.deliver_held(ni, hdr, from, private, false);
            if let Some(again) = self.delayed.get_mut(&portal).and_then(|q| q.pop_back()) {
                waiting.push_front(again);
                break;
            }
        }
        if !waiting.is_empty() {
            let newer = self.delayed.remove(&portal).unwrap_or_default();
            waiting.extend(newer);
            self.delayed.insert(portal, waiting);
        } else if self.delayed.get(&portal).is_some_and(|q| q.is_empty()) {
            self.delayed.remove(&portal);
        }
    }

    /// Binds a free-floating MD (a source for PUT, a sink for GET).
    pub fn md_bind(&mut self, spec: MdSpec, unlink: bool) -> MdHandle {
        MdHandle(self.mds.insert(Md::new(spec, unlink, None)))
    }

    /// Unlinks an MD: at once if idle (an UNLINK event follows), else when its last message
    /// completes (that event says `unlinked`).
    pub fn md_unlink(&mut self, h: MdHandle) -> Result<(), LnetError> {
        self.unlink_with(h, 0)
    }

    /// [`Lnet::md_unlink`] whose UNLINK event carries `status` (-ETIMEDOUT when LNet gave up
    /// waiting for an ACK or REPLY).
    pub(super) fn unlink_with(&mut self, h: MdHandle, status: i32) -> Result<(), LnetError> {
        let md = self.mds.get_mut(h.0).ok_or(LnetError::NoSuchMd)?;
        md.zombie = true;
        md.threshold = Some(0);
        let me = md.me.take();
        if let Some(me) = me {
            self.detach_me(me);
        }
        let md = self.mds.get(h.0).expect("just seen");
        if md.refs == 0 {
            let user_ptr = md.spec.user_ptr;
            self.remove_md(h);
            self.events.push_back(Event {
                kind: EventKind::Unlink,
                md: h,
                user_ptr,
                peer: ProcessId::ANY,
                portal: 0,
                match_bits: 0,
                rlength: 0,
                mlength: 0,
                offset: 0,
                hdr_data: 0,
                status,
                unlinked: true,
            });
        }
        Ok(())
    }

    /// Unlinks an ME and the MD on it.
    pub fn me_unlink(&mut self, h: MeHandle) -> Result<(), LnetError> {
        let md = self.mes.get(h.0).ok_or(LnetError::NoSuchMe)?.md;
        self.remove_me(h);
        match md {
            Some(md) => {
                if let Some(m) = self.mds.get_mut(md.0) {
                    m.me = None;
                }
                self.md_unlink(md)
            }
            None => Ok(()),
        }
    }

    /// An MD leaves ME `h` (`lnet_md_unlink`): the ME goes too if it was made to unlink with
    /// its MD; one made to stay (RETAIN) is left without an MD, ready for another.
    fn detach_me(&mut self, h: MeHandle) {
        match self.mes.get_mut(h.0) {
            Some(m) if m.unlink => self.remove_me(h),
            Some(m) => m.md = None,
            None => {}
        }
    }

    fn remove_me(&mut self, h: MeHandle) {
        if let Some(me) = self.mes.remove(h.0) {
            if let Some(list) = self.portals.get_mut(&me.portal) {
                list.retain(|&m| m != h);
            }
        }
    }

    fn remove_md(&mut self, h: MdHandle) {
        if let Some(Md { me: Some(me), .. }) = self.mds.remove(h.0) {
            self.detach_me(me);
        }
    }

    /// Live MDs, for leak checks.
    pub fn md_count(&self) -> usize {
        self.mds.len()
    }

    /// Messages not yet finalized.
    pub fn msgs_in_flight(&self) -> usize {
        self.msgs.len()
    }

    /// Takes one operation off an MD and pins it for a message.
    pub(super) fn attach_md(&mut self, h: MdHandle) {
        let md = self.mds.get_mut(h.0).expect("attach to live md");
        md.consume();
        md.refs += 1;
    }

    /// Drops a message's pin; returns whether the MD is now gone.
    pub(super) fn release_md(&mut self, h: MdHandle) -> bool {
        let Some(md) = self.mds.get_mut(h.0) else { return true };
        md.refs -= 1;
        if md.refs == 0 && (md.zombie || (md.auto_unlink && md.exhausted())) {
            self.remove_md(h);
            return true;
        }
        false
    }
}
