//! `COPY` data in Postgres's text and CSV formats: decoding into Arrow
//! batches (with errors that name the line and column) and encoding rows;
//! the binary format is decoded too (`binary.rs`).

mod binary;

use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float32Builder,
    Float64Builder, Int8Builder, Int16Builder, Int32Builder, Int64Builder, ListBuilder,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use chrono::{DateTime, NaiveDate, NaiveDateTime};

use crate::error::SqlState;
use crate::error::{QueryError, Result};
use crate::format::{parse_float_array, pg_type_name, write_value};
use binary::FieldError;

/// Rows per decoded batch.
const BATCH_ROWS: usize = 64 * 1024;

/// Bytes of COPY data gathered before they are decoded.
const DECODE_BYTES: usize = 256 * 1024;

/// The longest record a COPY may send: an incomplete record is held in
/// memory until its end arrives, so a client cannot make it grow without
/// bound (PostgreSQL's own limit is 1 GB a line).
const MAX_RECORD_BYTES: usize = 64 << 20;

/// Data format of a `COPY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    /// Tab-separated, backslash escapes, `\N` for NULL (Postgres's default).
    Text,
    /// Comma-separated with quotes.
    Csv,
    /// Parquet files (server-side files only).
    Parquet,
    /// PostgreSQL's binary format (`COPY ... FROM` only).
    Binary,
}

/// Options of a `COPY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFormat {
    /// The format.
    pub kind: CopyKind,
    /// First line is a header (CSV).
    pub header: bool,
    /// Field separator.
    pub delimiter: u8,
    /// Text that stands for NULL.
    pub null: String,
    /// Quote character (CSV).
    pub quote: u8,
    /// Escape character inside quotes (CSV).
    pub escape: u8,
}

impl CopyFormat {
    /// Postgres's defaults for `kind`.
    pub fn new(kind: CopyKind) -> Self {
        match kind {
            CopyKind::Csv => CopyFormat {
                kind,
                header: false,
                delimiter: b',',
                null: String::new(),
                quote: b'"',
                escape: b'"',
            },
            _ => CopyFormat {
                kind,
                header: false,
                delimiter: b'\t',
                null: "\\N".to_string(),
                quote: b'"',
                escape: b'"',
            },
        }
    }
}

enum ColumnBuilder {
    Bool(BooleanBuilder),
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder, Option<Arc<str>>),
    /// `real[]`, `double precision[]`, `vector(n)`: built as lists of
    /// doubles, cast to the column's type (its length, when it has one, is
    /// checked value by value).
    Floats(ListBuilder<Float64Builder>, DataType, Option<usize>),
}

