//! One NBD connection in transmission, handed over by the Python server after negotiation: a
//! reader thread parses requests and serves READs and plain WRITEs (no flags, one event's worth)
//! itself; every other request goes to the Python path through the core's queue, in arrival
//! order. A writer thread sends the replies, gathered, so a client that stops reading blocks only
//! its own connection. Back-pressure as the Python server: reading stops while too many requests
//! or bytes are in flight.

use std::os::fd::RawFd;
use std::sync::{Arc, Condvar, Mutex};

use crate::core::{Core, Ev};
use crate::encode::EventBuf;
use crate::frames::*;
use crate::io::pread_exact;
use crate::lane::Lane;

pub const OPS: usize = 16;
const READ_CHUNK: usize = 256 * 1024;

pub struct Out {
    buf: Vec<u8>,
    pub inflight: u32,
    pub inflight_bytes: u64,
    lost: bool,         // the client went away: replies are dropped
    reading_done: bool, // the reader stopped (EOF, DISC, an error or shutdown)
    reader_waiting: bool,
    writer_waiting: bool,
    reason: String,
    /// requests answered since the Python side last took them: [op][ok=0/error=1] -> (n, bytes)
    pub tally: [[(u64, u64); 2]; OPS],
}

pub struct Conn {
    pub id: u64,
    pub fd: RawFd,
    pub core: Arc<Core>,
    pub lane: Arc<Lane>,
    pub structured: bool,
    pub max_inflight: u32,
    pub max_bytes: u64,
    pub max_payload: u32,
    out: Mutex<Out>,
    to_writer: Condvar,
    to_reader: Condvar,
}

