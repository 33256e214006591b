//! Write-ahead log: local segment files of framed, checksummed,
//! zstd-compressed Arrow IPC records.
//!
//! Frame: `len: u32 LE | crc32(payload): u32 LE | payload`, where payload is
//! `zstd(table_id: u64 LE | Arrow IPC stream of one batch)` for a write to one
//! table, or `zstd(GROUP_MARKER: u64 LE | parts: u32 LE | parts × (table_id:
//! u64 LE | len: u64 LE | Arrow IPC stream))` for a write to several tables at
//! once (rows and the rollup deltas computed from them). A write is one frame,
//! so after a crash it is there whole (checksum matches) or not at all (the
//! torn tail is ignored).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::error::{Result, StorageError};

const HEADER_LEN: usize = 8;
const ZSTD_LEVEL: i32 = 1;

/// Marks a payload holding parts for several tables; no table has this id.
const GROUP_MARKER: u64 = u64::MAX;

fn ipc_stream(out: &mut Vec<u8>, batch: &RecordBatch) -> Result<()> {
    let mut writer = StreamWriter::try_new(out, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    Ok(())
}

/// Encodes one write (a batch for each of one or more tables) as a complete
/// frame, ready to append.
pub(crate) fn encode_frame(parts: &[(u64, &RecordBatch)]) -> Result<Vec<u8>> {
    let size: usize = parts
        .iter()
        .map(|(_, b)| b.get_array_memory_size() + 64)
        .sum();
    let mut raw = Vec::with_capacity(size + 16);
    if let [(table_id, batch)] = parts {
        raw.extend_from_slice(&table_id.to_le_bytes());
        ipc_stream(&mut raw, batch)?;
    } else {
        raw.extend_from_slice(&GROUP_MARKER.to_le_bytes());
        let count = u32::try_from(parts.len())
            .map_err(|_| StorageError::InvalidData("too many tables in one write".into()))?;
        raw.extend_from_slice(&count.to_le_bytes());
        for (table_id, batch) in parts {
            raw.extend_from_slice(&table_id.to_le_bytes());
            let len_at = raw.len();
            raw.extend_from_slice(&0u64.to_le_bytes());
            ipc_stream(&mut raw, batch)?;
            let len = (raw.len() - len_at - 8) as u64;
            raw[len_at..len_at + 8].copy_from_slice(&len.to_le_bytes());
        }
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

fn read_u64(raw: &[u8], at: usize) -> Result<u64> {
    let bytes = raw
        .get(at..at + 8)
        .ok_or_else(|| StorageError::Corrupt("short WAL record".into()))?;
    let mut v = [0u8; 8];
    v.copy_from_slice(bytes);
    Ok(u64::from_le_bytes(v))
}

fn read_ipc(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    let reader = StreamReader::try_new(bytes, None)?;
    Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
}

fn decode_payload(payload: &[u8]) -> Result<Vec<ReplayedWrite>> {
    let raw = zstd::stream::decode_all(payload)?;
    let first = read_u64(&raw, 0)?;
    if first != GROUP_MARKER {
        return Ok(vec![ReplayedWrite {
            table_id: first,
            batches: read_ipc(&raw[8..])?,
        }]);
    }
    let count = raw
        .get(8..12)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| StorageError::Corrupt("short WAL record".into()))?;
    let mut at = 12;
    let mut parts = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let table_id = read_u64(&raw, at)?;
        let len = usize::try_from(read_u64(&raw, at + 8)?)
            .map_err(|_| StorageError::Corrupt("WAL part length".into()))?;
        let body = raw
            .get(at + 16..at + 16 + len)
            .ok_or_else(|| StorageError::Corrupt("short WAL record".into()))?;
        parts.push(ReplayedWrite {
            table_id,
            batches: read_ipc(body)?,
        });
        at += 16 + len;
    }
    Ok(parts)
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

/// One table's part of a record read back during recovery.
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
            out.extend(decode_payload(payload)?);
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
        wal.append(&[encode_frame(&[(7, &batch(3))]).expect("frame")])
            .expect("append");
        let torn = encode_frame(&[(7, &batch(5))]).expect("frame");
        wal.append(&[torn[..torn.len() / 2].to_vec()])
            .expect("append");
        let replayed = replay(dir.path(), 0).expect("replay");
        assert_eq!(replayed.len(), 1);
        assert_eq!(replayed[0].table_id, 7);
        assert_eq!(replayed[0].batches[0].num_rows(), 3);
    }

    #[test]
    fn a_write_to_several_tables_is_one_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::open(dir.path(), 0).expect("open");
        let (rows, deltas) = (batch(4), batch(2));
        wal.append(&[encode_frame(&[(3, &rows), (9, &deltas)]).expect("frame")])
            .expect("append");
        let torn = encode_frame(&[(3, &batch(6)), (9, &batch(1))]).expect("frame");
        wal.append(&[torn[..torn.len() - 3].to_vec()])
            .expect("append");
        let replayed = replay(dir.path(), 0).expect("replay");
        let parts: Vec<(u64, usize)> = replayed
            .iter()
            .map(|w| (w.table_id, w.batches[0].num_rows()))
            .collect();
        assert_eq!(parts, vec![(3, 4), (9, 2)]);
    }

    #[test]
    fn flushed_segments_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::open(dir.path(), 0).expect("open");
        wal.append(&[encode_frame(&[(1, &batch(1))]).expect("frame")])
            .expect("append");
        let closed = wal.rotate().expect("rotate");
        wal.append(&[encode_frame(&[(1, &batch(2))]).expect("frame")])
            .expect("append");
        let replayed = replay(dir.path(), closed).expect("replay");
        assert_eq!(replayed.len(), 1);
        assert_eq!(replayed[0].batches[0].num_rows(), 2);
        wal.remove_through(closed).expect("remove");
        assert_eq!(segment_ids(dir.path()).expect("ids").len(), 1);
    }
}