impl ColumnBuilder {
    fn new(dt: &DataType) -> Result<Self> {
        Ok(match dt {
            DataType::Boolean => ColumnBuilder::Bool(BooleanBuilder::new()),
            DataType::Int8 => ColumnBuilder::I8(Int8Builder::new()),
            DataType::Int16 => ColumnBuilder::I16(Int16Builder::new()),
            DataType::Int32 => ColumnBuilder::I32(Int32Builder::new()),
            DataType::Int64 => ColumnBuilder::I64(Int64Builder::new()),
            DataType::Float32 => ColumnBuilder::F32(Float32Builder::new()),
            DataType::Float64 => ColumnBuilder::F64(Float64Builder::new()),
            DataType::Utf8 => ColumnBuilder::Text(StringBuilder::new()),
            DataType::Binary => ColumnBuilder::Bytes(BinaryBuilder::new()),
            DataType::Date32 => ColumnBuilder::Date(Date32Builder::new()),
            DataType::Timestamp(TimeUnit::Microsecond, tz) => ColumnBuilder::Timestamp(
                TimestampMicrosecondBuilder::new(),
                tz.as_ref().map(|t| Arc::from(t.as_ref())),
            ),
            DataType::List(item) | DataType::FixedSizeList(item, _)
                if matches!(item.data_type(), DataType::Float32 | DataType::Float64) =>
            {
                let size = match dt {
                    DataType::FixedSizeList(_, n) => usize::try_from(*n).ok(),
                    _ => None,
                };
                ColumnBuilder::Floats(ListBuilder::new(Float64Builder::new()), dt.clone(), size)
            }
            other => {
                return Err(QueryError::unsupported(format!(
                    "COPY FROM into a column of type {other} is not supported"
                )));
            }
        })
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::I8(b) => b.append_null(),
            ColumnBuilder::I16(b) => b.append_null(),
            ColumnBuilder::I32(b) => b.append_null(),
            ColumnBuilder::I64(b) => b.append_null(),
            ColumnBuilder::F32(b) => b.append_null(),
            ColumnBuilder::F64(b) => b.append_null(),
            ColumnBuilder::Text(b) => b.append_null(),
            ColumnBuilder::Bytes(b) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Timestamp(b, _) => b.append_null(),
            ColumnBuilder::Floats(b, _, _) => b.append_null(),
        }
    }

    /// Appends a parsed value; `Err(())` if the text is not of the type.
    fn append_text(&mut self, s: &str) -> std::result::Result<(), ()> {
        match self {
            ColumnBuilder::Bool(b) => b.append_value(parse_bool(s)?),
            ColumnBuilder::I8(b) => b.append_value(s.trim().parse().map_err(drop)?),
            ColumnBuilder::I16(b) => b.append_value(s.trim().parse().map_err(drop)?),
            ColumnBuilder::I32(b) => b.append_value(s.trim().parse().map_err(drop)?),
            ColumnBuilder::I64(b) => b.append_value(s.trim().parse().map_err(drop)?),
            ColumnBuilder::F32(b) => b.append_value(parse_float(s)? as f32),
            ColumnBuilder::F64(b) => b.append_value(parse_float(s)?),
            ColumnBuilder::Text(b) => b.append_value(s),
            ColumnBuilder::Bytes(b) => b.append_value(parse_bytea(s)?),
            ColumnBuilder::Date(b) => {
                let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(drop)?;
                b.append_value(
                    (d - NaiveDate::from_ymd_opt(1970, 1, 1).ok_or(())?).num_days() as i32,
                )
            }
            ColumnBuilder::Timestamp(b, _) => b.append_value(parse_timestamp_micros(s).ok_or(())?),
            ColumnBuilder::Floats(b, _, size) => {
                let values = parse_float_array(s).map_err(drop)?;
                if size.is_some_and(|n| n != values.len()) {
                    return Err(());
                }
                b.append_value(values);
            }
        }
        Ok(())
    }

    /// Appends a value in PostgreSQL's binary send format; `jsonb` says
    /// the column is `jsonb`, whose binary form is a version byte, then text.
    fn append_binary(&mut self, v: &[u8], jsonb: bool) -> std::result::Result<(), FieldError> {
        match self {
            ColumnBuilder::Bool(b) => b.append_value(binary::be::<1>(v)?[0] != 0),
            ColumnBuilder::I8(b) => b.append_value(match v {
                [one] => *one as i8,
                _ => i8::try_from(i16::from_be_bytes(binary::be::<2>(v)?))
                    .map_err(|_| FieldError::OutOfRange)?,
            }),
            ColumnBuilder::I16(b) => b.append_value(i16::from_be_bytes(binary::be::<2>(v)?)),
            ColumnBuilder::I32(b) => b.append_value(i32::from_be_bytes(binary::be::<4>(v)?)),
            ColumnBuilder::I64(b) => b.append_value(i64::from_be_bytes(binary::be::<8>(v)?)),
            ColumnBuilder::F32(b) => b.append_value(f32::from_be_bytes(binary::be::<4>(v)?)),
            ColumnBuilder::F64(b) => b.append_value(f64::from_be_bytes(binary::be::<8>(v)?)),
            ColumnBuilder::Text(b) if jsonb => match v.split_first() {
                Some((1, rest)) => b.append_value(binary::text(rest)?),
                _ => return Err(FieldError::Format),
            },
            ColumnBuilder::Text(b) => b.append_value(binary::text(v)?),
            ColumnBuilder::Bytes(b) => b.append_value(v),
            ColumnBuilder::Date(b) => b.append_value(binary::date(v)?),
            ColumnBuilder::Timestamp(b, _) => b.append_value(binary::timestamp(v)?),
            ColumnBuilder::Floats(b, _, size) => {
                let values = binary::float_array(v)?;
                if size.is_some_and(|n| n != values.len()) {
                    return Err(FieldError::Format);
                }
                b.append_value(values);
            }
        }
        Ok(())
    }

    /// Builds the column's array and leaves room for as many rows (and
    /// text bytes) as it held: a builder growing from empty for every
    /// batch copied its buffers again at each doubling.
    fn finish(&mut self) -> Result<ArrayRef> {
        fn primitive<T: arrow::datatypes::ArrowPrimitiveType>(
            b: &mut arrow::array::PrimitiveBuilder<T>,
        ) -> arrow::array::PrimitiveArray<T> {
            let a = b.finish();
            *b = arrow::array::PrimitiveBuilder::with_capacity(a.len());
            a
        }
        Ok(match self {
            ColumnBuilder::Bool(b) => {
                let a = b.finish();
                *b = BooleanBuilder::with_capacity(a.len());
                Arc::new(a)
            }
            ColumnBuilder::I8(b) => Arc::new(primitive(b)),
            ColumnBuilder::I16(b) => Arc::new(primitive(b)),
            ColumnBuilder::I32(b) => Arc::new(primitive(b)),
            ColumnBuilder::I64(b) => Arc::new(primitive(b)),
            ColumnBuilder::F32(b) => Arc::new(primitive(b)),
            ColumnBuilder::F64(b) => Arc::new(primitive(b)),
            ColumnBuilder::Text(b) => {
                let a = b.finish();
                *b = StringBuilder::with_capacity(a.len(), a.value_data().len());
                Arc::new(a)
            }
            ColumnBuilder::Bytes(b) => {
                let a = b.finish();
                *b = BinaryBuilder::with_capacity(a.len(), a.value_data().len());
                Arc::new(a)
            }
            ColumnBuilder::Date(b) => Arc::new(primitive(b)),
            ColumnBuilder::Timestamp(b, tz) => Arc::new(primitive(b).with_timezone_opt(tz.clone())),
            ColumnBuilder::Floats(b, target, _) => arrow::compute::cast(&b.finish(), target)
                .map_err(|e| QueryError::new(SqlState::InvalidTextRepresentation, e.to_string()))?,
        })
    }

    fn len(&self) -> usize {
        match self {
            ColumnBuilder::Bool(b) => b.len(),
            ColumnBuilder::I8(b) => b.len(),
            ColumnBuilder::I16(b) => b.len(),
            ColumnBuilder::I32(b) => b.len(),
            ColumnBuilder::I64(b) => b.len(),
            ColumnBuilder::F32(b) => b.len(),
            ColumnBuilder::F64(b) => b.len(),
            ColumnBuilder::Text(b) => b.len(),
            ColumnBuilder::Bytes(b) => b.len(),
            ColumnBuilder::Date(b) => b.len(),
            ColumnBuilder::Timestamp(b, _) => b.len(),
            ColumnBuilder::Floats(b, _, _) => b.len(),
        }
    }
}

fn parse_bool(s: &str) -> std::result::Result<bool, ()> {
    match s.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Ok(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Ok(false),
        _ => Err(()),
    }
}

fn parse_float(s: &str) -> std::result::Result<f64, ()> {
    let t = s.trim();
    // Numbers, nearly every value, parse without the lowercased copy the
    // spelled-out values need.
    if t.bytes()
        .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
    {
        return t.parse().map_err(drop);
    }
    match t.to_ascii_lowercase().as_str() {
        "nan" => Ok(f64::NAN),
        "infinity" | "+infinity" | "inf" => Ok(f64::INFINITY),
        "-infinity" | "-inf" => Ok(f64::NEG_INFINITY),
        _ => t.parse().map_err(drop),
    }
}

