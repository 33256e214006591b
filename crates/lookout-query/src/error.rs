use datafusion::error::DataFusionError;
use lookout_storage::StorageError;
use thiserror::Error;

/// Errors of the SQL layer, each with the Postgres SQLSTATE a client expects.
#[derive(Debug, Error)]
pub enum QueryError {
    /// From the storage engine.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// From DataFusion's planner or executor, worded as PostgreSQL words it.
    #[error("{}", describe(.0).message)]
    DataFusion(#[from] DataFusionError),
    /// An error with an explicit SQLSTATE.
    #[error("{message}")]
    Sql {
        /// What kind of error it is.
        state: SqlState,
        /// Human-readable message.
        message: String,
    },
}

/// A PostgreSQL error code (SQLSTATE), by its name in PostgreSQL's
/// `errcodes.txt`. Errors carry it typed; [`SqlState::code`] maps it to the
/// five characters at the edge (the wire, the CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SqlState {
    /// `08006` connection_failure.
    ConnectionFailure,
    /// `08P01` protocol_violation.
    ProtocolViolation,
    /// `0A000` feature_not_supported.
    FeatureNotSupported,
    /// `22000` data_exception.
    DataException,
    /// `22003` numeric_value_out_of_range.
    NumericValueOutOfRange,
    /// `22004` null_value_not_allowed.
    NullValueNotAllowed,
    /// `22007` invalid_datetime_format.
    InvalidDatetimeFormat,
    /// `22008` datetime_field_overflow.
    DatetimeFieldOverflow,
    /// `22012` division_by_zero.
    DivisionByZero,
    /// `2201E` invalid_argument_for_logarithm.
    InvalidArgumentForLogarithm,
    /// `22021` character_not_in_repertoire.
    CharacterNotInRepertoire,
    /// `22023` invalid_parameter_value.
    InvalidParameterValue,
    /// `22P02` invalid_text_representation.
    InvalidTextRepresentation,
    /// `22P03` invalid_binary_representation.
    InvalidBinaryRepresentation,
    /// `22P04` bad_copy_file_format.
    BadCopyFileFormat,
    /// `22P05` untranslatable_character.
    UntranslatableCharacter,
    /// `23502` not_null_violation.
    NotNullViolation,
    /// `25P01` no_active_sql_transaction.
    NoActiveSqlTransaction,
    /// `25P02` in_failed_sql_transaction.
    InFailedSqlTransaction,
    /// `28000` invalid_authorization_specification.
    InvalidAuthorizationSpecification,
    /// `28P01` invalid_password.
    InvalidPassword,
    /// `2BP01` dependent_objects_still_exist.
    DependentObjectsStillExist,
    /// `34000` invalid_cursor_name.
    InvalidCursorName,
    /// `3B001` invalid_savepoint_specification.
    InvalidSavepointSpecification,
    /// `3F000` invalid_schema_name.
    InvalidSchemaName,
    /// `40001` serialization_failure.
    SerializationFailure,
    /// `42501` insufficient_privilege.
    InsufficientPrivilege,
    /// `42601` syntax_error.
    SyntaxError,
    /// `42602` invalid_name.
    InvalidName,
    /// `42701` duplicate_column.
    DuplicateColumn,
    /// `42702` ambiguous_column.
    AmbiguousColumn,
    /// `42703` undefined_column.
    UndefinedColumn,
    /// `42704` undefined_object.
    UndefinedObject,
    /// `42710` duplicate_object.
    DuplicateObject,
    /// `42804` datatype_mismatch.
    DatatypeMismatch,
    /// `42809` wrong_object_type.
    WrongObjectType,
    /// `42883` undefined_function.
    UndefinedFunction,
    /// `42P01` undefined_table.
    UndefinedTable,
    /// `42P03` duplicate_cursor.
    DuplicateCursor,
    /// `42P07` duplicate_table.
    DuplicateTable,
    /// `42P10` invalid_column_reference.
    InvalidColumnReference,
    /// `42P16` invalid_table_definition.
    InvalidTableDefinition,
    /// `42P17` invalid_object_definition.
    InvalidObjectDefinition,
    /// `53200` out_of_memory.
    OutOfMemory,
    /// `53300` too_many_connections.
    TooManyConnections,
    /// `54000` program_limit_exceeded.
    ProgramLimitExceeded,
    /// `54001` statement_too_complex.
    StatementTooComplex,
    /// `25006` read_only_sql_transaction.
    ReadOnlySqlTransaction,
    /// `55000` object_not_in_prerequisite_state.
    ObjectNotInPrerequisiteState,
    /// `55006` object_in_use.
    ObjectInUse,
    /// `57014` query_canceled.
    QueryCanceled,
    /// `57P01` admin_shutdown.
    AdminShutdown,
    /// `58030` io_error.
    IoError,
    /// `58P01` undefined_file.
    UndefinedFile,
    /// `XX000` internal_error.
    InternalError,
    /// `XX001` data_corrupted.
    DataCorrupted,
}

