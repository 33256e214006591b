//! An in-memory file that grows in chunks instead of by reallocation.
//!
//! A bulk load writes each Parquet file into memory before the store gets
//! it. Into a `Vec<u8>`, every doubling copied the bytes written so far
//! into fresh pages, which the kernel zeroed first: reallocation was a
//! third of a load's page faults. Chunks are never copied, and the store
//! takes them as they are (`PutPayload` is a list of chunks).

use std::io::Write;

use bytes::Bytes;
use object_store::PutPayload;

/// The smallest chunk: a file's first bytes (its magic number) do not
/// reserve more.
const FIRST_CHUNK: usize = 64 * 1024;
/// The largest chunk made for small writes; a larger write gets a chunk of
/// its own size.
const MAX_CHUNK: usize = 8 * 1024 * 1024;

/// Bytes written so far, in chunks. Each new chunk is as large as all the
/// chunks before it (between [`FIRST_CHUNK`] and [`MAX_CHUNK`]), so a file
/// takes few chunks; the room a chunk leaves when the next write does not
/// fit is left unwritten (the bound on open files counts bytes written).
#[derive(Debug, Default)]
pub(crate) struct FileBuffer {
    full: Vec<Bytes>,
    current: Vec<u8>,
    len: usize,
}

impl FileBuffer {
    /// An empty file.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The bytes written, for the store.
    pub(crate) fn into_payload(mut self) -> PutPayload {
        if !self.current.is_empty() {
            self.full
                .push(Bytes::from(std::mem::take(&mut self.current)));
        }
        self.full.into_iter().collect()
    }
}

impl Write for FileBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.current.capacity() - self.current.len() < buf.len() {
            if !self.current.is_empty() {
                self.full
                    .push(Bytes::from(std::mem::take(&mut self.current)));
            }
            let size = self.len.clamp(FIRST_CHUNK, MAX_CHUNK).max(buf.len());
            self.current = Vec::with_capacity(size);
        }
        self.current.extend_from_slice(buf);
        self.len += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes of every size come back whole and in order, in chunks that
    /// grow with the file.
    #[test]
    fn keeps_every_byte_in_order() {
        let mut file = FileBuffer::new();
        let mut expected = Vec::new();
        let mut state = 7u64;
        for i in 0..400usize {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let size = match i % 5 {
                0 => 4,
                1 => (state >> 50) as usize,
                4 if i % 100 == 4 => MAX_CHUNK + 3,
                _ => (state >> 44) as usize,
            };
            let bytes = vec![(i % 251) as u8; size];
            file.write_all(&bytes).expect("write");
            expected.extend_from_slice(&bytes);
        }
        assert_eq!(file.len(), expected.len());
        let payload = file.into_payload();
        let chunks: Vec<&Bytes> = payload.iter().collect();
        assert!(chunks.len() < 40, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|c| !c.is_empty()));
        let mut joined = Vec::with_capacity(expected.len());
        for chunk in chunks {
            joined.extend_from_slice(chunk);
        }
        assert_eq!(joined, expected);
    }

    #[test]
    fn empty_file_is_an_empty_payload() {
        let file = FileBuffer::new();
        assert_eq!(file.len(), 0);
        assert_eq!(file.into_payload().content_length(), 0);
    }
}