fn parse_bytea(s: &str) -> std::result::Result<Vec<u8>, ()> {
    let Some(hex) = s.strip_prefix("\\x") else {
        return Ok(s.as_bytes().to_vec());
    };
    if hex.len() % 2 != 0 {
        return Err(());
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(drop))
        .collect()
}

/// Parses the timestamp spellings Postgres accepts in ISO style: a date, a
/// `T` or space, a time with optional fraction, and an optional zone
/// (`Z`, `+00`, `+05:30`, `+0530`). A value without zone is UTC.
pub fn parse_timestamp_micros(s: &str) -> Option<i64> {
    parse_iso_timestamp_micros(s).or_else(|| parse_any_timestamp_micros(s))
}

/// The spelling clients send nearly always, `YYYY-MM-DD HH:MM[:SS[.f]]`
/// (or `T`) with an optional `Z`/`+HH`/`+HH:MM`/`+HHMM` zone, read without
/// a format parser. `None` leaves anything else (and leap seconds) to
/// [`parse_any_timestamp_micros`], which agrees wherever this answers.
fn parse_iso_timestamp_micros(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let number = |at: usize, len: usize| -> Option<u32> {
        b.get(at..at + len)?.iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    if b.len() < 16
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b' ' | b'T')
        || b[13] != b':'
    {
        return None;
    }
    let (year, month, day) = (number(0, 4)?, number(5, 2)?, number(8, 2)?);
    let (hour, minute) = (number(11, 2)?, number(14, 2)?);
    let (mut second, mut micros, mut at) = (0, 0i64, 16);
    if b.get(at) == Some(&b':') {
        second = number(at + 1, 2)?;
        at += 3;
        if b.get(at) == Some(&b'.') {
            at += 1;
            let start = at;
            while b.get(at).is_some_and(u8::is_ascii_digit) {
                at += 1;
            }
            let digits = at - start;
            if digits == 0 || digits > 9 {
                return None;
            }
            micros = fraction_micros(&b[start..at])?;
        }
    }
    let offset_minutes = match &b[at..] {
        [] | [b'Z'] => 0,
        [sign @ (b'+' | b'-'), zone @ ..] => {
            let (h, m) = match zone.len() {
                2 => (number(at + 1, 2)?, 0),
                4 => (number(at + 1, 2)?, number(at + 3, 2)?),
                5 if zone[2] == b':' => (number(at + 1, 2)?, number(at + 4, 2)?),
                _ => return None,
            };
            let minutes = i64::from(h * 60 + m);
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return None,
    };
    if second >= 60 {
        return None;
    }
    let time = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?
        .and_hms_opt(hour, minute, second)?;
    Some(time.and_utc().timestamp() * 1_000_000 + micros - offset_minutes * 60_000_000)
}

/// Microseconds of the fraction of a second whose digits (after the point)
/// are given, rounded as Postgres rounds them: `rint(strtod(".digits") *
/// 1e6)`, to the nearest, ties to even on the double (`.9999996` is a whole
/// second).
fn fraction_micros(digits: &[u8]) -> Option<i64> {
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits.len() <= 6 {
        let value = digits
            .iter()
            .fold(0i64, |n, c| n * 10 + i64::from(c - b'0'));
        return Some(value * 10i64.pow(6 - digits.len() as u32));
    }
    let fraction: f64 = format!("0.{}", std::str::from_utf8(digits).ok()?)
        .parse()
        .ok()?;
    Some((fraction * 1e6).round_ties_even() as i64)
}

/// The digits after the decimal point of an ISO timestamp's seconds.
fn fraction_digits(t: &str) -> &[u8] {
    let b = t.as_bytes();
    let Some(point) = b.iter().skip(10).position(|&c| c == b'.') else {
        return &[];
    };
    let start = 10 + point + 1;
    let len = b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
    &b[start..start + len]
}

/// Every ISO spelling [`parse_timestamp_micros`] takes.
fn parse_any_timestamp_micros(s: &str) -> Option<i64> {
    let t = s.trim();
    let fraction = fraction_micros(fraction_digits(t))?;
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.timestamp() * 1_000_000 + fraction);
    }
    // The date and time may be joined by a `T` (not the one of `UTC`).
    let t = match t.as_bytes().get(10) {
        Some(b'T') => format!("{} {}", &t[..10], &t[11..]),
        _ => t.to_string(),
    };
    let (body, zone) = split_zone(&t);
    let naive = NaiveDateTime::parse_from_str(body, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(body, "%Y-%m-%d %H:%M"))
        .or_else(|_| {
            NaiveDate::parse_from_str(body, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
        })
        .ok()?;
    let offset = match zone {
        None => 0,
        Some(z) => parse_offset_secs(z)?,
    };
    Some(naive.and_utc().timestamp() * 1_000_000 + fraction - offset * 1_000_000)
}

fn split_zone(t: &str) -> (&str, Option<&str>) {
    let t = t.trim();
    if let Some(body) = t
        .strip_suffix('Z')
        .or_else(|| t.strip_suffix(" UTC"))
        .or_else(|| t.strip_suffix("UTC"))
    {
        return (body.trim(), Some("+00"));
    }
    // A zone starts at the last '+' or '-' after the time part.
    if let Some(space) = t.find(' ')
        && let Some(pos) = t[space..].rfind(['+', '-'])
    {
        let pos = space + pos;
        return (t[..pos].trim(), Some(&t[pos..]));
    }
    (t, None)
}

fn parse_offset_secs(z: &str) -> Option<i64> {
    let sign = if z.starts_with('-') { -1 } else { 1 };
    let digits: String = z[1..].chars().filter(|c| c.is_ascii_digit()).collect();
    let (h, m) = match digits.len() {
        1 | 2 => (digits.parse::<i64>().ok()?, 0),
        4 => (
            digits[..2].parse::<i64>().ok()?,
            digits[2..].parse::<i64>().ok()?,
        ),
        _ => return None,
    };
    Some(sign * (h * 3600 + m * 60))
}

