//! `tapstream_native`: the tapper's compiled data path (see native.py).

mod bitmap;
mod conn;
mod core;
mod encode;
mod frames;
mod io;
mod lane;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::bitmap::Bitmap;
use crate::conn::{Conn, OPS};
use crate::core::{Core, Ev};
use crate::encode::{now_us, DataEncoder};
use crate::lane::{BlockError, Lane};

#[pyclass(frozen, module = "tapstream_native")]
struct NativeCore {
    core: Arc<Core>,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_conn: AtomicU64,
    next_lane: AtomicU32,
}

#[pymethods]
impl NativeCore {
    /// `conf`: librdkafka settings of the sync volumes' producer, as strings; `conf_async`: the
    /// async volumes' producer, if any.
    #[new]
    #[pyo3(signature = (conf, conf_async=None))]
    fn new(conf: Vec<(String, String)>, conf_async: Option<Vec<(String, String)>>) -> PyResult<Self> {
        let core = Core::new(&conf, conf_async.as_deref()).map_err(PyValueError::new_err)?;
        Ok(NativeCore {
            core,
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            next_lane: AtomicU32::new(1),
        })
    }

    fn eventfd(&self) -> i32 {
        self.core.efd
    }

    /// What the Python side must handle, as tuples: ("req", conn, flags, type, handle, offset,
    /// length, payload), ("closed", conn, reason), ("refused", lane, offset, length, error),
    /// ("py", lane, token, error | None), ("wake", lane).
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut counter = 0u64;
        unsafe { libc::read(self.core.efd, &mut counter as *mut u64 as *mut libc::c_void, 8) };
        let list = PyList::empty_bound(py);
        for ev in self.core.take() {
            let item: PyObject = match ev {
                Ev::Req { conn, flags, typ, handle, offset, length, payload } => (
                    "req",
                    conn,
                    flags,
                    typ,
                    handle,
                    offset,
                    length,
                    PyBytes::new_bound(py, payload.payload()),
                )
                    .into_py(py),
                Ev::Closed { conn, reason } => {
                    self.conns.lock().unwrap().remove(&conn);
                    ("closed", conn, reason).into_py(py)
                }
                Ev::Refused { lane, offset, length, error } => ("refused", lane, offset, length, error).into_py(py),
                Ev::Py { lane, token, error } => ("py", lane, token, error).into_py(py),
                Ev::Wake { lane } => ("wake", lane).into_py(py),
                Ev::Ahead { lane } => ("ahead", lane).into_py(py),
            };
            list.append(item)?;
        }
        Ok(list)
    }

    /// An export's stream. `head`, `write`, `sync_block`: the parts DataEncoder learnt; `bitmap`
    /// (async exports): the dirty bitmap, and `backlog` the bytes unacked past which it goes ahead.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (topic, key, head, write, sync_block, fd, size, chunk, granule, timeout_s, seq, bitmap=None, backlog=0))]
    fn lane(
        &self,
        topic: String,
        key: Vec<u8>,
        head: Vec<u8>,
        write: Vec<u8>,
        sync_block: Vec<u8>,
        fd: i32,
        size: u64,
        chunk: u32,
        granule: u64,
        timeout_s: f64,
        seq: i64,
        bitmap: Option<&NativeBitmap>,
        backlog: u64,
    ) -> NativeLane {
        let id = self.next_lane.fetch_add(1, Ordering::SeqCst);
        let enc = DataEncoder { head, write, sync_block };
        NativeLane {
            lane: Arc::new(Lane::new(
                id,
                self.core.clone(),
                topic,
                key,
                enc,
                fd,
                size,
                chunk,
                granule,
                Duration::from_secs_f64(timeout_s),
                seq,
                bitmap.map(|b| b.bitmap.clone()),
                backlog,
            )),
        }
    }

    /// Serve a negotiated connection on `fd` (this takes it over; it closes it at the end).
    /// `first_out`: replies not yet sent; `first_in`: bytes already received past negotiation.
    #[allow(clippy::too_many_arguments)]
    fn serve(
        &self,
        lane: &NativeLane,
        fd: i32,
        structured: bool,
        max_inflight: u32,
        max_bytes: u64,
        max_payload: u32,
        first_out: Vec<u8>,
        first_in: Vec<u8>,
    ) -> NativeConn {
        let id = self.next_conn.fetch_add(1, Ordering::SeqCst);
        let conn = Conn::new(
            id,
            fd,
            self.core.clone(),
            lane.lane.clone(),
            structured,
            max_inflight,
            max_bytes,
            max_payload,
            first_out,
        );
        self.conns.lock().unwrap().insert(id, conn.clone());
        conn.start(first_in);
        NativeConn { conn }
    }

    /// Wait up to `timeout_s` for every produced event's report; returns how many are left.
    fn flush(&self, py: Python<'_>, timeout_s: f64) -> i32 {
        use rdkafka::producer::Producer;
        let core = self.core.clone();
        py.allow_threads(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs_f64(timeout_s);
            let mut left = 0;
            for p in std::iter::once(&core.producer).chain(core.producer_async.as_ref()) {
                let wait = deadline.saturating_duration_since(std::time::Instant::now());
                if p.flush(wait).is_err() {
                    left += p.in_flight_count();
                }
            }
            left
        })
    }
}

