use datafusion::error::DataFusionError;
use lookout_storage::StorageError;
use thiserror::Error;

/// Errors of the SQL layer, each with the Postgres SQLSTATE a client expects.
#[derive(Debug, Error)]
pub enum QueryError {
    /// From the storage engine.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// From DataFusion's planner or executor.
    #[error("{}", strip_datafusion_prefix(.0))]
    DataFusion(#[from] DataFusionError),
    /// An error with an explicit SQLSTATE.
    #[error("{message}")]
    Sql {
        /// Five-character SQLSTATE.
        code: &'static str,
        /// Human-readable message.
        message: String,
    },
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
        QueryError::Sql {
            code: "42601",
            message: message.into(),
        }
    }

    /// A feature Lookout does not support (0A000).
    pub fn unsupported(message: impl Into<String>) -> Self {
        QueryError::Sql {
            code: "0A000",
            message: message.into(),
        }
    }

    /// An error with the given SQLSTATE.
    pub fn with_code(code: &'static str, message: impl Into<String>) -> Self {
        QueryError::Sql {
            code,
            message: message.into(),
        }
    }

    /// The Postgres SQLSTATE for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            QueryError::Storage(e) => storage_sqlstate(e),
            QueryError::DataFusion(e) => datafusion_sqlstate(e),
            QueryError::Sql { code, .. } => code,
        }
    }
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

fn storage_sqlstate(e: &StorageError) -> &'static str {
    match e {
        StorageError::TableNotFound(_) => "42P01",
        StorageError::TableExists(_) => "42P07",
        StorageError::Dependent { .. } => "2BP01",
        StorageError::Column(m) if m.contains("already exists") => "42701",
        StorageError::Column(_) => "42703",
        StorageError::NotNull(_) => "23502",
        StorageError::InvalidData(_) => "22023",
        StorageError::InvalidValue { sqlstate, .. } => sqlstate,
        StorageError::InvalidDefinition(_) => "42P16",
        StorageError::Locked { .. } => "55006",
        StorageError::ShuttingDown => "57P01",
        StorageError::Corrupt(_) => "XX001",
        StorageError::Io(_) | StorageError::ObjectStore(_) => "58030",
        StorageError::Arrow(_) => "22000",
        StorageError::Parquet(_) => "XX000",
    }
}

fn datafusion_sqlstate(e: &DataFusionError) -> &'static str {
    use arrow::error::ArrowError;
    let root = e.find_root();
    match root {
        DataFusionError::External(inner) => {
            if let Some(s) = inner.downcast_ref::<StorageError>() {
                storage_sqlstate(s)
            } else if let Some(q) = inner.downcast_ref::<QueryError>() {
                q.sqlstate()
            } else {
                "XX000"
            }
        }
        DataFusionError::SQL(_, _) => "42601",
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::SchemaError(se, _) => {
            let m = se.to_string();
            if m.contains("No field named") || m.contains("not found") {
                "42703"
            } else if m.contains("Ambiguous") || m.contains("ambiguous") {
                "42702"
            } else {
                "42P10"
            }
        }
        DataFusionError::ArrowError(ae, _) => match ae.as_ref() {
            ArrowError::DivideByZero => "22012",
            ArrowError::CastError(_) | ArrowError::ParseError(_) => "22P02",
            ArrowError::ArithmeticOverflow(_) => "22003",
            _ => "22000",
        },
        DataFusionError::Plan(m) => {
            if m.contains("table") && m.contains("not found") {
                "42P01"
            } else if m.contains("Invalid function")
                || m.contains("function") && m.contains("does not exist")
            {
                "42883"
            } else if m.contains("No field named") {
                "42703"
            } else {
                "42804"
            }
        }
        DataFusionError::Execution(m) => {
            if m.contains("Divide by zero") || m.contains("division by zero") {
                "22012"
            } else if m.contains("unrecognized configuration parameter") {
                "42704"
            } else if m.contains("Cannot cast")
                || m.contains("Cast error")
                || m.contains("cannot be cast")
            {
                "22P02"
            } else {
                "XX000"
            }
        }
        DataFusionError::ResourcesExhausted(_) => "53200",
        _ => "XX000",
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
}