/// Incremental decoder of `COPY ... FROM` data: feed chunks as they arrive,
/// then `finish`. Nothing is written anywhere; the caller commits the
/// batches as one unit.
pub struct CopyDecoder {
    format: CopyFormat,
    schema: SchemaRef,
    table: String,
    pending: Vec<u8>,
    /// `pending`'s length at which to try decoding again: an incomplete
    /// record is not searched again until more of it has arrived.
    decode_at: usize,
    line: usize,
    header_pending: bool,
    done: bool,
    builders: Vec<ColumnBuilder>,
    /// Which columns are `jsonb` (their binary form has a version byte).
    jsonb: Vec<bool>,
    /// Where a binary stream stands.
    stage: binary::Stage,
    batches: Vec<RecordBatch>,
    rows: u64,
}

impl CopyDecoder {
    /// A decoder for rows of `schema` (the target columns, in order).
    pub fn new(table: &str, schema: SchemaRef, format: CopyFormat) -> Result<Self> {
        let builders = schema
            .fields()
            .iter()
            .map(|f| ColumnBuilder::new(f.data_type()))
            .collect::<Result<Vec<_>>>()?;
        let jsonb = schema
            .fields()
            .iter()
            .map(|f| crate::json::json_kind(f) == Some(crate::json::JsonKind::Jsonb))
            .collect();
        Ok(CopyDecoder {
            jsonb,
            stage: binary::Stage::Header,
            header_pending: format.header,
            format,
            schema,
            table: table.to_string(),
            pending: Vec::new(),
            decode_at: DECODE_BYTES,
            line: 0,
            done: false,
            builders,
            batches: Vec::new(),
            rows: 0,
        })
    }

    /// Rows decoded so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Takes `chunk`, decoding what is complete once enough has arrived
    /// (clients send a message per line; decoding them together saves the
    /// per-call work).
    pub fn push(&mut self, chunk: &[u8]) -> Result<()> {
        self.pending.extend_from_slice(chunk);
        if self.pending.len() < self.decode_at {
            return Ok(());
        }
        let before = self.pending.len();
        if self.format.kind == CopyKind::Binary {
            self.push_binary()?;
        } else if let Some(end) = self.last_record_end() {
            let mut data = std::mem::take(&mut self.pending);
            self.decode(&data[..end])?;
            // The incomplete rest moves to the front; the buffer keeps its
            // capacity instead of growing again from the rest's size.
            data.drain(..end);
            self.pending = data;
        }
        if self.pending.len() > MAX_RECORD_BYTES {
            return Err(QueryError::new(
                SqlState::ProgramLimitExceeded,
                format!(
                    "COPY record longer than {} MiB (COPY {}, line {})",
                    MAX_RECORD_BYTES >> 20,
                    self.table,
                    self.line + 1
                ),
            ));
        }
        // A record still incomplete is searched again only once the data
        // held has doubled, so a long one costs linear time, not quadratic.
        let grown = if self.pending.len() == before {
            before
        } else {
            0
        };
        self.decode_at = (self.pending.len() + DECODE_BYTES)
            .max(2 * grown)
            .min(MAX_RECORD_BYTES + 1);
        Ok(())
    }