#[pyclass(frozen, module = "tapstream_native")]
struct NativeLane {
    lane: Arc<Lane>,
}

#[pymethods]
impl NativeLane {
    #[getter]
    fn id(&self) -> u32 {
        self.lane.id
    }
    #[getter]
    fn seq(&self) -> i64 {
        self.lane.lock().seq
    }
    #[getter]
    fn acked_seq(&self) -> i64 {
        self.lane.lock().acked_seq
    }
    #[getter]
    fn outstanding(&self) -> u64 {
        self.lane.lock().outstanding
    }
    #[getter]
    fn outstanding_bytes(&self) -> u64 {
        self.lane.lock().outstanding_bytes
    }
    #[getter]
    fn flags(&self) -> u32 {
        self.lane.lock().flags
    }
    #[getter]
    fn fast_inflight(&self) -> u64 {
        self.lane.lock().fast_inflight
    }
    #[getter]
    fn fast_writes(&self) -> u64 {
        self.lane.lock().fast_writes
    }

    fn lag_s(&self) -> f64 {
        self.lane.lag_s()
    }

    /// The next seq's event: `encode(seq, ts_us)` returns its bytes; `token` comes back in its
    /// ("py", ...) report. Returns the seq.
    fn publish(&self, encode: &Bound<'_, PyAny>, token: u64) -> PyResult<i64> {
        let mut st = self.lane.lock();
        st.seq += 1;
        let seq = st.seq;
        let value = match encode.call1((seq, now_us())) {
            Ok(v) => v,
            Err(e) => {
                st.seq -= 1;
                return Err(e);
            }
        };
        let bytes = value.downcast::<PyBytes>()?.as_bytes();
        if let Err(e) = self.lane.send_py(&mut st, bytes, token) {
            st.seq -= 1; // never sent: the next event takes this seq, so the stream has no gap
            return Err(PyRuntimeError::new_err(format!("the producer refused the event: {e}")));
        }
        Ok(seq)
    }

    /// A Write (a SyncBlock with `sync_id`) of `data` at `offset`, encoded here. Returns the seq.
    #[pyo3(signature = (offset, data, token, sync_id=None))]
    fn publish_data(&self, offset: u64, data: &[u8], token: u64, sync_id: Option<&str>) -> PyResult<i64> {
        let mut st = self.lane.lock();
        self.lane
            .send_py_data(&mut st, offset, data, sync_id.map(|s| s.as_bytes()), token)
            .map_err(|e| PyRuntimeError::new_err(format!("the producer refused the event: {e}")))
    }

