//! Errors of the alert engine, each with the SQLSTATE a client sees.

use lookout_query::{QueryError, SqlState};
use thiserror::Error;

/// An alert statement or evaluation failed.
#[derive(Debug, Error)]
pub enum AlertError {
    /// The statement does not follow the grammar (42601).
    #[error("{0}")]
    Syntax(String),
    /// A clause has a value out of range (22023).
    #[error("{0}")]
    InvalidValue(String),
    /// A timestamp did not parse (22007).
    #[error("{0}")]
    InvalidDatetime(String),
    /// No rule of that name (42704).
    #[error("alert \"{0}\" does not exist")]
    NotFound(String),
    /// A rule of that name exists (42710).
    #[error("alert \"{0}\" already exists")]
    Exists(String),
    /// The rule's query does not return what a rule needs (42P17).
    #[error("{0}")]
    InvalidQuery(String),
    /// From the SQL engine, with its own SQLSTATE.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// A notification could not be delivered.
    #[error("{0}")]
    Delivery(String),
}

/// Result type of the alert engine.
pub type Result<T, E = AlertError> = std::result::Result<T, E>;

impl AlertError {
    pub(crate) fn syntax(message: impl Into<String>) -> Self {
        AlertError::Syntax(message.into())
    }

    /// What kind of error this is, as PostgreSQL classifies it.
    pub fn state(&self) -> SqlState {
        match self {
            AlertError::Syntax(_) => SqlState::SyntaxError,
            AlertError::InvalidValue(_) => SqlState::InvalidParameterValue,
            AlertError::InvalidDatetime(_) => SqlState::InvalidDatetimeFormat,
            AlertError::NotFound(_) => SqlState::UndefinedObject,
            AlertError::Exists(_) => SqlState::DuplicateObject,
            AlertError::InvalidQuery(_) => SqlState::InvalidObjectDefinition,
            AlertError::Query(e) => e.state(),
            AlertError::Delivery(_) => SqlState::ConnectionFailure,
        }
    }

    /// The five-character SQLSTATE a client gets for this error.
    pub fn sqlstate(&self) -> &'static str {
        self.state().code()
    }
}

impl From<AlertError> for QueryError {
    fn from(e: AlertError) -> QueryError {
        match e {
            AlertError::Query(q) => q,
            other => QueryError::new(other.state(), other.to_string()),
        }
    }
}