impl SqlState {
    /// The five-character code clients see.
    pub fn code(self) -> &'static str {
        match self {
            SqlState::ConnectionFailure => "08006",
            SqlState::ProtocolViolation => "08P01",
            SqlState::FeatureNotSupported => "0A000",
            SqlState::DataException => "22000",
            SqlState::NumericValueOutOfRange => "22003",
            SqlState::NullValueNotAllowed => "22004",
            SqlState::InvalidDatetimeFormat => "22007",
            SqlState::DatetimeFieldOverflow => "22008",
            SqlState::DivisionByZero => "22012",
            SqlState::InvalidArgumentForLogarithm => "2201E",
            SqlState::CharacterNotInRepertoire => "22021",
            SqlState::InvalidParameterValue => "22023",
            SqlState::InvalidTextRepresentation => "22P02",
            SqlState::InvalidBinaryRepresentation => "22P03",
            SqlState::BadCopyFileFormat => "22P04",
            SqlState::UntranslatableCharacter => "22P05",
            SqlState::NotNullViolation => "23502",
            SqlState::NoActiveSqlTransaction => "25P01",
            SqlState::InFailedSqlTransaction => "25P02",
            SqlState::InvalidAuthorizationSpecification => "28000",
            SqlState::InvalidPassword => "28P01",
            SqlState::DependentObjectsStillExist => "2BP01",
            SqlState::InvalidCursorName => "34000",
            SqlState::InvalidSavepointSpecification => "3B001",
            SqlState::InvalidSchemaName => "3F000",
            SqlState::InsufficientPrivilege => "42501",
            SqlState::SyntaxError => "42601",
            SqlState::InvalidName => "42602",
            SqlState::DuplicateColumn => "42701",
            SqlState::AmbiguousColumn => "42702",
            SqlState::UndefinedColumn => "42703",
            SqlState::UndefinedObject => "42704",
            SqlState::DuplicateObject => "42710",
            SqlState::DatatypeMismatch => "42804",
            SqlState::WrongObjectType => "42809",
            SqlState::UndefinedFunction => "42883",
            SqlState::UndefinedTable => "42P01",
            SqlState::DuplicateCursor => "42P03",
            SqlState::DuplicateTable => "42P07",
            SqlState::InvalidColumnReference => "42P10",
            SqlState::InvalidTableDefinition => "42P16",
            SqlState::InvalidObjectDefinition => "42P17",
            SqlState::OutOfMemory => "53200",
            SqlState::TooManyConnections => "53300",
            SqlState::ProgramLimitExceeded => "54000",
            SqlState::StatementTooComplex => "54001",
            SqlState::ReadOnlySqlTransaction => "25006",
            SqlState::ObjectNotInPrerequisiteState => "55000",
            SqlState::ObjectInUse => "55006",
            SqlState::QueryCanceled => "57014",
            SqlState::SerializationFailure => "40001",
            SqlState::AdminShutdown => "57P01",
            SqlState::IoError => "58030",
            SqlState::UndefinedFile => "58P01",
            SqlState::InternalError => "XX000",
            SqlState::DataCorrupted => "XX001",
        }
    }

    /// The state a five-character code names; an unknown code is an
    /// internal error.
    pub fn from_code(code: &str) -> SqlState {
        match code {
            "08006" => SqlState::ConnectionFailure,
            "08P01" => SqlState::ProtocolViolation,
            "0A000" => SqlState::FeatureNotSupported,
            "22000" => SqlState::DataException,
            "22003" => SqlState::NumericValueOutOfRange,
            "22004" => SqlState::NullValueNotAllowed,
            "22007" => SqlState::InvalidDatetimeFormat,
            "22008" => SqlState::DatetimeFieldOverflow,
            "22012" => SqlState::DivisionByZero,
            "2201E" => SqlState::InvalidArgumentForLogarithm,
            "22021" => SqlState::CharacterNotInRepertoire,
            "22023" => SqlState::InvalidParameterValue,
            "22P02" => SqlState::InvalidTextRepresentation,
            "22P03" => SqlState::InvalidBinaryRepresentation,
            "22P04" => SqlState::BadCopyFileFormat,
            "22P05" => SqlState::UntranslatableCharacter,
            "23502" => SqlState::NotNullViolation,
            "25P01" => SqlState::NoActiveSqlTransaction,
            "25P02" => SqlState::InFailedSqlTransaction,
            "28000" => SqlState::InvalidAuthorizationSpecification,
            "28P01" => SqlState::InvalidPassword,
            "2BP01" => SqlState::DependentObjectsStillExist,
            "34000" => SqlState::InvalidCursorName,
            "3B001" => SqlState::InvalidSavepointSpecification,
            "3F000" => SqlState::InvalidSchemaName,
            "42501" => SqlState::InsufficientPrivilege,
            "42601" => SqlState::SyntaxError,
            "42602" => SqlState::InvalidName,
            "42701" => SqlState::DuplicateColumn,
            "42702" => SqlState::AmbiguousColumn,
            "42703" => SqlState::UndefinedColumn,
            "42704" => SqlState::UndefinedObject,
            "42710" => SqlState::DuplicateObject,
            "42804" => SqlState::DatatypeMismatch,
            "42809" => SqlState::WrongObjectType,
            "42883" => SqlState::UndefinedFunction,
            "42P01" => SqlState::UndefinedTable,
            "42P03" => SqlState::DuplicateCursor,
            "42P07" => SqlState::DuplicateTable,
            "42P10" => SqlState::InvalidColumnReference,
            "42P16" => SqlState::InvalidTableDefinition,
            "42P17" => SqlState::InvalidObjectDefinition,
            "53200" => SqlState::OutOfMemory,
            "53300" => SqlState::TooManyConnections,
            "54000" => SqlState::ProgramLimitExceeded,
            "54001" => SqlState::StatementTooComplex,
            "25006" => SqlState::ReadOnlySqlTransaction,
            "55000" => SqlState::ObjectNotInPrerequisiteState,
            "55006" => SqlState::ObjectInUse,
            "57014" => SqlState::QueryCanceled,
            "40001" => SqlState::SerializationFailure,
            "57P01" => SqlState::AdminShutdown,
            "58030" => SqlState::IoError,
            "58P01" => SqlState::UndefinedFile,
            "XX000" => SqlState::InternalError,
            "XX001" => SqlState::DataCorrupted,
            _ => SqlState::InternalError,
        }
    }
}