    /// A SyncBlock of the volume's `length` bytes at `offset`, read straight into the event under
    /// the lane's lock. Returns its seq, or None when `skip_zero` and they are all zeroes (nothing
    /// sent). A failed read raises OSError, as volume.read would.
    fn publish_block(
        &self,
        py: Python<'_>,
        offset: u64,
        length: usize,
        token: u64,
        sync_id: &str,
        skip_zero: bool,
    ) -> PyResult<Option<i64>> {
        let lane = self.lane.clone();
        let id = sync_id.as_bytes();
        match py.allow_threads(move || lane.send_block(offset, length, id, skip_zero, token)) {
            Ok(seq) => Ok(seq),
            Err(BlockError::Io(e)) => Err(e.into()),
            Err(BlockError::Kafka(e)) => Err(PyRuntimeError::new_err(format!("the producer refused the event: {e}"))),
        }
    }

    /// The Python path works on the volume: the compiled path leaves writes to it until release.
    fn hold(&self) {
        self.lane.lock().py_hold += 1;
    }
    fn release(&self) {
        let mut st = self.lane.lock();
        st.py_hold = st.py_hold.saturating_sub(1);
    }

    /// The Python path ran a forwarded request (not a READ).
    fn slow_done(&self) {
        let mut st = self.lane.lock();
        st.slow_pending = st.slow_pending.saturating_sub(1);
    }

    fn set_flag(&self, bit: u32, on: bool) {
        let mut st = self.lane.lock();
        if on {
            st.flags |= bit;
        } else {
            st.flags &= !bit;
        }
    }

    fn set_held(&self, held: bool) {
        self.lane.set_held(held);
    }

    fn expire(&self) -> Vec<(u64, u64)> {
        self.lane.expire()
    }

    fn take_written(&self) -> Vec<u64> {
        self.lane.take_written()
    }

    fn take_latencies(&self) -> Vec<f64> {
        self.lane.take_latencies()
    }

    /// The lowest seq Kafka refused since the last call (0: none).
    fn take_first_failed(&self) -> i64 {
        self.lane.take_first_failed()
    }

    fn watch_below(&self, limit: u64) {
        self.lane.watch_below(limit);
    }

    fn restart_at(&self, seq: i64) {
        let mut st = self.lane.lock();
        st.seq = seq;
        st.acked_seq = seq;
    }

    /// The bytes `encode` would give a Write or SyncBlock (tests compare with fast_write.py).
    #[pyo3(signature = (seq, ts, offset, data, sync_id=None))]
    fn encode_for_test<'py>(
        &self,
        py: Python<'py>,
        seq: i64,
        ts: i64,
        offset: u64,
        data: &[u8],
        sync_id: Option<&str>,
    ) -> Bound<'py, PyBytes> {
        let v = self.lane.enc.encode(seq, ts, offset, data, sync_id.map(|s| s.as_bytes()));
        PyBytes::new_bound(py, &v)
    }
}

#[pyclass(frozen, module = "tapstream_native")]
struct NativeConn {
    conn: Arc<Conn>,
}

#[pymethods]
impl NativeConn {
    #[getter]
    fn id(&self) -> u64 {
        self.conn.id
    }
    #[getter]
    fn inflight(&self) -> u32 {
        self.conn.inflight()
    }

    #[pyo3(signature = (handle, typ, nbytes, error, message="", data=None, offset=0))]
    #[allow(clippy::too_many_arguments)]
    fn reply(&self, handle: u64, typ: u16, nbytes: u32, error: u32, message: &str, data: Option<&[u8]>, offset: u64) {
        self.conn.reply(handle, typ, nbytes, error, message, data, offset);
    }

    /// [(op, error?, requests, bytes)] answered since the last call.
    fn take_tally(&self) -> Vec<(usize, bool, u64, u64)> {
        let t = self.conn.take_tally();
        let mut out = Vec::new();
        for (op, row) in t.iter().enumerate().take(OPS) {
            for (err, &(n, b)) in row.iter().enumerate() {
                if n > 0 {
                    out.push((op, err == 1, n, b));
                }
            }
        }
        out
    }

