//! NBD transmission frames (the same as protocol/frames.py).

pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
pub const REPLY_FLAG_DONE: u16 = 1;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_ERROR: u16 = 32769; // (1 << 15) + 1

pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLAG_FUA: u16 = 1;

pub const EINVAL: u32 = 22;
pub const EIO: u32 = 5;

pub const HEADER: usize = 28;

pub struct Request {
    pub magic: u32,
    pub flags: u16,
    pub typ: u16,
    pub handle: u64,
    pub offset: u64,
    pub length: u32,
}

pub fn parse(b: &[u8]) -> Request {
    Request {
        magic: u32::from_be_bytes(b[0..4].try_into().unwrap()),
        flags: u16::from_be_bytes(b[4..6].try_into().unwrap()),
        typ: u16::from_be_bytes(b[6..8].try_into().unwrap()),
        handle: u64::from_be_bytes(b[8..16].try_into().unwrap()),
        offset: u64::from_be_bytes(b[16..24].try_into().unwrap()),
        length: u32::from_be_bytes(b[24..28].try_into().unwrap()),
    }
}

pub fn simple_reply(out: &mut Vec<u8>, handle: u64, error: u32) {
    out.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&handle.to_be_bytes());
}

fn structured_header(out: &mut Vec<u8>, typ: u16, handle: u64, length: u32) {
    out.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&REPLY_FLAG_DONE.to_be_bytes());
    out.extend_from_slice(&typ.to_be_bytes());
    out.extend_from_slice(&handle.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
}

/// A successful READ's reply with its data.
pub fn read_reply(out: &mut Vec<u8>, structured: bool, handle: u64, offset: u64, data: &[u8]) {
    if structured {
        structured_header(out, REPLY_TYPE_OFFSET_DATA, handle, 8 + data.len() as u32);
        out.extend_from_slice(&offset.to_be_bytes());
    } else {
        simple_reply(out, handle, 0);
    }
    out.extend_from_slice(data);
}

/// A failed READ's reply: a structured error chunk when negotiated, else a simple reply.
pub fn read_error(out: &mut Vec<u8>, structured: bool, handle: u64, error: u32, message: &str) {
    if structured {
        let msg = &message.as_bytes()[..message.len().min(1024)];
        structured_header(out, REPLY_TYPE_ERROR, handle, 6 + msg.len() as u32);
        out.extend_from_slice(&error.to_be_bytes());
        out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        out.extend_from_slice(msg);
    } else {
        simple_reply(out, handle, error);
    }
}