impl std::fmt::Display for SqlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl From<arrow::error::ArrowError> for QueryError {
    fn from(e: arrow::error::ArrowError) -> Self {
        QueryError::DataFusion(DataFusionError::from(e))
    }
}

/// Result type of the SQL layer.
pub type Result<T, E = QueryError> = std::result::Result<T, E>;

impl QueryError {
    /// A syntax error (42601).
    pub fn syntax(message: impl Into<String>) -> Self {
        QueryError::new(SqlState::SyntaxError, message)
    }

    /// A feature Lookout does not support (0A000).
    pub fn unsupported(message: impl Into<String>) -> Self {
        QueryError::new(SqlState::FeatureNotSupported, message)
    }

    /// An error of the given kind.
    pub fn new(state: SqlState, message: impl Into<String>) -> Self {
        QueryError::Sql {
            state,
            message: message.into(),
        }
    }

    /// What kind of error this is.
    pub fn state(&self) -> SqlState {
        match self {
            QueryError::Storage(e) => storage_sqlstate(e),
            QueryError::DataFusion(e) => describe(e).code.unwrap_or_else(|| datafusion_sqlstate(e)),
            QueryError::Sql { state, .. } => *state,
        }
    }

    /// The five-character SQLSTATE a client gets for this error.
    pub fn sqlstate(&self) -> &'static str {
        self.state().code()
    }

    /// What to do about the error, sent as the `HINT` field: for a call
    /// that matches no function, the signatures that would.
    pub fn hint(&self) -> Option<String> {
        match self {
            QueryError::DataFusion(e) => describe(e).hint,
            _ => None,
        }
    }
}