    fn shutdown(&self) {
        self.conn.shutdown();
    }
}

/// The dirty bitmap of an async export (dirty_bitmap.py's DirtyBitmap keeps its file and API;
/// native.py's NativeDirtyBitmap calls these). Regions are (start, stop) pairs.
#[pyclass(frozen, module = "tapstream_native")]
struct NativeBitmap {
    bitmap: Arc<Bitmap>,
}

fn closed_error() -> PyErr {
    PyValueError::new_err("the dirty bitmap is closed")
}

macro_rules! with_state {
    ($self:ident, $st:ident => $body:expr) => {{
        #[allow(unused_mut)]
        let mut $st = $self.bitmap.lock();
        if $st.closed {
            return Err(closed_error());
        }
        Ok($body)
    }};
}

#[pymethods]
impl NativeBitmap {
    #[new]
    fn new(fd: i32, nbytes: usize, bits: u64, granule: u64, extent: u64, ahead: u64) -> PyResult<Self> {
        let bitmap = Bitmap::open(fd, nbytes, bits, granule, extent, ahead)?;
        Ok(NativeBitmap { bitmap: Arc::new(bitmap) })
    }

    #[pyo3(signature = (offset, length, resend=false))]
    fn mark(&self, offset: u64, length: u64, resend: bool) -> PyResult<(u64, u64, bool)> {
        with_state!(self, st => {
            let ((a, b), wait) = self.bitmap.mark(&mut st, offset, length, resend);
            (a, b, wait)
        })
    }
    fn begin_sync(&self) -> PyResult<bool> {
        with_state!(self, st => self.bitmap.begin_sync(&mut st))
    }
    fn end_sync(&self) -> PyResult<()> {
        with_state!(self, st => self.bitmap.end_sync(&mut st))
    }
    fn release(&self, start: u64, stop: u64) -> PyResult<()> {
        with_state!(self, st => self.bitmap.release(&mut st, (start, stop)))
    }
    fn fail(&self, start: u64, stop: u64) -> PyResult<()> {
        with_state!(self, st => self.bitmap.fail(&mut st, (start, stop)))
    }
    fn set_dirty(&self, offset: u64, length: u64) -> PyResult<()> {
        with_state!(self, st => self.bitmap.set_dirty(&mut st, offset, length))
    }
    #[pyo3(signature = (cool_s=0.0))]
    fn sweep(&self, cool_s: f64) -> PyResult<u64> {
        with_state!(self, st => self.bitmap.sweep(&mut st, Duration::from_secs_f64(cool_s.max(0.0))))
    }
    fn dirty(&self) -> PyResult<Vec<u64>> {
        with_state!(self, st => self.bitmap.dirty(&st))
    }
    fn orphans(&self) -> PyResult<Vec<u64>> {
        with_state!(self, st => self.bitmap.orphans(&st))
    }
    fn dirty_bits(&self) -> PyResult<u64> {
        with_state!(self, st => self.bitmap.dirty_bits(&st))
    }
    /// msync, without the GIL (and without the state's lock: marks go on meanwhile).
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        let bitmap = self.bitmap.clone();
        py.allow_threads(move || bitmap.sync()).map_err(PyErr::from)
    }
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let bitmap = self.bitmap.clone();
        py.allow_threads(move || bitmap.close()).map_err(PyErr::from)
    }
}

#[pymodule]
fn tapstream_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeCore>()?;
    m.add_class::<NativeLane>()?;
    m.add_class::<NativeConn>()?;
    m.add_class::<NativeBitmap>()?;
    m.add("UNHEALTHY", lane::UNHEALTHY)?;
    m.add("FENCED", lane::FENCED)?;
    m.add("DISK_FAILED", lane::DISK_FAILED)?;
    m.add("ZEROING", lane::ZEROING)?;
    m.add("AHEAD", lane::AHEAD)?;
    m.add("QUEUED", lane::QUEUED)?;
    Ok(())
}