    /// The batches completed so far (each of [`BATCH_ROWS`] rows).
    pub fn take_batches(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.batches)
    }

    /// Decodes what is left and returns the batches not taken yet.
    pub fn finish(mut self) -> Result<Vec<RecordBatch>> {
        self.end()
    }

    /// [`CopyDecoder::finish`] for a decoder that stays in place; the data
    /// has ended, so nothing more may be pushed.
    pub fn end(&mut self) -> Result<Vec<RecordBatch>> {
        if self.format.kind == CopyKind::Binary {
            self.push_binary()?;
        }
        let rest = std::mem::take(&mut self.pending);
        if self.format.kind == CopyKind::Binary {
            match self.stage {
                binary::Stage::Header => {
                    return Err(QueryError::new(
                        SqlState::BadCopyFileFormat,
                        "COPY file signature not recognized",
                    ));
                }
                binary::Stage::Tuples if !rest.is_empty() => {
                    return Err(QueryError::new(
                        SqlState::BadCopyFileFormat,
                        format!(
                            "unexpected EOF in COPY data (COPY {}, row {})",
                            self.table,
                            self.line + 1
                        ),
                    ));
                }
                _ => {}
            }
        } else if !rest.is_empty() {
            self.decode(&rest)?;
        }
        self.flush_batch()?;
        Ok(std::mem::take(&mut self.batches))
    }

    /// End (exclusive) of the last complete record in `pending`.
    fn last_record_end(&self) -> Option<usize> {
        match self.format.kind {
            CopyKind::Csv => {
                // A newline ends a record where the quotes before it pair
                // up; counted from the end, only the last record is read.
                let quote = self.format.quote;
                let total = self.pending.iter().filter(|b| **b == quote).count();
                let mut after = 0;
                for (i, b) in self.pending.iter().enumerate().rev() {
                    if *b == quote {
                        after += 1;
                    } else if *b == b'\n' && (total - after) % 2 == 0 {
                        return Some(i + 1);
                    }
                }
                None
            }
            _ => self
                .pending
                .iter()
                .rposition(|b| *b == b'\n')
                .map(|i| i + 1),
        }
    }

    fn decode(&mut self, data: &[u8]) -> Result<()> {
        let text = std::str::from_utf8(data).map_err(|e| {
            QueryError::new(
                SqlState::CharacterNotInRepertoire,
                format!(
                    "invalid byte sequence for encoding \"UTF8\" near line {}: {e}",
                    self.line + 1
                ),
            )
        })?;
        if let Some(at) = text.find('\0') {
            let line = self.line + 1 + text[..at].matches('\n').count();
            return Err(nul_byte(line));
        }
        let mut fields: Vec<Option<std::borrow::Cow<'_, str>>> =
            Vec::with_capacity(self.schema.fields().len());
        let mut rest = text;
        while !rest.is_empty() && !self.done {
            let (record_end, next) = match self.format.kind {
                CopyKind::Csv => csv_record_end(rest, self.format.quote),
                _ => match rest.find('\n') {
                    Some(i) => (i, i + 1),
                    None => (rest.len(), rest.len()),
                },
            };
            let mut record = &rest[..record_end];
            rest = &rest[next..];
            self.line += 1;
            if let Some(r) = record.strip_suffix('\r') {
                record = r;
            }
            if record == "\\." {
                self.done = true;
                break;
            }
            if self.header_pending {
                self.header_pending = false;
                continue;
            }
            if record.is_empty() && self.schema.fields().len() > 1 {
                continue;
            }
            fields.clear();
            let split = match self.format.kind {
                CopyKind::Csv => split_csv(record, &self.format, &mut fields),
                _ => split_text(record, &self.format, &mut fields),
            };
            split.map_err(|e| e.at(&self.table, self.line))?;
            self.append_record(&fields)?;
        }
        Ok(())
    }

    /// Decodes the complete tuples of a binary stream.
    fn push_binary(&mut self) -> Result<()> {
        let mut data = std::mem::take(&mut self.pending);
        let mut stage = self.stage;
        let columns = self.schema.fields().len();
        let used = binary::read(&data, &mut stage, columns, |fields| {
            self.append_binary_record(fields)
        });
        self.stage = stage;
        // Only the consumed tuples leave: a long field arriving in many
        // messages is not copied again with each one.
        data.drain(..used?);
        self.pending = data;
        Ok(())
    }

    fn null_violation(&self, column: usize) -> QueryError {
        let field = self.schema.field(column);
        QueryError::new(
            SqlState::NotNullViolation,
            format!(
                "null value in column \"{}\" of relation \"{}\" violates not-null constraint (COPY {}, line {})",
                field.name(),
                self.table,
                self.table,
                self.line
            ),
        )
    }

    fn append_binary_record(&mut self, fields: &[Option<&[u8]>]) -> Result<()> {
        self.line += 1;
        for (i, value) in fields.iter().enumerate() {
            match value {
                None if !self.schema.field(i).is_nullable() => return Err(self.null_violation(i)),
                None => self.builders[i].append_null(),
                Some(v) => {
                    if let Err(e) = self.builders[i].append_binary(v, self.jsonb[i]) {
                        let field = self.schema.field(i);
                        let what = match e {
                            FieldError::Short => "insufficient data left in message",
                            FieldError::Format => "incorrect binary data format",
                            FieldError::Encoding => "invalid byte sequence for encoding \"UTF8\"",
                            FieldError::OutOfRange => "value out of range",
                            FieldError::TimeOutOfRange => "date or timestamp out of range",
                        };
                        return Err(QueryError::new(
                            e.sqlstate(),
                            format!(
                                "{what} for type {} ({} bytes) (COPY {}, row {}, column {})",
                                pg_type_name(field.data_type()),
                                v.len(),
                                self.table,
                                self.line,
                                field.name()
                            ),
                        ));
                    }
                }
            }
        }
        self.row_done()
    }

    fn append_record(&mut self, fields: &[Option<std::borrow::Cow<'_, str>>]) -> Result<()> {
        let expected = self.schema.fields().len();
        if fields.len() != expected {
            let what = if fields.len() < expected {
                "missing data for column"
            } else {
                "extra data after last expected column"
            };
            let column = if fields.len() < expected {
                format!(" \"{}\"", self.schema.field(fields.len()).name())
            } else {
                String::new()
            };
            return Err(QueryError::new(
                SqlState::BadCopyFileFormat,
                format!("{what}{column} (COPY {}, line {})", self.table, self.line),
            ));
        }
        for (i, value) in fields.iter().enumerate() {
            let field = self.schema.field(i);
            match value {
                None => {
                    if !field.is_nullable() {
                        return Err(self.null_violation(i));
                    }
                    self.builders[i].append_null();
                }
                Some(v) => {
                    if self.builders[i].append_text(v).is_err() {
                        let code = if matches!(
                            field.data_type(),
                            DataType::Timestamp(_, _) | DataType::Date32
                        ) {
                            SqlState::InvalidDatetimeFormat
                        } else {
                            SqlState::InvalidTextRepresentation
                        };
                        return Err(QueryError::new(
                            code,
                            format!(
                                "invalid input syntax for type {}: \"{}\" (COPY {}, line {}, column {})",
                                pg_type_name(field.data_type()),
                                v,
                                self.table,
                                self.line,
                                field.name()
                            ),
                        ));
                    }
                }
            }
        }
        self.row_done()
    }

    /// Counts a decoded row; a full batch is finished.
    fn row_done(&mut self) -> Result<()> {
        self.rows += 1;
        if self.builders.first().map_or(0, ColumnBuilder::len) >= BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<()> {
        if self.builders.first().map_or(0, ColumnBuilder::len) == 0 {
            return Ok(());
        }
        let columns: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(ColumnBuilder::finish)
            .collect::<Result<_>>()?;
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)
            .map_err(|e| QueryError::new(SqlState::InternalError, e.to_string()))?;
        self.batches.push(batch);
        Ok(())
    }
}

/// Where a CSV record ends (exclusive) and where the next begins: the
/// first newline outside quotes. Searched with `memchr2`, which skips the
/// bytes between quotes and newlines a vector at a time.
fn csv_record_end(s: &str, quote: u8) -> (usize, usize) {
    let bytes = s.as_bytes();
    let mut in_quotes = false;
    for i in memchr::memchr2_iter(quote, b'\n', bytes) {
        if bytes[i] == quote {
            in_quotes = !in_quotes;
        } else if !in_quotes {
            return (i, i + 1);
        }
    }
    (s.len(), s.len())
}

/// Why a record could not be split into fields.
#[derive(Debug)]
enum SplitError {
    /// An escape made bytes that are not UTF-8.
    Encoding,
    /// An escape made a NUL byte.
    Nul,
    /// A CSV quoted field runs to the end of the data.
    UnterminatedQuote,
}

