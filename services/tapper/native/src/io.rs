//! The volume's and the socket's read and write loops: one EINTR retry (`sys`); reads go into a
//! Vec's spare capacity (a READ's pread, a sync block's pread, the rest of a long WRITE's payload
//! from its socket: no zero-filled buffer first).

use std::os::fd::RawFd;

/// A syscall's byte count, retried while it is interrupted (EINTR).
pub fn sys(mut call: impl FnMut() -> isize) -> std::io::Result<usize> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Append exactly `length` bytes to `buf`, `read(dst, n, done)` reading up to `n` bytes into
/// `dst` after the `done` already read (a read(2) or pread(2) result). Retries EINTR; Ok(false)
/// when `read` returns 0 (EOF) before `length` bytes came, with what was read kept.
pub fn append(
    buf: &mut Vec<u8>,
    length: usize,
    mut read: impl FnMut(*mut libc::c_void, usize, usize) -> isize,
) -> std::io::Result<bool> {
    buf.reserve(length);
    let base = buf.len();
    while buf.len() < base + length {
        let done = buf.len() - base;
        let dst = unsafe { buf.as_mut_ptr().add(base + done) } as *mut libc::c_void;
        let n = sys(|| read(dst, length - done, done))?;
        if n == 0 {
            return Ok(false);
        }
        unsafe { buf.set_len(buf.len() + n) };
    }
    Ok(true)
}

/// Append `length` bytes of `fd` at `offset` to `buf`; a short read is EIO, as volume.py's.
pub fn pread_append(buf: &mut Vec<u8>, fd: RawFd, length: usize, offset: u64) -> std::io::Result<()> {
    let whole = append(buf, length, |dst, n, done| unsafe {
        libc::pread(fd, dst, n, (offset + done as u64) as libc::off_t)
    })?;
    if whole {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(libc::EIO))
    }
}

pub fn pread_exact(fd: RawFd, length: usize, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    pread_append(&mut buf, fd, length, offset)?;
    Ok(buf)
}

/// Write all of `data` at `offset`; a write of 0 bytes is EIO.
pub fn pwrite_all(fd: RawFd, mut data: &[u8], mut offset: u64) -> std::io::Result<()> {
    while !data.is_empty() {
        let n = sys(|| unsafe {
            libc::pwrite(fd, data.as_ptr() as *const libc::c_void, data.len(), offset as libc::off_t)
        })?;
        if n == 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        data = &data[n..];
        offset += n as u64;
    }
    Ok(())
}
