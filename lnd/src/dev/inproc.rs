//! In-process provider of the DMA device: the same engine, heap memory and plain queues.
//! Submissions execute synchronously; used by unit tests and the simulation backend, which
//! also kills and restarts it and holds late completions back on its virtual clock.

use super::engine::{AttachError, Engine, Port, PullJob};
use super::device::{CompKind, Completion, DevError, DevStatus, Desc, DmaDevice};
use crate::mem::Mem;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Default)]
struct Queue {
    items: VecDeque<(Completion, Vec<u8>)>,
    mailbox_used: usize,
}

struct InProcPort {
    q: Arc<Mutex<Queue>>,
    mailbox: usize,
}

impl Port for InProcPort {
    fn complete(&mut self, c: Completion) {
        self.q.lock().unwrap().items.push_back((c, Vec::new()));
    }
    fn deliver(&mut self, from: u32, data: &[u8]) -> Result<(), DevStatus> {
        let mut q = self.q.lock().unwrap();
        if q.mailbox_used >= self.mailbox {
            return Err(DevStatus::MailboxFull);
        }
        q.mailbox_used += 1;
        let c = Completion {
            kind: CompKind::SmsgRecv,
            status: DevStatus::Ok,
            tag: 0,
            cookie: 0,
            len: data.len() as u32,
            peer: from,
        };
        q.items.push_back((c, data.to_vec()));
        Ok(())
    }
}

/// Which life of the device this is, and whether it is running.
#[derive(Default)]
struct Life {
    epoch: u64,
    down: bool,
}

/// A fabric living in this process.
#[derive(Clone)]
pub struct InProcFabric {
    engine: Arc<Mutex<Engine>>,
    mailbox: usize,
    life: Arc<Mutex<Life>>,
    /// The clock late completions are held back on (`None`: none are held back).
    clock: Option<crate::Clock>,
}

impl InProcFabric {
    pub fn new(seed: u64) -> InProcFabric {
        Self::with_mailbox(seed, super::ring::MB_MIN as usize)
    }

    /// A fabric whose mailboxes hold `mailbox` short messages each.
    pub fn with_mailbox(seed: u64, mailbox: usize) -> InProcFabric {
        InProcFabric { engine: Arc::new(Mutex::new(Engine::new(seed))), mailbox, life: Default::default(), clock: None }
    }

    /// Nodes attached from now on get mailboxes of `mailbox` slots (a clone made for the
    /// purpose sizes only what attaches through it).
    pub fn set_mailbox(&mut self, mailbox: usize) {
        self.mailbox = mailbox;
    }

    /// Holds the completions of late pulls (the `late` device fault) back on `clock`, as the
    /// `dmadev` copier does by sleeping: a node's later descriptors wait behind a late pull.
    /// Set before nodes attach.
    pub fn with_clock(mut self, clock: crate::Clock) -> InProcFabric {
        self.clock = Some(clock);
        self
    }

    pub fn engine(&self) -> &Arc<Mutex<Engine>> {
        &self.engine
    }

    /// Attaches node `addr` with a registered region of `mem_size` bytes.
    pub fn attach(&self, addr: u32, mem_size: usize) -> Result<InProcDevice, AttachError> {
        self.attach_mem(addr, Mem::heap(mem_size))
    }

    /// Attaches node `addr` registering `mem`, the node's memory (a node on several fabrics
    /// registers the same memory with each of their devices).
    pub fn attach_mem(&self, addr: u32, mem: Arc<Mem>) -> Result<InProcDevice, AttachError> {
        let life = self.life.lock().unwrap();
        if life.down {
            return Err(AttachError::DeviceDown);
        }
        let q = Arc::new(Mutex::new(Queue::default()));
        let mut e = self.engine.lock().unwrap();
        e.attach(addr, Box::new(InProcPort { q: q.clone(), mailbox: self.mailbox }))?;
        let key = e.register(addr, mem.clone());
        Ok(InProcDevice { fabric: self.clone(), addr, mem, key, q, epoch: life.epoch, late: None, held: VecDeque::new() })
    }