impl Conn {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        fd: RawFd,
        core: Arc<Core>,
        lane: Arc<Lane>,
        structured: bool,
        max_inflight: u32,
        max_bytes: u64,
        max_payload: u32,
        first_out: Vec<u8>,
    ) -> Arc<Conn> {
        Arc::new(Conn {
            id,
            fd,
            core,
            lane,
            structured,
            max_inflight,
            max_bytes,
            max_payload,
            out: Mutex::new(Out {
                buf: first_out,
                inflight: 0,
                inflight_bytes: 0,
                lost: false,
                reading_done: false,
                reader_waiting: false,
                writer_waiting: false,
                reason: String::new(),
                tally: [[(0, 0); 2]; OPS],
            }),
            to_writer: Condvar::new(),
            to_reader: Condvar::new(),
        })
    }

    pub fn start(self: &Arc<Self>, first_in: Vec<u8>) {
        // the socket came from the event loop, non-blocking; these threads block on it
        unsafe {
            let fl = libc::fcntl(self.fd, libc::F_GETFL);
            libc::fcntl(self.fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
        let r = self.clone();
        std::thread::Builder::new()
            .name(format!("nbd-read-{}", self.id))
            .spawn(move || r.read_loop(first_in))
            .expect("spawn reader");
        let w = self.clone();
        std::thread::Builder::new()
            .name(format!("nbd-write-{}", self.id))
            .spawn(move || w.write_loop())
            .expect("spawn writer");
    }

    fn begin(&self, typ: u16, length: u32) {
        let mut o = self.out.lock().unwrap();
        o.inflight += 1;
        if typ == CMD_READ || typ == CMD_WRITE {
            o.inflight_bytes += length as u64;
        }
    }

    /// A request is done: account for it and queue its reply frame(s).
    fn finish(&self, typ: u16, nbytes: u32, error: u32, frame: impl FnOnce(&mut Vec<u8>)) {
        let mut o = self.out.lock().unwrap();
        o.inflight -= 1;
        if typ == CMD_READ || typ == CMD_WRITE {
            o.inflight_bytes -= nbytes as u64;
        }
        let t = &mut o.tally[(typ as usize).min(OPS - 1)][(error != 0) as usize];
        t.0 += 1;
        if error == 0 && (typ == CMD_READ || typ == CMD_WRITE) {
            t.1 += nbytes as u64;
        }
        if !o.lost {
            let had = o.buf.len();
            frame(&mut o.buf);
            if had == 0 && o.writer_waiting {
                // The writer sleeps with nothing to send, so no send is under way: this thread
                // sends the reply itself (no wake-up and thread switch per reply); what the socket
                // does not take at once, or an error, is left to the writer.
                let n = unsafe {
                    libc::send(
                        self.fd,
                        o.buf.as_ptr() as *const libc::c_void,
                        o.buf.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                };
                if n > 0 {
                    o.buf.drain(..n as usize);
                }
            }
        }
        // a futex wake costs a syscall: only for a thread that waits
        if o.writer_waiting && (!o.buf.is_empty() || o.inflight == 0) {
            o.writer_waiting = false;
            self.to_writer.notify_one();
        }
        if o.reader_waiting
            && ((o.inflight <= self.max_inflight / 2 && o.inflight_bytes <= self.max_bytes / 2)
                || o.inflight == 0)
        {
            o.reader_waiting = false;
            self.to_reader.notify_one();
        }
    }

    pub fn reply_simple(&self, handle: u64, typ: u16, nbytes: u32, error: u32) {
        self.finish(typ, nbytes, error, |b| simple_reply(b, handle, error));
    }

    /// A reply from the Python path (any request it ran).
    pub fn reply(&self, handle: u64, typ: u16, nbytes: u32, error: u32, message: &str, data: Option<&[u8]>, offset: u64) {
        let structured = self.structured;
        self.finish(typ, nbytes, error, |b| {
            if typ == CMD_READ {
                match (error, data) {
                    (0, Some(d)) => read_reply(b, structured, handle, offset, d),
                    _ => read_error(b, structured, handle, if error == 0 { EIO } else { error }, message),
                }
            } else {
                simple_reply(b, handle, error)
            }
        });
    }

    pub fn take_tally(&self) -> [[(u64, u64); 2]; OPS] {
        std::mem::replace(&mut self.out.lock().unwrap().tally, [[(0, 0); 2]; OPS])
    }

    pub fn inflight(&self) -> u32 {
        self.out.lock().unwrap().inflight
    }

    /// Stop reading (SIGTERM): requests in flight finish, then the connection closes.
    pub fn shutdown(&self) {
        unsafe { libc::shutdown(self.fd, libc::SHUT_RD) };
    }

    fn forward(&self, req: &Request, payload: EventBuf) {
        if req.typ != CMD_READ {
            self.lane.lock().slow_pending += 1; // before the Python side can see it (slow_done)
        }
        self.core.push(Ev::Req {
            conn: self.id,
            flags: req.flags,
            typ: req.typ,
            handle: req.handle,
            offset: req.offset,
            length: req.length,
            payload,
        });
    }

    fn wait_for_room(&self) {
        let mut o = self.out.lock().unwrap();
        while !o.lost && (o.inflight >= self.max_inflight || o.inflight_bytes >= self.max_bytes) {
            o.reader_waiting = true;
            o = self.to_reader.wait(o).unwrap();
        }
    }

    fn serve(self: &Arc<Self>, req: Request, payload: EventBuf) {
        let lane = &self.lane;
        let fits = req.length > 0 && req.offset.checked_add(req.length as u64).is_some_and(|e| e <= lane.size);
        if req.typ == CMD_WRITE && req.flags == 0 && fits && req.length <= lane.chunk {
            self.begin(CMD_WRITE, req.length);
            if let Err(payload) = lane.fast_write(self, req.handle, req.offset, payload) {
                self.forward(&req, payload);
            }
            return;
        }
        if req.typ == CMD_READ && req.flags & !CMD_FLAG_FUA == 0 && fits && req.length <= self.max_payload {
            self.begin(CMD_READ, req.length);
            match pread_exact(lane.fd, req.length as usize, req.offset) {
                Ok(data) => {
                    let (h, o, s) = (req.handle, req.offset, self.structured);
                    self.finish(CMD_READ, req.length, 0, |b| read_reply(b, s, h, o, &data));
                }
                Err(_) => self.forward(&req, EventBuf::empty()), // the Python path reads again, logs, answers
            }
            return;
        }
        self.begin(req.typ, req.length);
        self.forward(&req, payload);
    }

    fn read_loop(self: Arc<Self>, first_in: Vec<u8>) {
        let mut buf = first_in;
        let mut pos = 0usize;
        let mut skip: u64 = 0; // payload bytes of an oversize WRITE still to discard
        let mut skipped = 0u64;
        let mut reason = String::new();
        // a WRITE's payload goes from `buf` into its event's buffer, with room for the event's head
        let room = self.lane.enc.room(0);
        'outer: loop {
            loop {
                if skip > 0 {
                    let n = skip.min((buf.len() - pos) as u64);
                    pos += n as usize;
                    skip -= n;
                    if skip > 0 {
                        break;
                    }
                    // answer only now: a client may not expect the reply before it sent the payload
                    self.begin(CMD_WRITE, 0);
                    self.reply_simple(skipped, CMD_WRITE, 0, EINVAL);
                }
                if buf.len() - pos < HEADER {
                    break;
                }
                let req = parse(&buf[pos..pos + HEADER]);
                if req.magic != REQUEST_MAGIC {
                    reason = format!("bad request magic {:#x}", req.magic);
                    break 'outer;
                }
                if req.typ == CMD_DISC {
                    break 'outer;
                }
                let mut payload = EventBuf::empty();
                if req.typ == CMD_WRITE {
                    if req.length > self.max_payload {
                        pos += HEADER;
                        skip = req.length as u64;
                        skipped = req.handle;
                        continue;
                    }
                    let need = HEADER + req.length as usize;
                    let have = (buf.len() - pos).min(need);
                    payload = EventBuf::with_room(room, req.length as usize);
                    payload.extend(&buf[pos + HEADER..pos + have]);
                    pos += have;
                    if have < need {
                        // the rest straight from the socket into the event, not through `buf`
                        match payload.read_from(self.fd, need - have) {
                            Ok(true) => {}
                            Ok(false) => break 'outer, // EOF within a payload
                            Err(e) => {
                                reason = format!("read: {e}");
                                break 'outer;
                            }
                        }
                    }
                } else {
                    pos += HEADER;
                }
                self.wait_for_room();
                self.serve(req, payload);
            }
            if pos > 0 {
                buf.drain(..pos);
                pos = 0;
            }
            // read straight into `buf`'s spare room (no bounce buffer)
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            let len = buf.len();
            let n = unsafe {
                libc::read(self.fd, buf.as_mut_ptr().add(len) as *mut libc::c_void, buf.capacity() - len)
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                reason = format!("read: {e}");
                break;
            }
            if n == 0 {
                break; // EOF (or shutdown): finish what is in flight
            }
            unsafe { buf.set_len(len + n as usize) };
        }
        let mut o = self.out.lock().unwrap();
        o.reading_done = true;
        if !reason.is_empty() {
            o.reason = reason;
        }
        o.writer_waiting = false;
        self.to_writer.notify_one();
    }

    fn write_loop(self: Arc<Self>) {
        loop {
            let out = {
                let mut o = self.out.lock().unwrap();
                while o.buf.is_empty() && !(o.reading_done && o.inflight == 0) {
                    o.writer_waiting = true;
                    o = self.to_writer.wait(o).unwrap();
                }
                if o.buf.is_empty() {
                    break; // nothing left in flight and nothing more will be read
                }
                std::mem::take(&mut o.buf)
            };
            if !write_all(self.fd, &out) {
                let mut o = self.out.lock().unwrap();
                o.lost = true;
                o.buf.clear();
                o.reader_waiting = false;
                self.to_reader.notify_one();
            }
        }
        let reason = {
            std::mem::take(&mut self.out.lock().unwrap().reason)
        };
        unsafe {
            libc::shutdown(self.fd, libc::SHUT_RDWR);
            libc::close(self.fd);
        }
        self.core.push(Ev::Closed { conn: self.id, reason });
    }
}

fn write_all(fd: RawFd, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        let n = unsafe {
            libc::send(fd, data.as_ptr() as *const libc::c_void, data.len(), libc::MSG_NOSIGNAL)
        };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        data = &data[n as usize..];
    }
    true
}
