//! PostgreSQL's binary `COPY` format, as `COPY ... FROM` reads it: an
//! 11-byte signature, flags and a header extension, then tuples (a 16-bit
//! field count, each field a 32-bit length, -1 for NULL, and its bytes in
//! the type's binary send format, big-endian), then a -1 trailer. psycopg's
//! `copy.write_row` in binary mode and pgjdbc's bulk loaders send it.

use crate::error::SqlState;
use crate::error::{QueryError, Result};

/// The first bytes of every binary COPY stream.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Flags bit 16: OIDs included in each tuple (PostgreSQL 12 dropped them).
const WITH_OIDS: u32 = 1 << 16;

/// The largest field PostgreSQL accepts (1 GB); a longer length is not
/// waited for, so a bad length cannot make the server buffer without end.
const MAX_FIELD: i32 = (1 << 30) - 1;

/// Microseconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
pub(super) const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Days from 1970-01-01 to 2000-01-01.
pub(super) const PG_EPOCH_DAYS: i32 = 10_957;

/// Where the reader stands in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    Header,
    Tuples,
    /// After the trailer.
    Done,
}

fn format_error(message: impl Into<String>) -> QueryError {
    QueryError::new(SqlState::BadCopyFileFormat, message)
}

/// Reads what `data` completely holds, calling `row` with the fields of
/// each tuple; returns how many bytes were consumed (a partial tuple is left
/// for the next call).
pub(super) fn read(
    data: &[u8],
    stage: &mut Stage,
    columns: usize,
    mut row: impl FnMut(&[Option<&[u8]>]) -> Result<()>,
) -> Result<usize> {
    let mut at = 0;
    if *stage == Stage::Header {
        match header_len(data)? {
            Some(n) => {
                at = n;
                *stage = Stage::Tuples;
            }
            None => return Ok(0),
        }
    }
    let mut fields: Vec<Option<&[u8]>> = Vec::with_capacity(columns);
    while *stage == Stage::Tuples {
        let Some(count) = data.get(at..at + 2) else {
            break;
        };
        let count = i16::from_be_bytes([count[0], count[1]]);
        if count == -1 {
            *stage = Stage::Done;
            at += 2;
            break;
        }
        if usize::try_from(count).ok() != Some(columns) {
            return Err(format_error(format!(
                "row field count is {count}, expected {columns}"
            )));
        }
        let mut next = at + 2;
        fields.clear();
        let mut complete = true;
        for _ in 0..columns {
            let Some(len) = data.get(next..next + 4) else {
                complete = false;
                break;
            };
            let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            next += 4;
            if len == -1 {
                fields.push(None);
                continue;
            }
            if !(0..=MAX_FIELD).contains(&len) {
                return Err(format_error(format!("invalid field size {len}")));
            }
            let end = next + len as usize;
            let Some(value) = data.get(next..end) else {
                complete = false;
                break;
            };
            fields.push(Some(value));
            next = end;
        }
        if !complete {
            break;
        }
        row(&fields)?;
        at = next;
    }
    if *stage == Stage::Done && data.len() > at {
        return Err(format_error("received copy data after EOF marker"));
    }
    Ok(at)
}

/// The header's length once `data` holds all of it.
fn header_len(data: &[u8]) -> Result<Option<usize>> {
    let prefix = data.len().min(SIGNATURE.len());
    if data[..prefix] != SIGNATURE[..prefix] {
        return Err(format_error("COPY file signature not recognized"));
    }
    let Some(fixed) = data.get(SIGNATURE.len()..SIGNATURE.len() + 8) else {
        return Ok(None);
    };
    let flags = u32::from_be_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]);
    if flags & WITH_OIDS != 0 {
        return Err(format_error(
            "invalid COPY file header (WITH OIDS): OIDs are not supported",
        ));
    }
    if flags & 0xffff != 0 {
        return Err(format_error(
            "unrecognized critical flags in COPY file header",
        ));
    }
    let extension = i32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let Ok(extension) = usize::try_from(extension) else {
        return Err(format_error("invalid COPY file header (missing length)"));
    };
    let total = SIGNATURE.len() + 8 + extension;
    Ok((data.len() >= total).then_some(total))
}