/// A DataFusion error as PostgreSQL words it.
struct Described {
    /// The first line a client shows.
    message: String,
    hint: Option<String>,
    /// The SQLSTATE when the wording decides it.
    code: Option<SqlState>,
}

/// DataFusion's wording for a call that matches no signature; the call
/// follows in quotes, the candidate signatures on the next lines.
const NO_MATCH: &str = "No function matches the given name and argument types '";

fn describe(e: &DataFusionError) -> Described {
    let text = strip_datafusion_prefix(e);
    if let Some(d) = describe_no_match(&text).or_else(|| describe_unknown_function(&text)) {
        return d;
    }
    Described {
        message: text,
        hint: None,
        code: None,
    }
}

/// `function upper(bigint) does not exist`, with the signatures to use as
/// the hint, instead of DataFusion's paragraph of Arrow type names.
fn describe_no_match(text: &str) -> Option<Described> {
    let start = text.find(NO_MATCH)? + NO_MATCH.len();
    let call = &text[start..];
    let call = &call[..call.find("'.")?];
    let (name, args) = call.split_once('(')?;
    let args = args.strip_suffix(')')?;
    let given: Vec<String> = split_top_level(args)
        .into_iter()
        .map(|arg| match arg.parse::<arrow::datatypes::DataType>() {
            Ok(dt) => crate::format::pg_type_name(&dt).to_string(),
            Err(_) => arg.to_string(),
        })
        .collect();
    // Lookout's own functions say what is wrong and their signature.
    let own = text.split_once(") does not exist: ").and_then(|(_, rest)| {
        let (problem, rest) = rest.split_once("; expected ")?;
        let usage = rest.split(". No function matches").next()?;
        let mut problem = problem.chars();
        let first = problem.next()?.to_uppercase();
        Some(format!("{first}{}; call it as {usage}.", problem.as_str()))
    });
    let hint = own.unwrap_or_else(|| {
        let candidates: Vec<&str> = text
            .split_once("Candidate functions:")
            .map(|(_, list)| list.lines().map(str::trim).filter(|l| !l.is_empty()).collect())
            .unwrap_or_default();
        let mut hint = String::from(
            "No function matches the given name and argument types. You might need to add explicit type casts.",
        );
        if !candidates.is_empty() {
            hint.push_str(&format!(" Candidates: {}.", candidates.join(", ")));
        }
        hint
    });
    Some(Described {
        message: format!("function {name}({}) does not exist", given.join(", ")),
        hint: Some(hint),
        code: Some(SqlState::UndefinedFunction),
    })
}

/// `function nosuch does not exist`, with DataFusion's suggestion as the hint.
fn describe_unknown_function(text: &str) -> Option<Described> {
    let rest = text.strip_prefix("Invalid function '")?;
    let (name, rest) = rest.split_once("'.")?;
    let suggestion = rest.trim();
    Some(Described {
        message: format!("function {name} does not exist"),
        hint: (!suggestion.is_empty()).then(|| suggestion.replace('\'', "")),
        code: Some(SqlState::UndefinedFunction),
    })
}