    /// Like [`InProcFabric::attach_mem`], but while the device is down the handle comes back
    /// dead (as if the device died just after the attach): a node starting then comes up and
    /// finds its device gone, instead of waiting for it.
    pub fn attach_or_dead(&self, addr: u32, mem: Arc<Mem>) -> Result<InProcDevice, AttachError> {
        match self.attach_mem(addr, mem.clone()) {
            Err(AttachError::DeviceDown) => {
                let epoch = self.epoch().wrapping_sub(1);
                Ok(InProcDevice { fabric: self.clone(), addr, mem, key: 0, q: Default::default(), epoch, late: None, held: VecDeque::new() })
            }
            r => r,
        }
    }

    /// Kills the device: every attachment, transmit and mailbox is lost; each node's handle
    /// goes dead (takes nothing, completes nothing) — the node finds out by [`InProcFabric::epoch`].
    pub fn kill(&self) {
        let mut life = self.life.lock().unwrap();
        life.epoch += 1;
        life.down = true;
        self.engine.lock().unwrap().reset();
    }

    /// Starts a killed device again (empty); nodes attach to it afresh.
    pub fn start(&self) {
        self.life.lock().unwrap().down = false;
    }

    pub fn is_down(&self) -> bool {
        self.life.lock().unwrap().down
    }

    /// Which life of the device this is: a handle attached in another one is dead.
    pub fn epoch(&self) -> u64 {
        self.life.lock().unwrap().epoch
    }
}

/// A node's handle on an in-process fabric.
pub struct InProcDevice {
    fabric: InProcFabric,
    addr: u32,
    mem: Arc<Mem>,
    key: u32,
    q: Arc<Mutex<Queue>>,
    /// The device life this handle attached in.
    epoch: u64,
    /// A pull whose completion is held back until then, and the descriptors that wait behind it.
    late: Option<(Instant, PullJob)>,
    held: VecDeque<Desc>,
}

impl InProcDevice {
    /// The device life this handle belongs to (see [`InProcFabric::epoch`]).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Did the device die since this handle attached?
    fn dead(&self) -> bool {
        self.fabric.epoch() != self.epoch
    }

    /// Executes one descriptor; a pull the fault injector makes late is held.
    fn execute(&mut self, d: Desc) {
        let mut e = self.fabric.engine.lock().unwrap();
        if let Some(job) = e.submit(self.addr, d) {
            match self.fabric.clock.as_ref().and_then(|c| Some(c() + e.pull_delay(&job)?)) {
                Some(due) => self.late = Some((due, job)),
                None => {
                    let ok = job.copy();
                    e.finish_pull(job, ok);
                }
            }
        }
    }

    /// Completes a late pull that is due, then runs what waited behind it.
    fn release_due(&mut self) {
        while let Some((due, _)) = &self.late {
            if self.fabric.clock.as_ref().is_none_or(|c| c() < *due) {
                return;
            }
            let (_, job) = self.late.take().expect("checked");
            let ok = job.copy();
            self.fabric.engine.lock().unwrap().finish_pull(job, ok);
            while self.late.is_none() {
                let Some(d) = self.held.pop_front() else { break };
                self.execute(d);
            }
        }
    }
}

impl Drop for InProcDevice {
    fn drop(&mut self) {
        if self.dead() {
            return;
        }
        if let Ok(mut e) = self.fabric.engine.lock() {
            e.detach(self.addr);
        }
    }
}

impl DmaDevice for InProcDevice {
    fn addr(&self) -> u32 {
        self.addr
    }
    fn mem(&self) -> &Arc<Mem> {
        &self.mem
    }
    fn key(&self) -> u32 {
        self.key
    }
    fn sq_space(&self) -> usize {
        usize::MAX
    }
    fn submit(&mut self, d: &Desc) -> Result<(), DevError> {
        if self.dead() {
            // A dead device takes descriptors and never answers them.
            return Ok(());
        }
        if self.late.is_some() {
            self.held.push_back(d.clone());
        } else {
            self.execute(d.clone());
        }
        Ok(())
    }
    fn doorbell(&mut self) {}
    fn poll(&mut self, f: &mut dyn FnMut(&Completion, &[u8])) -> usize {
        if self.dead() {
            self.late = None;
            self.held.clear();
            self.q.lock().unwrap().items.clear();
            return 0;
        }
        self.release_due();
        let items: Vec<_> = {
            let mut q = self.q.lock().unwrap();
            let items: Vec<_> = q.items.drain(..).collect();
            q.mailbox_used -= items.iter().filter(|i| i.0.kind == CompKind::SmsgRecv).count();
            items
        };
        for (c, d) in &items {
            f(c, d);
        }
        items.len()
    }
}
