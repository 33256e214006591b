//! Write-ahead log: local segment files of framed, checksummed,
//! zstd-compressed Arrow IPC records.
//!
//! Frame: `len: u32 LE | crc32(payload): u32 LE | payload`, where payload is
//! `zstd(table_id: u64 LE | Arrow IPC stream of one batch)`. A write is one
//! frame, so after a crash a batch is there whole (checksum matches) or not at
//! all (the torn tail is ignored).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::error::{Result, StorageError};

const HEADER_LEN: usize = 8;
const ZSTD_LEVEL: i32 = 1;

/// Encodes one write as a complete frame, ready to append.
pub(crate) fn encode_frame(table_id: u64, batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(batch.get_array_memory_size() + 64);
    raw.extend_from_slice(&table_id.to_le_bytes());
    {
        let mut writer = StreamWriter::try_new(&mut raw, &batch.schema())?;
        writer.write(batch)?;
        writer.finish()?;
    }
    let payload = zstd::bulk::compress(&raw, ZSTD_LEVEL)?;
    let len = u32::try_from(payload.len())
        .map_err(|_| StorageError::InvalidData("a single write must be below 4 GiB".into()))?;
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

fn decode_payload(payload: &[u8]) -> Result<(u64, Vec<RecordBatch>)> {
    let raw = zstd::stream::decode_all(payload)?;
    if raw.len() < 8 {
        return Err(StorageError::Corrupt("short WAL record".into()));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&raw[..8]);
    let reader = StreamReader::try_new(&raw[8..], None)?;
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((u64::from_le_bytes(id), batches))
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.wal"))
}

fn segment_ids(dir: &Path) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// A record read back during recovery.
pub(crate) struct ReplayedWrite {
    pub(crate) table_id: u64,
    pub(crate) batches: Vec<RecordBatch>,
}

/// Reads every complete record of the segments after `flushed`, in order.
pub(crate) fn replay(dir: &Path, flushed: u64) -> Result<Vec<ReplayedWrite>> {
    let mut out = Vec::new();
    for id in segment_ids(dir)?.into_iter().filter(|id| *id > flushed) {
        let mut bytes = Vec::new();
        File::open(segment_path(dir, id))?.read_to_end(&mut bytes)?;
        let mut pos = 0;
        while pos + HEADER_LEN <= bytes.len() {
            let len =
                u32::from_le_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]])
                    as usize;
            let crc = u32::from_le_bytes([
                bytes[pos + 4],
                bytes[pos + 5],
                bytes[pos + 6],
                bytes[pos + 7],
            ]);
            let start = pos + HEADER_LEN;
            let Some(payload) = bytes.get(start..start + len) else {
                break;
            };
            if crc32fast::hash(payload) != crc {
                break;
            }
            let (table_id, batches) = decode_payload(payload)?;
            out.push(ReplayedWrite { table_id, batches });
            pos = start + len;
        }
        if pos < bytes.len() {
            tracing::warn!(
                segment = id,
                offset = pos,
                "ignoring torn tail of WAL segment (a write that was never acknowledged)"
            );
        }
    }
    Ok(out)
}

/// The segment being appended to.
pub(crate) struct Wal {
    dir: PathBuf,
    segment: u64,
    file: File,
}

impl Wal {
    /// Opens a fresh segment numbered after every existing one and after `flushed`.
    pub(crate) fn open(dir: &Path, flushed: u64) -> Result<Wal> {
        fs::create_dir_all(dir)?;
        let last = segment_ids(dir)?.last().copied().unwrap_or(0);
        let segment = last.max(flushed) + 1;
        let file = create_segment(dir, segment)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            segment,
            file,
        })
    }

    /// Appends frames and makes them durable with one fsync (group commit).
    pub(crate) fn append(&mut self, frames: &[Vec<u8>]) -> Result<()> {
        let total: usize = frames.iter().map(Vec::len).sum();
        let mut buf = Vec::with_capacity(total);
        for f in frames {
            buf.extend_from_slice(f);
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        Ok(())
    }

    /// Starts a new segment; returns the number of the one just closed.
    pub(crate) fn rotate(&mut self) -> Result<u64> {
        let closed = self.segment;
        self.segment += 1;
        self.file = create_segment(&self.dir, self.segment)?;
        Ok(closed)
    }

    /// Deletes segments numbered up to `flushed`: their rows are in Parquet.
    pub(crate) fn remove_through(&self, flushed: u64) -> Result<()> {
        for id in segment_ids(&self.dir)?
            .into_iter()
            .filter(|id| *id <= flushed)
        {
            fs::remove_file(segment_path(&self.dir, id))?;
        }
        Ok(())
    }
}

fn create_segment(dir: &Path, id: u64) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, id))?;
    // The new directory entry must survive a crash too.
    File::open(dir)?.sync_all()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..n))])
            .expect("batch")
    }

    #[test]
    fn torn_tail_is_ignored_and_whole_records_survive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::open(dir.path(), 0).expect("open");
        wal.append(&[encode_frame(7, &batch(3)).expect("frame")])
            .expect("append");
        let torn = encode_frame(7, &batch(5)).expect("frame");
        wal.append(&[torn[..torn.len() / 2].to_vec()])
            .expect("append");
        let replayed = replay(dir.path(), 0).expect("replay");
        assert_eq!(replayed.len(), 1);
        assert_eq!(replayed[0].table_id, 7);
        assert_eq!(replayed[0].batches[0].num_rows(), 3);
    }

    #[test]
    fn flushed_segments_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::open(dir.path(), 0).expect("open");
        wal.append(&[encode_frame(1, &batch(1)).expect("frame")])
            .expect("append");
        let closed = wal.rotate().expect("rotate");
        wal.append(&[encode_frame(1, &batch(2)).expect("frame")])
            .expect("append");
        let replayed = replay(dir.path(), closed).expect("replay");
        assert_eq!(replayed.len(), 1);
        assert_eq!(replayed[0].batches[0].num_rows(), 2);
        wal.remove_through(closed).expect("remove");
        assert_eq!(segment_ids(dir.path()).expect("ids").len(), 1);
    }
}