/// Splits `a, b(c, d), e` at the commas outside parentheses.
fn split_top_level(list: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut from) = (0i32, 0);
    for (i, c) in list.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(list[from..i].trim());
                from = i + 1;
            }
            _ => {}
        }
    }
    if !list[from..].trim().is_empty() {
        parts.push(list[from..].trim());
    }
    parts
}

fn strip_datafusion_prefix(e: &DataFusionError) -> String {
    let root = e.find_root();
    if let DataFusionError::External(inner) = root {
        if let Some(s) = inner.downcast_ref::<StorageError>() {
            return s.to_string();
        }
        if let Some(q) = inner.downcast_ref::<QueryError>() {
            return q.to_string();
        }
    }
    let text = root.to_string();
    if let DataFusionError::Plan(m) = root
        && let Some(name) = missing_table(m)
    {
        return format!("relation \"{name}\" does not exist");
    }
    for prefix in [
        "Error during planning: ",
        "Execution error: ",
        "Arrow error: ",
        "Schema error: ",
        "SQL error: ",
        "This feature is not implemented: ",
        "Invalid argument error: ",
        "External error: ",
        "Cast error: ",
        "Parser error: ",
    ] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return strip_nested(rest);
        }
    }
    text
}

/// The table named in DataFusion's "table 'c.s.t' not found".
fn missing_table(m: &str) -> Option<&str> {
    let rest = m.split("table '").nth(1)?;
    let name = rest.split("' not found").next()?;
    name.rsplit('.').next()
}