impl SplitError {
    fn at(self, table: &str, line: usize) -> QueryError {
        match self {
            SplitError::Nul => nul_byte(line),
            SplitError::Encoding => QueryError::new(
                SqlState::CharacterNotInRepertoire,
                format!("invalid byte sequence for encoding \"UTF8\" (COPY {table}, line {line})"),
            ),
            SplitError::UnterminatedQuote => QueryError::new(
                SqlState::BadCopyFileFormat,
                format!("unterminated CSV quoted field (COPY {table}, line {line})"),
            ),
        }
    }
}

fn nul_byte(line: usize) -> QueryError {
    QueryError::new(
        SqlState::CharacterNotInRepertoire,
        format!("invalid byte sequence for encoding \"UTF8\": 0x00 (line {line})"),
    )
}

/// Splits a text-format record at unescaped delimiters and undoes the
/// escapes of each field, as PostgreSQL's COPY does: `\b \f \n \r \t \v`,
/// `\` + one to three octal digits, `\x` + one or two hex digits, and
/// `\` + any other character for that character. The null string is matched
/// before unescaping.
fn split_text<'a>(
    record: &'a str,
    format: &CopyFormat,
    out: &mut Vec<Option<std::borrow::Cow<'a, str>>>,
) -> std::result::Result<(), SplitError> {
    let delim = format.delimiter;
    let bytes = record.as_bytes();
    let mut start = 0;
    let mut escaped = false;
    let mut i = 0;
    while i <= bytes.len() {
        if i == bytes.len() || bytes[i] == delim {
            let raw = &record[start..i];
            out.push(if is_null(raw, &format.null) {
                None
            } else if escaped {
                Some(std::borrow::Cow::Owned(unescape_text(raw)?))
            } else {
                Some(std::borrow::Cow::Borrowed(raw))
            });
            start = i + 1;
            escaped = false;
            i += 1;
        } else if bytes[i] == b'\\' {
            escaped = true;
            // The escaped character is data, even a delimiter.
            i += 1 + record[i + 1..].chars().next().map_or(0, char::len_utf8);
        } else {
            i += 1;
        }
    }
    Ok(())
}

fn unescape_text(raw: &str) -> std::result::Result<String, SplitError> {
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    let bytes = raw.as_bytes();
    let mut i = 0;
    let digits = |from: usize, max: usize, radix: u32| -> (u32, usize) {
        let mut value = 0u32;
        let mut n = 0;
        while n < max
            && let Some(d) = bytes
                .get(from + n)
                .and_then(|b| (*b as char).to_digit(radix))
        {
            value = value * radix + d;
            n += 1;
        }
        (value, n)
    };
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let Some(&next) = bytes.get(i + 1) else {
            out.push(b'\\');
            break;
        };
        i += 2;
        match next {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let (value, n) = digits(i - 1, 3, 8);
                i += n - 1;
                // Like PostgreSQL, only the low byte of \4xx and up is kept.
                out.push((value & 0xff) as u8);
            }
            b'x' => match digits(i, 2, 16) {
                (_, 0) => out.push(b'x'),
                (value, n) => {
                    i += n;
                    out.push(value as u8);
                }
            },
            _ => out.push(next),
        }
    }
    if out.contains(&0) {
        return Err(SplitError::Nul);
    }
    String::from_utf8(out).map_err(|_| SplitError::Encoding)
}

/// Where the field starting at `from` ends: the next delimiter, or the end.
/// `memchr`: fields are short, and `str::find` costs a searcher's set-up
/// and a comparison call for each one (a sixth of a CSV COPY's decoding).
fn field_end(bytes: &[u8], from: usize, delim: u8) -> usize {
    memchr::memchr(delim, &bytes[from..]).map_or(bytes.len(), |k| from + k)
}

/// Whether a field's raw text is the null string, without a comparison
/// call for the common case of lengths that differ or are both zero.
fn is_null(raw: &str, null: &str) -> bool {
    raw.len() == null.len() && (null.is_empty() || raw == null)
}

