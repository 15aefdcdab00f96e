//! The core: the Kafka producer(s) of the exports' event streams (sync, and async if any), and the queue of what the
//! Python side must handle (forwarded requests, refusals, its own events' acks, closed
//! connections), signalled through an eventfd the event loop watches (one wake-up per batch).

use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};

use crate::encode::EventBuf;
use crate::lane::Sent;

pub enum Ev {
    /// A request the compiled path does not serve: the Python path runs it and replies.
    Req { conn: u64, flags: u16, typ: u16, handle: u64, offset: u64, length: u32, payload: EventBuf },
    /// A connection ended (after its last reply): `reason` is empty for a clean end.
    Closed { conn: u64, reason: String },
    /// Kafka refused (or never took) a compiled-path Write: its range must be resent.
    Refused { lane: u32, offset: u64, length: u64, error: String },
    /// One of the Python side's own events was acked (`error` None) or refused.
    Py { lane: u32, token: u64, error: Option<String> },
    /// The lane's backlog fell below the watched mark.
    Wake { lane: u32 },
    /// An async lane's backlog passed its limit: it went ahead, the Python side starts the catch-up.
    Ahead { lane: u32 },
}

pub struct Ctx;

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = Box<Sent>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Sent>) {
        let error = match result {
            Ok(_) => None,
            Err((e, _)) => Some(kafka_error(e)),
        };
        sent.settle(error);
    }
}

pub fn kafka_error(e: &KafkaError) -> String {
    match e.rdkafka_error_code() {
        Some(code) => format!("{:?}: {}", code, e),
        None => e.to_string(),
    }
}

fn make_producer(conf: &[(String, String)]) -> Result<ThreadedProducer<Ctx>, String> {
    let mut cc = ClientConfig::new();
    for (k, v) in conf {
        cc.set(k, v);
    }
    cc.create_with_context(Ctx).map_err(|e| format!("librdkafka refused the producer: {e}"))
}

pub struct Core {
    queue: Mutex<Vec<Ev>>,
    pub efd: RawFd,
    pub producer: ThreadedProducer<Ctx>,
    /// the async exports' producer (a longer linger), if any
    pub producer_async: Option<ThreadedProducer<Ctx>>,
}

impl Core {
    pub fn new(conf: &[(String, String)], conf_async: Option<&[(String, String)]>) -> Result<Arc<Core>, String> {
        let producer = make_producer(conf)?;
        let producer_async = conf_async.map(make_producer).transpose()?;
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
        }
        Ok(Arc::new(Core { queue: Mutex::new(Vec::new()), efd, producer, producer_async }))
    }

    pub fn push(&self, ev: Ev) {
        let was_empty = {
            let mut q = self.queue.lock().unwrap();
            let empty = q.is_empty();
            q.push(ev);
            empty
        };
        if was_empty {
            let one: u64 = 1;
            unsafe { libc::write(self.efd, &one as *const u64 as *const libc::c_void, 8) };
        }
    }

    /// Everything queued so far (the caller read the eventfd first, so nothing is missed).
    pub fn take(&self) -> Vec<Ev> {
        std::mem::take(&mut *self.queue.lock().unwrap())
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        unsafe { libc::close(self.efd) };
    }
}