fn strip_nested(s: &str) -> String {
    for prefix in [
        "Cast error: ",
        "Parser error: ",
        "Invalid argument error: ",
        "Compute error: ",
    ] {
        if let Some(rest) = s.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    s.to_string()
}

fn storage_sqlstate(e: &StorageError) -> SqlState {
    match e {
        StorageError::TableNotFound(_) => SqlState::UndefinedTable,
        StorageError::TableExists(_) => SqlState::DuplicateTable,
        StorageError::Dependent { .. } => SqlState::DependentObjectsStillExist,
        StorageError::Column(m) if m.contains("already exists") => SqlState::DuplicateColumn,
        StorageError::Column(_) => SqlState::UndefinedColumn,
        StorageError::NotNull(_) => SqlState::NotNullViolation,
        StorageError::InvalidData(_) => SqlState::InvalidParameterValue,
        StorageError::InvalidValue { sqlstate, .. } => SqlState::from_code(sqlstate),
        StorageError::InvalidDefinition(_) => SqlState::InvalidTableDefinition,
        StorageError::Locked { .. } => SqlState::ObjectInUse,
        StorageError::Conflict(_) => SqlState::SerializationFailure,
        StorageError::ReadOnly(_) | StorageError::Fenced(_) => SqlState::ReadOnlySqlTransaction,
        StorageError::ShuttingDown => SqlState::AdminShutdown,
        StorageError::Corrupt(_) => SqlState::DataCorrupted,
        StorageError::Io(_) | StorageError::ObjectStore(_) => SqlState::IoError,
        StorageError::Arrow(_) => SqlState::DataException,
        StorageError::Parquet(_) => SqlState::InternalError,
    }
}

fn datafusion_sqlstate(e: &DataFusionError) -> SqlState {
    use arrow::error::ArrowError;
    let root = e.find_root();
    match root {
        DataFusionError::External(inner) => {
            if let Some(s) = inner.downcast_ref::<StorageError>() {
                storage_sqlstate(s)
            } else if let Some(q) = inner.downcast_ref::<QueryError>() {
                q.state()
            } else {
                SqlState::InternalError
            }
        }
        DataFusionError::SQL(_, _) => SqlState::SyntaxError,
        DataFusionError::NotImplemented(_) => SqlState::FeatureNotSupported,
        DataFusionError::SchemaError(se, _) => {
            let m = se.to_string();
            if m.contains("No field named") || m.contains("not found") {
                SqlState::UndefinedColumn
            } else if m.contains("Ambiguous") || m.contains("ambiguous") {
                SqlState::AmbiguousColumn
            } else {
                SqlState::InvalidColumnReference
            }
        }
        DataFusionError::ArrowError(ae, _) => match ae.as_ref() {
            ArrowError::DivideByZero => SqlState::DivisionByZero,
            ArrowError::CastError(_) | ArrowError::ParseError(_) => {
                SqlState::InvalidTextRepresentation
            }
            ArrowError::ArithmeticOverflow(_) => SqlState::NumericValueOutOfRange,
            _ => SqlState::DataException,
        },
        DataFusionError::Plan(m) => {
            if m.contains("table") && m.contains("not found") {
                SqlState::UndefinedTable
            } else if m.contains("Invalid function")
                || m.contains("function") && m.contains("does not exist")
            {
                SqlState::UndefinedFunction
            } else if m.contains("No field named") {
                SqlState::UndefinedColumn
            } else {
                SqlState::DatatypeMismatch
            }
        }
        DataFusionError::Execution(m) => {
            if m.contains("Divide by zero") || m.contains("division by zero") {
                SqlState::DivisionByZero
            } else if m.contains("unrecognized configuration parameter") {
                SqlState::UndefinedObject
            } else if m.contains("Cannot cast")
                || m.contains("Cast error")
                || m.contains("cannot be cast")
            {
                SqlState::InvalidTextRepresentation
            } else {
                SqlState::InternalError
            }
        }
        DataFusionError::ResourcesExhausted(_) => SqlState::OutOfMemory,
        _ => SqlState::InternalError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_inside_datafusion_keep_their_code() {
        let e = DataFusionError::External(Box::new(StorageError::TableNotFound("t".into())));
        let q = QueryError::from(e);
        assert_eq!(q.sqlstate(), "42P01");
        assert_eq!(q.to_string(), "table \"t\" does not exist");
    }

    #[test]
    fn a_call_matching_no_function_names_its_types_and_hints_the_signature() {
        let e = DataFusionError::Execution(
            "Function 'latency_quantile' user-defined coercion failed with: Error during planning: \
             function latency_quantile(text, double precision) does not exist: argument 1 cannot be text; \
             expected latency_quantile(value numeric, q constant double precision). No function matches \
             the given name and argument types 'latency_quantile(Utf8, Float64)'. You might need to add \
             explicit type casts.\n\tCandidate functions:\n\tlatency_quantile(UserDefined)"
                .into(),
        );
        let q = QueryError::from(e);
        assert_eq!(q.sqlstate(), "42883");
        assert_eq!(
            q.to_string(),
            "function latency_quantile(text, double precision) does not exist"
        );
        assert_eq!(
            q.hint().as_deref(),
            Some(
                "Argument 1 cannot be text; call it as \
                 latency_quantile(value numeric, q constant double precision)."
            )
        );
        let e = DataFusionError::Plan(
            "Function 'date_trunc' failed. No function matches the given name and argument types \
             'date_trunc(Int64, Timestamp(µs, \"+00:00\"))'. You might need to add explicit type casts.\n\
             \tCandidate functions:\n\tdate_trunc(String, Timestamp)\n\tdate_trunc(String, Time)"
                .into(),
        );
        let q = QueryError::from(e);
        assert_eq!(q.sqlstate(), "42883");
        assert_eq!(
            q.to_string(),
            "function date_trunc(bigint, timestamp with time zone) does not exist"
        );
        assert!(
            q.hint().is_some_and(|h| h
                .ends_with("Candidates: date_trunc(String, Timestamp), date_trunc(String, Time).")),
            "{:?}",
            q.hint()
        );
        let q = QueryError::from(DataFusionError::Plan(
            "Invalid function 'nosuch'.\nDid you mean 'cosh'?".into(),
        ));
        assert_eq!(
            (q.sqlstate(), q.to_string()),
            ("42883", "function nosuch does not exist".into())
        );
        assert_eq!(q.hint().as_deref(), Some("Did you mean cosh?"));
    }
}
