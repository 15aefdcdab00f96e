//! The dirty bitmap of an async export (dirty_bitmap.py's logic, over the same mapped file), so
//! the compiled path's writes and the Python path's requests mark, release and sweep one state
//! under one lock. See dirty_bitmap.py for what the bits mean and when they are durable.

use std::collections::{HashMap, HashSet};
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub struct State {
    pub closed: bool,
    inflight: HashMap<u64, u32>,
    released: HashMap<u64, Instant>, // region -> when it was released (the sweep lets it cool)
    failed: HashSet<u64>, // may be missing from Kafka since the last resend began (dirty_bitmap.py)
    unsynced: HashSet<u64>, // set since the last begin_sync(): not durable yet
    syncing: HashSet<u64>,  // covered by the msync in progress
}

pub struct Bitmap {
    map: *mut u8,
    nbytes: usize,
    pub bits: u64,
    shift: u32,
    per_extent: u64,
    ahead: u64,
    st: Mutex<State>,
}

// The map is only read or written under `st`'s lock (msync reads it without: the kernel's job).
unsafe impl Send for Bitmap {}
unsafe impl Sync for Bitmap {}

impl Bitmap {
    /// Map the first `nbytes` of `fd` (reserved by the Python side; the fd may be closed after).
    pub fn open(fd: RawFd, nbytes: usize, bits: u64, granule: u64, extent: u64, ahead: u64) -> std::io::Result<Bitmap> {
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                nbytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Bitmap {
            map: map as *mut u8,
            nbytes,
            bits,
            shift: granule.trailing_zeros(),
            per_extent: (extent / granule).max(1),
            ahead,
            st: Mutex::new(State {
                inflight: HashMap::new(),
                released: HashMap::new(),
                failed: HashSet::new(),
                unsynced: HashSet::new(),
                syncing: HashSet::new(),
                closed: false,
            }),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap()
    }

    pub fn regions(&self, offset: u64, length: u64) -> (u64, u64) {
        if length == 0 {
            return (0, 0);
        }
        (offset >> self.shift, ((offset + length - 1) >> self.shift) + 1)
    }

    /// The byte holding region `r`'s bit (callers check the range; past the map is a bug, and
    /// must not become a store into memory that is not the map's).
    fn byte(&self, r: u64) -> *mut u8 {
        let i = (r >> 3) as usize;
        assert!(i < self.nbytes, "dirty bitmap: region {r} past the end of the map");
        unsafe { self.map.add(i) }
    }

    fn get(&self, r: u64) -> bool {
        unsafe { *self.byte(r) & (1 << (r & 7)) != 0 }
    }

    fn set(&self, r: u64) {
        unsafe { *self.byte(r) |= 1 << (r & 7) }
    }

    fn clear(&self, r: u64) {
        unsafe { *self.byte(r) &= !(1u8 << (r & 7)) }
    }

    /// dirty_bitmap.py's `mark`: returns the regions and whether the caller must wait for an msync.
    pub fn mark(&self, st: &mut State, offset: u64, length: u64, resend: bool) -> ((u64, u64), bool) {
        let (a, b) = self.regions(offset, length);
        if resend {
            for r in a..b {
                st.failed.remove(&r);
            }
        }
        let (mut new, mut wait) = (false, false);
        for r in a..b {
            *st.inflight.entry(r).or_insert(0) += 1;
            if !self.get(r) {
                self.set(r);
                st.unsynced.insert(r);
                new = true;
            } else if st.unsynced.contains(&r) || st.syncing.contains(&r) {
                wait = true;
            }
        }
        if new && (self.per_extent > 1 || self.ahead > 0) {
            let (k, now) = (self.per_extent, Instant::now());
            let end = self.bits.min((b.div_ceil(k) + self.ahead) * k);
            for r in (a / k * k)..end {
                if !self.get(r) {
                    self.set(r);
                    st.unsynced.insert(r);
                    st.released.insert(r, now); // reserved with this msync; swept if unused
                }
            }
        }
        ((a, b), new || wait)
    }

    /// The compiled path's mark: only when every bit is set and durable already (no msync to wait
    /// for); then counted in flight as `mark` does. Otherwise nothing changes (the Python path runs
    /// the request and marks it itself).
    pub fn try_mark(&self, offset: u64, length: u64) -> Option<(u64, u64)> {
        let mut st = self.lock();
        if st.closed {
            return None;
        }
        let (a, b) = self.regions(offset, length);
        for r in a..b {
            if !self.get(r) || st.unsynced.contains(&r) || st.syncing.contains(&r) {
                return None;
            }
        }
        for r in a..b {
            *st.inflight.entry(r).or_insert(0) += 1;
        }
        Some((a, b))
    }

    pub fn begin_sync(&self, st: &mut State) -> bool {
        st.syncing = std::mem::take(&mut st.unsynced);
        !st.syncing.is_empty()
    }

    pub fn end_sync(&self, st: &mut State) {
        st.syncing.clear();
    }

    fn uncount(st: &mut State, r: u64) -> bool {
        match st.inflight.get_mut(&r) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                st.inflight.remove(&r);
                true
            }
            None => false, // not counted (a double settle would be a bug; never underflow)
        }
    }

    pub fn release(&self, st: &mut State, (a, b): (u64, u64)) {
        let now = Instant::now();
        for r in a..b {
            if Self::uncount(st, r) && !st.failed.contains(&r) {
                st.released.insert(r, now); // (a failed region waits for its resend)
            }
        }
    }

    pub fn fail(&self, st: &mut State, (a, b): (u64, u64)) {
        for r in a..b {
            st.failed.insert(r);
            st.released.remove(&r);
            Self::uncount(st, r);
        }
    }

    pub fn set_dirty(&self, st: &mut State, offset: u64, length: u64) {
        let (a, b) = self.regions(offset, length);
        for r in a..b {
            st.failed.insert(r);
            st.released.remove(&r);
            self.set(r);
        }
    }

    pub fn sweep(&self, st: &mut State, cool: Duration) -> u64 {
        let mut cleared = 0;
        let now = Instant::now();
        let cooled: Vec<u64> =
            st.released.iter().filter(|(_, t)| now.duration_since(**t) >= cool).map(|(r, _)| *r).collect();
        for r in cooled {
            st.released.remove(&r);
            if !st.inflight.contains_key(&r) {
                self.clear(r);
                cleared += 1;
            }
        }
        cleared
    }

    pub fn dirty(&self, _st: &State) -> Vec<u64> {
        let mut out = Vec::new();
        for i in 0..self.nbytes {
            let byte = unsafe { *self.map.add(i) };
            if byte != 0 {
                for b in 0..8u64 {
                    let r = i as u64 * 8 + b;
                    if byte >> b & 1 != 0 && r < self.bits {
                        out.push(r);
                    }
                }
            }
        }
        out
    }

    pub fn orphans(&self, st: &State) -> Vec<u64> {
        self.dirty(st)
            .into_iter()
            .filter(|r| st.failed.contains(r) || (!st.inflight.contains_key(r) && !st.released.contains_key(r)))
            .collect()
    }

    pub fn dirty_bits(&self, _st: &State) -> u64 {
        (0..self.nbytes).map(|i| unsafe { *self.map.add(i) }.count_ones() as u64).sum()
    }

    /// msync (MS_SYNC) of the whole map; called without the state's lock.
    pub fn sync(&self) -> std::io::Result<()> {
        if self.lock().closed {
            return Ok(());
        }
        let rc = unsafe { libc::msync(self.map as *mut libc::c_void, self.nbytes, libc::MS_SYNC) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// msync and unmap; later calls find it closed (and mark nothing).
    pub fn close(&self) -> std::io::Result<()> {
        let result = self.sync();
        let mut st = self.lock();
        if !st.closed {
            st.closed = true;
            unsafe { libc::munmap(self.map as *mut libc::c_void, self.nbytes) };
        }
        result
    }
}