/// What is wrong with one binary field.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FieldError {
    /// Fewer bytes than the type's binary form (PostgreSQL reports it as a
    /// protocol violation: the receive function ran out of message).
    Short,
    /// More bytes than the type's binary form, or not its layout.
    Format,
    /// Text that is not UTF-8 or holds a NUL byte.
    Encoding,
    /// A number the column cannot hold (a small integer too big).
    OutOfRange,
    /// A date or time Arrow cannot hold (`infinity`, past the range).
    TimeOutOfRange,
}

impl FieldError {
    pub(super) fn sqlstate(&self) -> SqlState {
        match self {
            FieldError::Short => SqlState::ProtocolViolation,
            FieldError::Format => SqlState::InvalidBinaryRepresentation,
            FieldError::Encoding => SqlState::CharacterNotInRepertoire,
            FieldError::OutOfRange => SqlState::NumericValueOutOfRange,
            FieldError::TimeOutOfRange => SqlState::DatetimeFieldOverflow,
        }
    }
}

/// A big-endian integer of exactly `N` bytes.
pub(super) fn be<const N: usize>(v: &[u8]) -> std::result::Result<[u8; N], FieldError> {
    match v.len().cmp(&N) {
        std::cmp::Ordering::Less => Err(FieldError::Short),
        std::cmp::Ordering::Greater => Err(FieldError::Format),
        std::cmp::Ordering::Equal => v.try_into().map_err(|_| FieldError::Format),
    }
}

/// A one-dimensional `float4[]` or `float8[]` in PostgreSQL's binary array
/// form: dimensions, a has-NULL flag, the element type, each dimension's
/// length and lower bound, then each element's length and bytes.
pub(super) fn float_array(v: &[u8]) -> std::result::Result<Vec<Option<f64>>, FieldError> {
    let int = |at: usize| -> std::result::Result<i32, FieldError> {
        let bytes = v.get(at..at + 4).ok_or(FieldError::Short)?;
        Ok(i32::from_be_bytes(be::<4>(bytes)?))
    };
    let dims = int(0)?;
    let element = int(8)? as u32;
    let width: usize = match element {
        700 => 4,
        701 => 8,
        _ => return Err(FieldError::Format),
    };
    let (count, mut at) = match dims {
        0 => (0usize, 12),
        1 => (
            usize::try_from(int(12)?).map_err(|_| FieldError::Format)?,
            20,
        ),
        _ => return Err(FieldError::Format),
    };
    // Each element takes at least its 4-byte length: refuse a count the
    // bytes cannot hold before allocating for it.
    if count > v.len().saturating_sub(at) / 4 {
        return Err(FieldError::Short);
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let len = int(at)?;
        at += 4;
        if len == -1 {
            out.push(None);
            continue;
        }
        if usize::try_from(len).ok() != Some(width) {
            return Err(FieldError::Format);
        }
        let bytes = v.get(at..at + width).ok_or(FieldError::Short)?;
        at += width;
        out.push(Some(match width {
            4 => f64::from(f32::from_be_bytes(be::<4>(bytes)?)),
            _ => f64::from_be_bytes(be::<8>(bytes)?),
        }));
    }
    if at != v.len() {
        return Err(FieldError::Format);
    }
    Ok(out)
}

/// Text as the binary format sends it (the bytes, no terminator).
pub(super) fn text(v: &[u8]) -> std::result::Result<&str, FieldError> {
    if v.contains(&0) {
        return Err(FieldError::Encoding);
    }
    std::str::from_utf8(v).map_err(|_| FieldError::Encoding)
}

/// Microseconds since 1970 of a binary `timestamp[tz]`; PostgreSQL's
/// `infinity` and `-infinity` have no place in an Arrow timestamp.
pub(super) fn timestamp(v: &[u8]) -> std::result::Result<i64, FieldError> {
    let micros = i64::from_be_bytes(be::<8>(v)?);
    if micros == i64::MAX || micros == i64::MIN {
        return Err(FieldError::TimeOutOfRange);
    }
    micros
        .checked_add(PG_EPOCH_MICROS)
        .ok_or(FieldError::TimeOutOfRange)
}

