//! Avro binary of the Write and SyncBlock DiskEvents, byte for byte what
//! `tapstream.core.codec.fast_write.DataEncoder` writes (the Python side hands over the parts it
//! learnt from the codec at start, so a schema this code does not know fails there, not here).
//!
//! An event is built around its payload in place (`EventBuf`): the payload is copied once, from
//! the socket's buffer or straight from the volume, into a buffer with room before it for the head
//! (whose length depends on the seq, time and offset, known only under the lane's lock) and after
//! it for the checksum; librdkafka then takes the bytes without a copy (lane.rs).

use std::os::fd::RawFd;

use crate::io;

pub fn varint(out: &mut Vec<u8>, n: i64) {
    let mut z = zigzag(n);
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn varint_len(n: i64) -> usize {
    let bits = 64 - zigzag(n).leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// Writes varints and byte strings into a slice sized for them in advance.
struct Cursor<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.out[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    fn varint(&mut self, n: i64) {
        let mut z = zigzag(n);
        while z >= 0x80 {
            self.out[self.pos] = (z as u8 & 0x7f) | 0x80;
            self.pos += 1;
            z >>= 7;
        }
        self.out[self.pos] = z as u8;
        self.pos += 1;
    }
}

/// One event's bytes: [room for the head][payload][checksum], the value being `buf[start..]`.
pub struct EventBuf {
    buf: Vec<u8>,
    room: usize,     // where the payload starts
    start: usize,    // where the value starts (once encoded)
    pay_end: usize,  // where the payload ends (the checksum follows once encoded)
    encoded: bool,
}

impl EventBuf {
    /// An empty payload with `room` bytes before it, for up to `capacity` payload bytes.
    pub fn with_room(room: usize, capacity: usize) -> EventBuf {
        let mut buf = Vec::with_capacity(room + capacity + 5);
        buf.resize(room, 0);
        EventBuf { buf, room, start: room, pay_end: room, encoded: false }
    }

    /// No payload and no allocation (requests without one).
    pub fn empty() -> EventBuf {
        EventBuf { buf: Vec::new(), room: 0, start: 0, pay_end: 0, encoded: false }
    }

    /// An event encoded elsewhere (the Python side's own events): the value is `value`.
    pub fn encoded(value: Vec<u8>) -> EventBuf {
        let n = value.len();
        EventBuf { buf: value, room: 0, start: 0, pay_end: n, encoded: true }
    }

    pub fn extend(&mut self, data: &[u8]) {
        debug_assert!(!self.encoded);
        self.buf.extend_from_slice(data);
        self.pay_end = self.buf.len();
    }

    /// Append `length` bytes of `fd` at `offset` to the payload (a short read is EIO, as volume.py).
    pub fn pread(&mut self, fd: RawFd, length: usize, offset: u64) -> std::io::Result<()> {
        debug_assert!(!self.encoded);
        io::pread_append(&mut self.buf, fd, length, offset)?;
        self.pay_end = self.buf.len();
        Ok(())
    }

    /// Append exactly `length` bytes read from the socket `fd` to the payload; false at EOF.
    pub fn read_from(&mut self, fd: RawFd, length: usize) -> std::io::Result<bool> {
        debug_assert!(!self.encoded);
        let whole = io::append(&mut self.buf, length, |dst, n, _| unsafe { libc::read(fd, dst, n) })?;
        self.pay_end = self.buf.len();
        Ok(whole)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buf[self.room..self.pay_end]
    }

    /// The event's bytes (what is produced).
    pub fn value(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

pub struct DataEncoder {
    /// codec prefix + the volume name
    pub head: Vec<u8>,
    /// host, group, the Write branch
    pub write: Vec<u8>,
    /// host, group, the SyncBlock branch (its sync_id follows)
    pub sync_block: Vec<u8>,
}

impl DataEncoder {
    /// The room an EventBuf needs before its payload for any head (`sync_id` of up to `id_len`).
    pub fn room(&self, id_len: usize) -> usize {
        self.head.len() + self.write.len().max(self.sync_block.len() + 10 + id_len) + 5 * 10
    }

    /// Encode `ev`'s payload as the Write (or the SyncBlock of `sync_id`) of `seq` at `offset`: the
    /// head goes into the room before the payload, the payload's CRC32C after it.
    pub fn finish(&self, ev: &mut EventBuf, seq: i64, ts: i64, offset: u64, sync_id: Option<&[u8]>) {
        assert!(!ev.encoded, "an event is encoded once");
        let n = (ev.pay_end - ev.room) as i64;
        let branch = match sync_id {
            None => self.write.len(),
            Some(id) => self.sync_block.len() + varint_len(id.len() as i64) + id.len(),
        };
        let head = self.head.len()
            + varint_len(seq)
            + varint_len(ts)
            + branch
            + varint_len(offset as i64)
            + 2 * varint_len(n);
        if head > ev.room {
            // not sized for this sync id: move the payload (never on the hot path)
            let mut bigger = EventBuf::with_room(head, n as usize);
            bigger.extend(ev.payload());
            *ev = bigger;
        }
        let start = ev.room - head;
        let mut c = Cursor { out: &mut ev.buf[start..ev.room], pos: 0 };
        c.bytes(&self.head);
        c.varint(seq);
        c.varint(ts);
        match sync_id {
            None => c.bytes(&self.write),
            Some(id) => {
                c.bytes(&self.sync_block);
                c.varint(id.len() as i64);
                c.bytes(id);
            }
        }
        c.varint(offset as i64);
        c.varint(n);
        c.varint(n);
        debug_assert_eq!(c.pos, head);
        let checksum = crc32c::crc32c(&ev.buf[ev.room..ev.pay_end]);
        varint(&mut ev.buf, checksum as i64);
        ev.start = start;
        ev.encoded = true;
    }

    /// The whole event of `data` (tests compare it with fast_write.py's).
    pub fn encode(&self, seq: i64, ts: i64, offset: u64, data: &[u8], sync_id: Option<&[u8]>) -> Vec<u8> {
        let mut ev = EventBuf::with_room(self.room(sync_id.map_or(0, |s| s.len())), data.len());
        ev.extend(data);
        self.finish(&mut ev, seq, ts, offset, sync_id);
        ev.value().to_vec()
    }
}

pub fn now_us() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_micros() as i64
}
