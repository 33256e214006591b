//! What an extension crate needs from the SQL core: the statement trait,
//! the grammar kit its statements are parsed with, statement output, access levels, names and quoting, durations, the ingest
//! hook and derived-table kinds, the clock, and reading result columns back.
//!
//! Alerts, review queues, rollups, sampling and roles are built on this kit
//! alone; the core names none of them.

mod access;
mod external;
mod grammar;
mod interval;
pub(crate) mod names;
mod output;
mod statement;
mod values;

pub use access::Access;
pub use external::ExternalFormat;
pub use grammar::{Piece, Words, leading_words};
pub use interval::{format_duration, parse_duration, parse_non_negative_duration};
pub use lookout_storage::clock::{Clock, ManualClock, SystemClock};
pub use names::{
    SYSTEM_PREFIX, ident_name, one_expression, quote_ident, quote_literal, quoted_table, table_name,
};
pub(crate) use output::batches_stream;
pub use output::{CopyIn, Output};
pub use statement::{Command, ExtStatement, SqlExtension, SqlSession, split_statements};
pub use values::{instant, int_values, text_values};

pub use crate::error::SqlState;
pub use crate::ingest::{Derive, IngestHook, Redirect};

pub use crate::table::derived::{DerivedKind, DerivedKinds};