/// Days since 1970 of a binary `date`.
pub(super) fn date(v: &[u8]) -> std::result::Result<i32, FieldError> {
    let days = i32::from_be_bytes(be::<4>(v)?);
    if days == i32::MAX || days == i32::MIN {
        return Err(FieldError::TimeOutOfRange);
    }
    days.checked_add(PG_EPOCH_DAYS)
        .ok_or(FieldError::TimeOutOfRange)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(rows: &[Vec<Option<&[u8]>>], trailer: bool) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&4i32.to_be_bytes());
        out.extend_from_slice(b"ext!");
        for row in rows {
            out.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for f in row {
                match f {
                    Some(v) => {
                        out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                        out.extend_from_slice(v);
                    }
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
        }
        if trailer {
            out.extend_from_slice(&(-1i16).to_be_bytes());
        }
        out
    }

    type Rows = Vec<Vec<Option<Vec<u8>>>>;

    fn read_all(data: &[u8], step: usize) -> Result<(Rows, Stage)> {
        let mut stage = Stage::Header;
        let mut pending = Vec::new();
        let mut rows = Vec::new();
        for chunk in data.chunks(step) {
            pending.extend_from_slice(chunk);
            let used = read(&pending, &mut stage, 2, |f| {
                rows.push(f.iter().map(|v| v.map(<[u8]>::to_vec)).collect());
                Ok(())
            })?;
            pending.drain(..used);
        }
        assert!(pending.is_empty() || stage != Stage::Done);
        Ok((rows, stage))
    }

    #[test]
    fn tuples_split_anywhere_read_the_same() {
        let data = stream(
            &[
                vec![Some(b"abc".as_slice()), None],
                vec![Some(b"".as_slice()), Some(&7i64.to_be_bytes())],
            ],
            true,
        );
        for step in [1, 2, 3, 7, 19, data.len()] {
            let (rows, stage) = read_all(&data, step).expect("read");
            assert_eq!(stage, Stage::Done, "step {step}");
            assert_eq!(rows.len(), 2);
            assert_eq!(rows[0], vec![Some(b"abc".to_vec()), None]);
            assert_eq!(rows[1][1], Some(7i64.to_be_bytes().to_vec()));
        }
    }

    #[test]
    fn malformed_streams_are_refused() {
        let code = |data: &[u8]| read_all(data, data.len()).unwrap_err().sqlstate();
        assert_eq!(code(b"PGCOPY\nXXXXXXXXXXXX"), "22P04");
        let mut oids = stream(&[], true);
        oids[11..15].copy_from_slice(&WITH_OIDS.to_be_bytes());
        assert_eq!(code(&oids), "22P04");
        let three = stream(&[vec![None, None, None]], true);
        assert_eq!(code(&three), "22P04");
        let mut after = stream(&[], true);
        after.push(0);
        assert_eq!(code(&after), "22P04");
        let mut negative = stream(&[], false);
        negative.extend_from_slice(&2i16.to_be_bytes());
        negative.extend_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(code(&negative), "22P04");
    }

    #[test]
    fn values_decode_from_postgres_epoch() {
        assert_eq!(timestamp(&0i64.to_be_bytes()), Ok(PG_EPOCH_MICROS));
        assert_eq!(
            timestamp(&i64::MAX.to_be_bytes()),
            Err(FieldError::TimeOutOfRange)
        );
        assert_eq!(timestamp(&[0; 4]), Err(FieldError::Short));
        assert_eq!(timestamp(&[0; 9]), Err(FieldError::Format));
        assert_eq!(date(&(-1i32).to_be_bytes()), Ok(PG_EPOCH_DAYS - 1));
        assert_eq!(text(b"a\0b"), Err(FieldError::Encoding));
        assert_eq!(text(&[0xff]), Err(FieldError::Encoding));
    }
}
