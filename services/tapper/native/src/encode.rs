//! Avro binary of the Write and SyncBlock DiskEvents, byte for byte what
//! `tapstream.core.codec.fast_write.DataEncoder` writes (the Python side hands over the parts it
//! learnt from the codec at start, so a schema this code does not know fails there, not here).

pub fn varint(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
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
    pub fn encode(
        &self,
        seq: i64,
        ts: i64,
        offset: u64,
        data: &[u8],
        checksum: u32,
        sync_id: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head.len() + self.write.len() + data.len() + 48);
        out.extend_from_slice(&self.head);
        varint(&mut out, seq);
        varint(&mut out, ts);
        match sync_id {
            None => out.extend_from_slice(&self.write),
            Some(id) => {
                out.extend_from_slice(&self.sync_block);
                varint(&mut out, id.len() as i64);
                out.extend_from_slice(id);
            }
        }
        varint(&mut out, offset as i64);
        varint(&mut out, data.len() as i64);
        varint(&mut out, data.len() as i64);
        out.extend_from_slice(data);
        varint(&mut out, checksum as i64);
        out
    }
}

pub fn now_us() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_micros() as i64
}
