//! The bounded request queue of the native adapters (the `embedfn` server, embedfn-host):
//! at most `MAX_CONCURRENT_REQUESTS` requests run, at most `MAX_QUEUE` wait for a slot, none
//! longer than `MAX_QUEUE_WAIT_MS`; the rest are refused at once with a 503 and `Retry-After`.
//! A request takes its slot only once its body has arrived, so a slot always means work.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Error;
use crate::memory::overloaded;
use crate::metrics::QueueState;
use crate::settings::Admission;

/// The bounded queue in front of the worker threads.
#[derive(Debug)]
pub struct Queue {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    rejected: AtomicU64,
    admission: Admission,
}

impl Queue {
    /// A queue with `admission`'s limits.
    pub fn new(admission: Admission) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(admission.max_running)),
            waiting: AtomicUsize::new(0),
            rejected: AtomicU64::new(0),
            admission,
        }
    }

    /// What `/metrics` shows of the queue now.
    pub fn state(&self) -> QueueState {
        QueueState {
            running: self.admission.max_running - self.slots.available_permits(),
            waiting: self.waiting.load(Ordering::SeqCst),
            capacity: self.admission.max_queue,
            rejected: self.rejected.load(Ordering::SeqCst),
        }
    }

    fn reject(&self, why: &str) -> Error {
        self.rejected.fetch_add(1, Ordering::SeqCst);
        overloaded(why, self.admission.max_wait)
    }

    /// A slot to run in: at once when one is free, else after waiting in the queue.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, Error> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.admission.max_queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(self.reject("the request queue is full"));
        }
        let permit =
            tokio::time::timeout(self.admission.max_wait, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        match permit {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(Error::Backend("the server is shutting down".into())),
            Err(_) => Err(self.reject("the request waited too long in the queue")),
        }
    }
}
