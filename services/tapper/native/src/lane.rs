//! One export's event stream: seq allocation, the local write and the produce under one lock
//! (so the stream's order is the order writes reached the volume, whichever thread wrote), delivery
//! accounting (acked seq, backlog, the oldest unacked send), the checkpoint gate's held replies and
//! the publish-timeout watchdog. The Python side's own events (Zero, Flush, markers, syncs) take
//! their seq from the same lock, so they and the compiled path's Writes form one ordered stream.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::ffi::{c_void, CString};

use rdkafka::bindings as rdsys;
use rdkafka::bindings::rd_kafka_vtype_t::*;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{Producer, ThreadedProducer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::util::IntoOpaque;

use crate::bitmap::Bitmap;
use crate::conn::Conn;
use crate::core::{kafka_error, Core, Ctx, Ev};
use crate::encode::{now_us, DataEncoder, EventBuf};
use crate::frames::{CMD_WRITE, EIO};
use crate::io::pwrite_all;

/// Why the compiled path must leave a volume's writes to the Python path (bits of `flags`).
pub const UNHEALTHY: u32 = 1; // the stream is recovering from a Kafka failure
pub const FENCED: u32 = 2; // a move or failback stopped this side
pub const DISK_FAILED: u32 = 4; // a local write or fdatasync failed
pub const ZEROING: u32 = 8; // a large zero runs off the loop; writes may have to wait behind it
pub const AHEAD: u32 = 16; // async: Kafka is behind, writes only mark the bitmap (not a closing flag)
pub const QUEUED: u32 = 32; // async: requests wait for the bitmap's msync; later writes follow them

pub struct FastReq {
    pub conn: Arc<Conn>,
    pub handle: u64,
    pub offset: u64,
    pub length: u32,
    pub deadline: Instant,
    pub answered: AtomicBool,
}

pub enum What {
    Fast(Arc<FastReq>),
    /// an async write (already answered): its bitmap regions settle with the report
    Async(u64, u64),
    Py(u64),
}

/// A produced event, carried through librdkafka as its delivery opaque.
pub struct Sent {
    pub lane: Arc<Lane>,
    pub seq: i64,
    pub t0: Instant,
    pub what: What,
    /// the event's bytes (its size counts in the backlog), which librdkafka references until
    /// the report
    pub value: EventBuf,
}

pub enum BlockError {
    Io(std::io::Error),
    Kafka(String),
}

pub struct State {
    pub seq: i64,
    pub acked_seq: i64,
    pub outstanding: u64,
    pub outstanding_bytes: u64,
    pub oldest_sent: Instant,
    pub flags: u32,
    pub py_hold: u32,
    /// requests (not READs) handed to the Python path and not yet run there: later writes follow
    /// them, so requests on a volume still run in arrival order (a write pipelined behind a zero
    /// lands after it, as on the asyncio path)
    pub slow_pending: u32,
    pub held: bool,
    deferred: Vec<(Arc<Conn>, u64, u32)>,
    pending: VecDeque<Arc<FastReq>>,
    pub fast_inflight: u64,
    pub fast_writes: u64,
    written: Vec<u64>, // one bit per bitmap granule written since the Python side last took them
    latencies: Vec<f64>,
    watch_below: u64,
    /// the lowest seq Kafka refused since the Python side last took it (0: none): the recovery
    /// checks that no later event landed past a hole (export.py)
    pub first_failed: i64,
}

pub struct Lane {
    pub id: u32,
    pub core: Arc<Core>,
    topic_c: CString,
    pub key: Vec<u8>,
    pub enc: DataEncoder,
    pub fd: RawFd,
    pub size: u64,
    pub chunk: u32,
    pub granule: u64,
    pub timeout: Duration,
    /// async exports: the dirty bitmap shared with the Python path, and the backlog (bytes unacked)
    /// past which the volume goes ahead (modes.py's AsyncMode)
    pub bitmap: Option<Arc<Bitmap>>,
    pub backlog: u64,
    st: Mutex<State>,
}

const MAX_LATENCY_SAMPLES: usize = 100_000;

impl Lane {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u32,
        core: Arc<Core>,
        topic: String,
        key: Vec<u8>,
        enc: DataEncoder,
        fd: RawFd,
        size: u64,
        chunk: u32,
        granule: u64,
        timeout: Duration,
        seq: i64,
        bitmap: Option<Arc<Bitmap>>,
        backlog: u64,
    ) -> Lane {
        let bits = (size.div_ceil(granule.max(1)) as usize).div_ceil(64);
        Lane {
            id,
            core,
            topic_c: CString::new(topic).expect("a topic name has no NUL"),
            key,
            enc,
            fd,
            size,
            chunk,
            granule: granule.max(1),
            timeout,
            bitmap,
            backlog,
            st: Mutex::new(State {
                seq,
                acked_seq: seq,
                outstanding: 0,
                outstanding_bytes: 0,
                oldest_sent: Instant::now(),
                flags: 0,
                py_hold: 0,
                slow_pending: 0,
                held: false,
                deferred: Vec::new(),
                pending: VecDeque::new(),
                fast_inflight: 0,
                fast_writes: 0,
                written: vec![0; bits],
                latencies: Vec::new(),
                watch_below: 0,
                first_failed: 0,
            }),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap()
    }

    /// The compiled path's WRITE: pwrite, then its event, under the lane's lock. Gives the payload
    /// back (nothing done) when the Python path must run it instead.
    pub fn fast_write(
        self: &Arc<Self>,
        conn: &Arc<Conn>,
        handle: u64,
        offset: u64,
        ev: EventBuf,
    ) -> Result<(), EventBuf> {
        let mut st = self.lock();
        if let Some(bitmap) = &self.bitmap {
            return self.fast_async_write(&mut st, bitmap, conn, handle, offset, ev);
        }
        if st.flags != 0 || st.py_hold != 0 || st.slow_pending != 0 {
            return Err(ev);
        }
        if pwrite_all(self.fd, ev.payload(), offset).is_err() {
            return Err(ev); // the Python path writes again and handles the error (io_failed)
        }
        let length = ev.payload().len() as u64;
        self.wrote(&mut st, offset, length);
        let req = Arc::new(FastReq {
            conn: conn.clone(),
            handle,
            offset,
            length: length as u32,
            deadline: Instant::now() + self.timeout,
            answered: AtomicBool::new(false),
        });
        match self.send_event(&mut st, ev, offset, None, What::Fast(req.clone())) {
            Ok(_) => {
                st.pending.push_back(req);
                st.fast_inflight += 1;
                st.fast_writes += 1;
            }
            Err(error) => {
                // Written locally, never sent (librdkafka's queue is full or the producer failed):
                // as the Python path's refused publish, the range is resent once the stream heals.
                st.flags |= UNHEALTHY;
                req.answered.store(true, Ordering::SeqCst);
                self.core.push(Ev::Refused { lane: self.id, offset, length, error });
                conn.reply_simple(handle, CMD_WRITE, length as u32, EIO);
            }
        }
        Ok(())
    }

    fn producer(&self) -> &ThreadedProducer<Ctx> {
        match (&self.bitmap, &self.core.producer_async) {
            (Some(_), Some(p)) => p, // async exports' events: the longer linger (service.py)
            _ => &self.core.producer,
        }
    }

    /// The next seq's Write (a SyncBlock with `sync_id`) around `ev`'s payload, produced. Returns
    /// the seq; on a refusal nothing was sent and the seq is given back (the stream has no gap).
    fn send_event(
        self: &Arc<Self>,
        st: &mut State,
        mut ev: EventBuf,
        offset: u64,
        sync_id: Option<&[u8]>,
        what: What,
    ) -> Result<i64, String> {
        st.seq += 1;
        self.enc.finish(&mut ev, st.seq, now_us(), offset, sync_id);
        match self.send_value(st, ev, what) {
            Ok(()) => Ok(st.seq),
            Err(e) => {
                st.seq -= 1;
                Err(e)
            }
        }
    }

    /// Produce the encoded event `ev` (of seq `st.seq`) without copying it: librdkafka references
    /// its bytes (neither RD_KAFKA_MSG_F_COPY nor F_FREE), which stay alive in its delivery opaque
    /// until the report (after which librdkafka never reads a message's payload again).
    fn send_value(self: &Arc<Self>, st: &mut State, ev: EventBuf, what: What) -> Result<(), String> {
        let t0 = Instant::now();
        let (ptr, size) = (ev.value().as_ptr(), ev.value().len());
        let sent = Box::new(Sent { lane: self.clone(), seq: st.seq, t0, what, value: ev });
        let opaque = sent.into_ptr();
        let err = unsafe {
            rdsys::rd_kafka_producev(
                self.producer().client().native_ptr(),
                RD_KAFKA_VTYPE_TOPIC,
                self.topic_c.as_ptr(),
                RD_KAFKA_VTYPE_PARTITION,
                -1i32, // RD_KAFKA_PARTITION_UA: the partitioner picks by key
                RD_KAFKA_VTYPE_MSGFLAGS,
                0i32,
                RD_KAFKA_VTYPE_VALUE,
                ptr as *mut c_void,
                size,
                RD_KAFKA_VTYPE_KEY,
                self.key.as_ptr() as *mut c_void,
                self.key.len(),
                RD_KAFKA_VTYPE_OPAQUE,
                opaque,
                RD_KAFKA_VTYPE_END,
            )
        };
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            drop(unsafe { Box::<Sent>::from_ptr(opaque) }); // librdkafka did not take it
            return Err(kafka_error(&KafkaError::MessageProduction(RDKafkaErrorCode::from(err))));
        }
        sent_one(st, size as u64, t0);
        Ok(())
    }

    fn wrote(&self, st: &mut State, offset: u64, length: u64) {
        let (first, last) = (offset / self.granule, (offset + length - 1) / self.granule);
        for r in first..=last {
            st.written[(r / 64) as usize] |= 1 << (r % 64);
        }
    }

    /// The compiled path's async WRITE (modes.py's AsyncMode._write): only when its bitmap bits
    /// are set and durable already (no msync to wait for) and no request waits before it; pwrite,
    /// reply, and the event drains behind (or, while ahead, the bits stay set for the catch-up).
    fn fast_async_write(
        self: &Arc<Self>,
        st: &mut MutexGuard<'_, State>,
        bitmap: &Arc<Bitmap>,
        conn: &Arc<Conn>,
        handle: u64,
        offset: u64,
        ev: EventBuf,
    ) -> Result<(), EventBuf> {
        if st.flags & !AHEAD != 0 || st.py_hold != 0 || st.slow_pending != 0 {
            return Err(ev);
        }
        let length = ev.payload().len() as u64;
        let Some(regions) = bitmap.try_mark(offset, length) else {
            return Err(ev); // a new bit: the Python path marks it and waits for the msync
        };
        if pwrite_all(self.fd, ev.payload(), offset).is_err() {
            bitmap.fail(&mut bitmap.lock(), regions);
            return Err(ev); // the Python path writes again and handles the error (io_failed)
        }
        self.wrote(st, offset, length);
        st.fast_writes += 1;
        if st.flags & AHEAD == 0 {
            match self.send_event(st, ev, offset, None, What::Async(regions.0, regions.1)) {
                Ok(_) => {
                    if st.outstanding_bytes > self.backlog {
                        st.flags |= AHEAD; // Python starts the catch-up (AsyncMode.go_ahead)
                        self.core.push(Ev::Ahead { lane: self.id });
                    }
                }
                Err(error) => {
                    // Never sent: the bits stay set (durable already), so the write may still be
                    // acknowledged; the stream recovers and resends the range, as a refusal.
                    st.flags |= UNHEALTHY;
                    bitmap.fail(&mut bitmap.lock(), regions);
                    self.core.push(Ev::Refused { lane: self.id, offset, length, error });
                }
            }
        } else {
            bitmap.fail(&mut bitmap.lock(), regions); // stays dirty: the catch-up sends it
        }
        if st.held {
            st.deferred.push((conn.clone(), handle, length as u32));
        } else {
            conn.reply_simple(handle, CMD_WRITE, length as u32, 0);
        }
        Ok(())
    }

    /// An event of the Python side, already encoded for `st.seq` (it is called with the lock held).
    pub fn send_py(self: &Arc<Self>, st: &mut State, value: &[u8], token: u64) -> Result<(), String> {
        self.send_value(st, EventBuf::encoded(value.to_vec()), What::Py(token))
    }

    /// A Write (a SyncBlock with `sync_id`) of `data` for the Python side. Returns the seq.
    pub fn send_py_data(
        self: &Arc<Self>,
        st: &mut State,
        offset: u64,
        data: &[u8],
        sync_id: Option<&[u8]>,
        token: u64,
    ) -> Result<i64, String> {
        let mut ev = EventBuf::with_room(self.enc.room(sync_id.map_or(0, |s| s.len())), data.len());
        ev.extend(data);
        self.send_event(st, ev, offset, sync_id, What::Py(token))
    }

    /// A sync block: `length` bytes of the volume at `offset`, read straight into its event under
    /// the lock (no write lands between the read and the seq). `Ok(None)`: all zeroes and
    /// `skip_zero` (an INITIAL sync skips them), nothing sent.
    pub fn send_block(
        self: &Arc<Self>,
        offset: u64,
        length: usize,
        sync_id: &[u8],
        skip_zero: bool,
        token: u64,
    ) -> Result<Option<i64>, BlockError> {
        let mut st = self.lock();
        let mut ev = EventBuf::with_room(self.enc.room(sync_id.len()), length);
        ev.pread(self.fd, length, offset).map_err(BlockError::Io)?;
        if skip_zero && ev.payload().iter().all(|&b| b == 0) {
            return Ok(None);
        }
        self.send_event(&mut st, ev, offset, Some(sync_id), What::Py(token)).map(Some).map_err(BlockError::Kafka)
    }

    /// A delivery report (librdkafka's thread).
    fn settled(self: &Arc<Self>, seq: i64, size: u64, t0: Instant, what: What, error: Option<String>) {
        let mut st = self.lock();
        st.outstanding -= 1;
        st.outstanding_bytes -= size;
        st.oldest_sent = t0; // reports come in send order: no later send is older than this one
        let ok = error.is_none();
        if ok {
            if seq > st.acked_seq {
                st.acked_seq = seq;
            }
            if st.latencies.len() < MAX_LATENCY_SAMPLES {
                st.latencies.push(t0.elapsed().as_secs_f64());
            }
        } else {
            st.flags |= UNHEALTHY; // as the Python path: no write is taken until the stream recovered
            if st.first_failed == 0 || seq < st.first_failed {
                st.first_failed = seq;
            }
        }
        if st.watch_below != 0 && st.outstanding_bytes < st.watch_below {
            st.watch_below = 0;
            self.core.push(Ev::Wake { lane: self.id });
        }
        match what {
            What::Py(token) => self.core.push(Ev::Py { lane: self.id, token, error }),
            What::Async(a, b) => {
                let bitmap = self.bitmap.as_ref().expect("an async write has its lane's bitmap");
                let mut bst = bitmap.lock();
                match error {
                    None => bitmap.release(&mut bst, (a, b)),
                    Some(error) => {
                        bitmap.fail(&mut bst, (a, b)); // stays dirty: the recovery resends it
                        let g = self.granule;
                        let (offset, end) = (a * g, (b * g).min(self.size));
                        self.core.push(Ev::Refused { lane: self.id, offset, length: end - offset, error });
                    }
                }
            }
            What::Fast(req) => {
                st.fast_inflight -= 1;
                let answered = req.answered.swap(true, Ordering::SeqCst);
                match error {
                    None => {
                        if !answered {
                            if st.held {
                                st.deferred.push((req.conn.clone(), req.handle, req.length));
                            } else {
                                req.conn.reply_simple(req.handle, CMD_WRITE, req.length, 0);
                            }
                        }
                    }
                    Some(error) => {
                        self.core.push(Ev::Refused {
                            lane: self.id,
                            offset: req.offset,
                            length: req.length as u64,
                            error,
                        });
                        if !answered {
                            req.conn.reply_simple(req.handle, CMD_WRITE, req.length, EIO);
                        }
                    }
                }
            }
        }
    }

    /// The checkpoint gate: while held, the compiled path's replies wait; on release they go out.
    pub fn set_held(&self, held: bool) {
        let deferred = {
            let mut st = self.lock();
            st.held = held;
            if held {
                return;
            }
            std::mem::take(&mut st.deferred)
        };
        for (conn, handle, length) in deferred {
            conn.reply_simple(handle, CMD_WRITE, length, 0);
        }
    }

    /// Fail the compiled path's requests whose events Kafka has not acked in time (EIO); returns
    /// their ranges, which the Python side marks dirty.
    pub fn expire(&self) -> Vec<(u64, u64)> {
        let now = Instant::now();
        let mut failed = Vec::new();
        let mut st = self.lock();
        while let Some(front) = st.pending.front() {
            if !front.answered.load(Ordering::SeqCst) && front.deadline > now {
                break;
            }
            let req = st.pending.pop_front().unwrap();
            if !req.answered.swap(true, Ordering::SeqCst) {
                // Closed before the EIO goes out: the client's next write must not take a seq
                // after this one's while its event may never land (a hole in the stream).
                st.flags |= UNHEALTHY;
                failed.push((req.offset, req.length as u64));
                req.conn.reply_simple(req.handle, CMD_WRITE, req.length, EIO);
            }
        }
        failed
    }

    pub fn take_written(&self) -> Vec<u64> {
        let mut st = self.lock();
        let mut regions = Vec::new();
        for (i, word) in st.written.iter_mut().enumerate() {
            let mut w = std::mem::take(word);
            while w != 0 {
                let b = w.trailing_zeros() as u64;
                regions.push(i as u64 * 64 + b);
                w &= w - 1;
            }
        }
        regions
    }

    pub fn take_first_failed(&self) -> i64 {
        std::mem::take(&mut self.lock().first_failed)
    }

    pub fn take_latencies(&self) -> Vec<f64> {
        std::mem::take(&mut self.lock().latencies)
    }

    /// Push a Wake once the backlog is below `limit` bytes (at once if it already is).
    pub fn watch_below(&self, limit: u64) {
        let mut st = self.lock();
        if st.outstanding_bytes < limit {
            st.watch_below = 0;
            self.core.push(Ev::Wake { lane: self.id });
        } else {
            st.watch_below = if st.watch_below == 0 { limit } else { st.watch_below.max(limit) };
        }
    }

    pub fn lag_s(&self) -> f64 {
        let st = self.lock();
        if st.outstanding == 0 {
            0.0
        } else {
            st.oldest_sent.elapsed().as_secs_f64()
        }
    }
}

fn sent_one(st: &mut State, size: u64, t0: Instant) {
    if st.outstanding == 0 {
        st.oldest_sent = t0;
    }
    st.outstanding += 1;
    st.outstanding_bytes += size;
}

impl Sent {
    pub fn settle(self, error: Option<String>) {
        let Sent { lane, seq, t0, what, value } = self;
        lane.settled(seq, value.value().len() as u64, t0, what, error);
        drop(value); // only now: librdkafka read it until the report
    }
}
