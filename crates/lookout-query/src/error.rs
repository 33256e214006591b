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
            QueryError::DataFusion(e) => describe(e).code.unwrap_or_else(|| datafusion_sqlstate(e)),
            QueryError::Sql { code, .. } => code,
        }
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
    code: Option<&'static str>,
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
        code: Some("42883"),
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
        code: Some("42883"),
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
