//! Runs in-process nodes on threads for benchmarks: a wake-up notifier the I/O threads poke, and
//! a serve loop that steps a node until told to stop.

use lnd::dev::client::ShmWaker;
use lnd::node::Node;
use lnd::sock::io::{ThreadIo, Wake};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A level-triggered wake-up: `notify` from any thread, `wait` in the node's thread.
#[derive(Default)]
pub struct Notify {
    flag: Mutex<bool>,
    cv: Condvar,
}

impl Notify {
    pub fn notify(&self) {
        *self.flag.lock().unwrap() = true;
        self.cv.notify_one();
    }

    pub fn wait(&self, timeout: Duration) {
        let mut f = self.flag.lock().unwrap();
        if !*f {
            f = self.cv.wait_timeout(f, timeout).unwrap().0;
        }
        *f = false;
    }

    /// A socklnd I/O whose input wakes this notifier.
    pub fn tcp_io(self: &Arc<Self>) -> ThreadIo {
        let n = self.clone();
        let wake: Wake = Arc::new(move || n.notify());
        ThreadIo::new(wake)
    }

    /// Forwards DMA completion doorbells to this notifier (thread ends when the device goes).
    pub fn watch_dma(self: &Arc<Self>, w: &ShmWaker) -> std::io::Result<()> {
        let bell = w.clone_for_thread()?;
        let n = self.clone();
        std::thread::spawn(move || {
            while bell.read_doorbell(None).is_ok() {
                n.notify();
            }
            n.notify();
        });
        Ok(())
    }
}

/// Steps `node` until `stop`; failed events are counted in the result, and the first is told.
pub fn serve(mut node: Node, notify: Arc<Notify>, dma: Option<ShmWaker>, stop: Arc<AtomicBool>) -> (u64, Option<String>) {
    let (mut errors, mut first) = (0, None);
    while !stop.load(Ordering::Relaxed) {
        let busy = node.step();
        while let Some(e) = node.poll_event() {
            if e.status != 0 {
                errors += 1;
                first.get_or_insert_with(|| format!("{:?} status {} peer {} portal {} mlength {}", e.kind, e.status, e.peer, e.portal, e.mlength));
            }
        }
        if !busy {
            let armed = dma.as_ref().map(|w| w.arm()).unwrap_or(true);
            if armed {
                notify.wait(Duration::from_millis(5));
            }
        }
    }
    (errors, first)
}