fn split_csv<'a>(
    record: &'a str,
    format: &CopyFormat,
    out: &mut Vec<Option<std::borrow::Cow<'a, str>>>,
) -> std::result::Result<(), SplitError> {
    let bytes = record.as_bytes();
    let (delim, quote, escape) = (format.delimiter, format.quote, format.escape);
    let mut i = 0;
    loop {
        if i < bytes.len() && bytes[i] == quote {
            // Quoted field: never NULL, even when empty.
            let mut value = String::new();
            let mut j = i + 1;
            let mut start = j;
            let mut closed = false;
            while j < bytes.len() {
                if bytes[j] == escape
                    && escape != quote
                    && j + 1 < bytes.len()
                    && bytes[j + 1] == quote
                {
                    value.push_str(&record[start..j]);
                    value.push(quote as char);
                    j += 2;
                    start = j;
                } else if bytes[j] == quote {
                    if escape == quote && j + 1 < bytes.len() && bytes[j + 1] == quote {
                        value.push_str(&record[start..=j]);
                        j += 2;
                        start = j;
                    } else {
                        value.push_str(&record[start..j]);
                        j += 1;
                        closed = true;
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            if !closed {
                return Err(SplitError::UnterminatedQuote);
            }
            // Anything between the closing quote and the delimiter is kept, as Postgres does.
            let end = field_end(bytes, j, delim);
            value.push_str(&record[j..end]);
            out.push(Some(std::borrow::Cow::Owned(value)));
            i = end;
        } else {
            let end = field_end(bytes, i, delim);
            let raw = &record[i..end];
            if is_null(raw, &format.null) {
                out.push(None);
            } else {
                out.push(Some(std::borrow::Cow::Borrowed(raw)));
            }
            i = end;
        }
        if i >= record.len() {
            break;
        }
        i += 1; // the delimiter
        if i == record.len() {
            out.push(if format.null.is_empty() {
                None
            } else {
                Some(std::borrow::Cow::Borrowed(""))
            });
            break;
        }
    }
    Ok(())
}

/// Encodes rows in `COPY ... TO` form, line by line.
pub struct CopyEncoder {
    format: CopyFormat,
    field: String,
}

impl CopyEncoder {
    /// An encoder for `format` (text or CSV).
    pub fn new(format: CopyFormat) -> Self {
        CopyEncoder {
            format,
            field: String::new(),
        }
    }

    /// The header line (CSV with HEADER), if one is due.
    pub fn header(&self, schema: &SchemaRef) -> Option<String> {
        if !(self.format.header && self.format.kind == CopyKind::Csv) {
            return None;
        }
        let names: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| self.csv_quote(f.name(), false))
            .collect();
        Some(names.join(&(self.format.delimiter as char).to_string()) + "\n")
    }

    fn csv_quote(&self, v: &str, force: bool) -> String {
        let q = self.format.quote as char;
        let needs = force
            || v.is_empty()
            || v == self.format.null
            || v.contains([self.format.delimiter as char, q, '\n', '\r']);
        if needs {
            let doubled = v.replace(q, &format!("{}{q}", self.format.escape as char));
            format!("{q}{doubled}{q}")
        } else {
            v.to_string()
        }
    }

    /// Appends the line for `batch[row]`, newline included.
    pub fn encode_row(&mut self, batch: &RecordBatch, row: usize, out: &mut String) {
        for (i, col) in batch.columns().iter().enumerate() {
            if i > 0 {
                out.push(self.format.delimiter as char);
            }
            self.field.clear();
            if !write_value(col.as_ref(), row, &mut self.field) {
                out.push_str(&self.format.null);
                continue;
            }
            match self.format.kind {
                CopyKind::Csv => {
                    let quoted = self.csv_quote(&self.field, false);
                    out.push_str(&quoted);
                }
                _ => {
                    for c in self.field.chars() {
                        match c {
                            '\\' => out.push_str("\\\\"),
                            '\n' => out.push_str("\\n"),
                            '\r' => out.push_str("\\r"),
                            '\t' => out.push_str("\\t"),
                            c if c as u32 == u32::from(self.format.delimiter) => {
                                out.push('\\');
                                out.push(c);
                            }
                            c => out.push(c),
                        }
                    }
                }
            }
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, Float64Array};
    use arrow::datatypes::{Field, Schema, TimestampMicrosecondType};

    use super::*;
    use arrow::array::Array;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("model", DataType::Utf8, false),
            Field::new("latency_ms", DataType::Float64, true),
        ]))
    }

    #[test]
    fn csv_with_header_quotes_and_nulls() {
        let mut d = CopyDecoder::new(
            "events",
            schema(),
            CopyFormat {
                header: true,
                ..CopyFormat::new(CopyKind::Csv)
            },
        )
        .expect("decoder");
        d.push(b"ts,model,latency_ms\n2025-01-01 00:00:00+00,\"a,\"\"b\"\"\",1.5\n2025-01-01T00:00:01Z,").expect("push");
        d.push(b"c,\n").expect("push");
        let batches = d.finish().expect("finish");
        let b = &batches[0];
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column(1).as_string::<i32>().value(0), "a,\"b\"");
        assert_eq!(
            b.column(0)
                .as_primitive::<TimestampMicrosecondType>()
                .value(1),
            1_735_689_601_000_000
        );
        assert!(b.column(2).is_null(1));
        let f: &Float64Array = b.column(2).as_primitive();
        assert_eq!(f.value(0), 1.5);
    }

    #[test]
    fn bad_value_names_line_and_column() {
        // Data is decoded once enough has gathered, or at the end.
        let decode = |data: &[u8]| {
            let mut d = CopyDecoder::new("events", schema(), CopyFormat::new(CopyKind::Text))
                .expect("decoder");
            d.push(data).and_then(|()| d.finish()).unwrap_err()
        };
        let err = decode(b"2025-01-01 00:00:00+00\ta\t1\n2025-01-01 00:00:00+00\tb\tfast\n");
        assert_eq!(err.sqlstate(), "22P02");
        assert!(
            err.to_string().contains("line 2, column latency_ms"),
            "{err}"
        );
        let err = decode(b"2025-01-01 00:00:00+00\t\\N\t1\n");
        assert_eq!(err.sqlstate(), "23502");
        let err = decode(b"yesterday\ta\t1\n");
        assert_eq!(err.sqlstate(), "22007");
    }

    #[test]
    fn timestamps_with_offsets() {
        assert_eq!(parse_timestamp_micros("1970-01-01 01:00:00+01"), Some(0));
        assert_eq!(
            parse_timestamp_micros("1970-01-01 00:00:00.5"),
            Some(500_000)
        );
        assert_eq!(parse_timestamp_micros("1970-01-01"), Some(0));
        assert_eq!(parse_timestamp_micros("1969-12-31 19:00:00-05:00"), Some(0));
    }

    /// Digits past the microsecond round to the nearest, as in Postgres
    /// (tests/differential/copy.sql compares ties with a real server).
    #[test]
    fn fractions_round_to_the_microsecond() {
        for (text, micros) in [
            ("1970-01-01 00:00:00.1234567+00", 123_457),
            ("1970-01-01 00:00:00.12345649", 123_456),
            ("1970-01-01 00:00:00.9999996Z", 1_000_000),
            ("1970-01-01 00:00:00.000000499 UTC", 0),
            ("1969-12-31 23:59:59.9999999", 0),
            ("1970-01-01T00:00:00.7654321+00:00", 765_432),
        ] {
            assert_eq!(parse_timestamp_micros(text), Some(micros), "{text}");
        }
    }

    /// The quick ISO reader answers as the general one wherever it answers,
    /// and answers for the spellings clients send.
    #[test]
    fn iso_timestamps_read_as_the_general_path_reads_them() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let zones = [
            "", "Z", "+00", "-00", "+05:30", "-0800", "+14", "-03:45", "+5", "+05:3", " UTC",
        ];
        let mut answered = 0;
        for _ in 0..20_000 {
            let fraction = match next(5) {
                0 => String::new(),
                1 => ".".to_string(),
                _ => {
                    let digits = 1 + next(10) as usize;
                    format!(".{:0>digits$}", next(10u64.pow(digits as u32)))
                }
            };
            let seconds = match next(4) {
                0 => String::new(),
                _ => format!(":{:02}{fraction}", next(61)),
            };
            let text = format!(
                "{:04}-{:02}-{:02}{}{:02}:{:02}{seconds}{}",
                next(3000),
                next(14),
                next(33),
                if next(2) == 0 { ' ' } else { 'T' },
                next(26),
                next(61),
                zones[next(zones.len() as u64) as usize],
            );
            let quick = parse_iso_timestamp_micros(&text);
            if quick.is_some() {
                answered += 1;
                assert_eq!(quick, parse_any_timestamp_micros(&text), "{text}");
            }
        }
        assert!(answered > 5_000, "the quick path answered {answered}");
        for text in [
            "2025-01-01 00:00:00.10463+00",
            "2025-03-09T12:34:56.123456789Z",
            "1969-12-31 23:59:59.999999-05:30",
            "2024-02-29 00:00",
        ] {
            let quick = parse_iso_timestamp_micros(text);
            assert!(quick.is_some(), "{text}");
            assert_eq!(quick, parse_any_timestamp_micros(text), "{text}");
        }
    }

    /// A record that never ends is refused once it passes the limit,
    /// instead of being held in memory as it grows.
    #[test]
    fn a_record_without_end_is_refused_at_the_limit() {
        for kind in [CopyKind::Text, CopyKind::Csv] {
            let mut d =
                CopyDecoder::new("events", schema(), CopyFormat::new(kind)).expect("decoder");
            let first: &[u8] = match kind {
                CopyKind::Csv => b"2025-01-01 00:00:00+00,a,1\n\"",
                _ => b"2025-01-01 00:00:00+00\ta\t1\n",
            };
            d.push(first).expect("first line");
            let chunk = vec![b'x'; 1 << 20];
            let err = (0..80)
                .find_map(|_| d.push(&chunk).err())
                .expect("refused before 80 MiB");
            assert_eq!(err.sqlstate(), "54000", "{err}");
            assert!(err.to_string().contains("line 2"), "{err}");
        }
    }

    fn text_decoder(data: &[u8]) -> Result<Vec<String>> {
        let s = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let mut d = CopyDecoder::new("t", s, CopyFormat::new(CopyKind::Text))?;
        d.push(data)?;
        let batches = d.finish()?;
        let mut out = Vec::new();
        for b in &batches {
            for row in 0..b.num_rows() {
                for col in 0..2 {
                    let c = b.column(col).as_string::<i32>();
                    out.push(if c.is_null(row) {
                        "NULL".to_string()
                    } else {
                        c.value(row).to_string()
                    });
                }
            }
        }
        Ok(out)
    }

    #[test]
    fn text_escapes_decode_as_postgres_does() {
        // What PostgreSQL 16 stores for each escape (checked against it).
        let cases: &[(&[u8], &str)] = &[
            (b"\\101", "A"),
            (b"\\x41", "A"),
            (b"\\x4", "\u{4}"),
            (b"\\xg", "xg"),
            (b"\\1010", "A0"),
            (b"\\7", "\u{7}"),
            (b"\\q", "q"),
            (b"\\\\", "\\"),
            (b"a\\tb", "a\tb"),
            (b"\\303\\251", "\u{e9}"),
            (b"\\N", "NULL"),
            (b"x\\N", "xN"),
        ];
        for (field, want) in cases {
            let mut line = field.to_vec();
            line.extend_from_slice(b"\tz\n");
            let got = text_decoder(&line).expect("decodes");
            assert_eq!(got, vec![want.to_string(), "z".to_string()], "{field:?}");
        }
        // An escaped delimiter is data.
        assert_eq!(
            text_decoder(b"a\\\tb\tc\n").expect("decodes"),
            vec!["a\tb".to_string(), "c".to_string()]
        );
        for bad in [&b"\\000\tz\n"[..], b"\\x00\tz\n", b"a\0\tz\n"] {
            let err = text_decoder(bad).expect_err("NUL");
            assert_eq!(err.sqlstate(), "22021", "{bad:?}: {err}");
        }
        let err = text_decoder(b"\\377\tz\n").expect_err("not UTF-8");
        assert_eq!(err.sqlstate(), "22021");
    }

    #[test]
    fn csv_unterminated_quote_is_an_error() {
        let s = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let mut d = CopyDecoder::new("t", s, CopyFormat::new(CopyKind::Csv)).expect("decoder");
        d.push(b"x,\"open\n").expect("waits for the quote to close");
        let err = d.finish().expect_err("unterminated");
        assert_eq!(err.sqlstate(), "22P04");
        assert!(
            err.to_string().contains("unterminated CSV quoted field"),
            "{err}"
        );
    }

    #[test]
    fn text_round_trip_escapes() {
        let s = Arc::new(Schema::new(vec![Field::new("t", DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&s),
            vec![Arc::new(arrow::array::StringArray::from(vec![
                Some("a\tb\\c\nd"),
                None,
            ]))],
        )
        .expect("batch");
        let mut enc = CopyEncoder::new(CopyFormat::new(CopyKind::Text));
        let mut out = String::new();
        enc.encode_row(&batch, 0, &mut out);
        enc.encode_row(&batch, 1, &mut out);
        let mut d = CopyDecoder::new("t", s, CopyFormat::new(CopyKind::Text)).expect("decoder");
        d.push(out.as_bytes()).expect("push");
        let back = d.finish().expect("finish");
        assert_eq!(back[0].column(0).as_string::<i32>().value(0), "a\tb\\c\nd");
        assert!(back[0].column(0).is_null(1));
    }
}
