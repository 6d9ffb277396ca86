//! In-process provider of the DMA device: the same engine, heap memory and plain queues.
//! Submissions execute synchronously; used by unit tests and the simulation backend.

use super::engine::{AttachError, Engine, Port};
use super::device::{CompKind, Completion, DevError, DevStatus, Desc, DmaDevice};
use crate::mem::Mem;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

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

/// A fabric living in this process.
#[derive(Clone)]
pub struct InProcFabric {
    engine: Arc<Mutex<Engine>>,
    mailbox: usize,
}

impl InProcFabric {
    pub fn new(seed: u64) -> InProcFabric {
        Self::with_mailbox(seed, super::ring::MB_N as usize)
    }

    /// A fabric whose mailboxes hold `mailbox` short messages each.
    pub fn with_mailbox(seed: u64, mailbox: usize) -> InProcFabric {
        InProcFabric { engine: Arc::new(Mutex::new(Engine::new(seed))), mailbox }
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
        let q = Arc::new(Mutex::new(Queue::default()));
        let mut e = self.engine.lock().unwrap();
        e.attach(addr, Box::new(InProcPort { q: q.clone(), mailbox: self.mailbox }))?;
        let key = e.register(addr, mem.clone());
        Ok(InProcDevice { fabric: self.clone(), addr, mem, key, q })
    }
}

/// A node's handle on an in-process fabric.
pub struct InProcDevice {
    fabric: InProcFabric,
    addr: u32,
    mem: Arc<Mem>,
    key: u32,
    q: Arc<Mutex<Queue>>,
}

impl Drop for InProcDevice {
    fn drop(&mut self) {
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
        self.fabric.engine.lock().unwrap().submit_now(self.addr, d.clone());
        Ok(())
    }
    fn doorbell(&mut self) {}
    fn poll(&mut self, f: &mut dyn FnMut(&Completion, &[u8])) -> usize {
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
