//! Settings: `SET`, `SHOW`, `RESET`, `set_config`'s checks, the values a
//! role imposes, and the statement time limit.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use chrono::DateTime;
use datafusion::sql::sqlparser::ast::{Ident, Set};

use super::{Session, option_text, show_column, show_key};
use crate::copy::parse_timestamp_micros;
use crate::error::SqlState;
use crate::error::{QueryError, Result};
use crate::ext::Output;
use crate::functions::check_setting;

/// Settings every Postgres client may ask for, with the values Lookout has.
const DEFAULT_SETTINGS: &[(&str, &str)] = &[
    ("server_version", crate::pg::compat::SERVER_VERSION),
    ("server_version_num", "160006"),
    ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"),
    ("datestyle", "ISO, MDY"),
    ("intervalstyle", "postgres"),
    ("timezone", "UTC"),
    ("integer_datetimes", "on"),
    ("standard_conforming_strings", "on"),
    ("transaction_isolation", "read committed"),
    ("default_transaction_isolation", "read committed"),
    ("transaction_read_only", "off"),
    ("default_transaction_read_only", "off"),
    ("in_hot_standby", "off"),
    ("max_identifier_length", "63"),
    ("max_index_keys", "32"),
    ("session_authorization", "lookout"),
    ("is_superuser", "on"),
    ("search_path", "\"$user\", public"),
    ("application_name", ""),
    ("extra_float_digits", "1"),
    ("statement_timeout", "0"),
    // libpq's PQencryptPasswordConn (psql's \password) asks for it.
    ("password_encryption", "scram-sha-256"),
];

fn text_rows(name: &str, values: Vec<String>) -> Result<Output> {
    let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, true)]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(StringArray::from(values))],
    )
    .map_err(|e| QueryError::new(SqlState::InternalError, e.to_string()))?;
    Ok(Output::from_batches(schema, vec![batch]))
}

impl Session {
    /// Applies what `set_config()` set during earlier statements.
    pub(super) fn apply_set_config(&mut self) {
        for (key, value) in self.published.take_assignments() {
            if let Err(e) = self.set_variable(&key, &value) {
                tracing::warn!("set_config({key}) not applied: {e}");
            }
        }
    }

    /// Sets who the session runs as and what it may do (by default the
    /// `lookout` user with [`Access::Admin`](crate::Access::Admin)).
    pub fn set_user(&mut self, user: &str, access: crate::ext::Access) {
        self.user = user.to_string();
        self.access = access;
        self.apply_role_settings();
    }

    /// The settings that follow from who the session runs as, which
    /// `RESET` returns to.
    pub(super) fn apply_role_settings(&mut self) {
        self.settings
            .insert("session_authorization".to_string(), self.user.clone());
        self.settings.insert(
            "is_superuser".to_string(),
            if self.access == crate::ext::Access::Admin {
                "on"
            } else {
                "off"
            }
            .to_string(),
        );
        if let Some(limit) = self.statement_time_limit {
            self.settings.insert(
                "statement_timeout".to_string(),
                limit.as_millis().to_string(),
            );
        }
        self.publish();
    }

    /// Holds every statement of this session to `limit` (the user's role
    /// limit): it becomes the session's `statement_timeout`, and a `SET` of
    /// a longer one (or of none) is refused with 42501.
    pub fn limit_statement_time(&mut self, limit: std::time::Duration) {
        self.statement_time_limit = Some(limit);
        self.apply_role_settings();
    }

    /// Refuses a `statement_timeout` above the role's limit.
    pub(super) fn check_statement_time(&self, value: &str) -> Result<()> {
        let Some(limit) = self.statement_time_limit else {
            return Ok(());
        };
        match crate::interrupt::parse(value)? {
            Some(asked) if asked <= limit => Ok(()),
            _ => Err(QueryError::new(
                SqlState::InsufficientPrivilege,
                format!(
                    "statement_timeout is limited to {} ms for role \"{}\"",
                    limit.as_millis(),
                    self.user
                ),
            )),
        }
    }

    pub(super) fn set(&mut self, set: Set) -> Result<Output> {
        match set {
            Set::SingleAssignment {
                variable, values, ..
            } => {
                let key = variable.to_string().to_lowercase();
                let value = values.first().and_then(option_text).unwrap_or_default();
                self.set_variable(&key, &value)?;
            }
            Set::SetTimeZone { value, .. } => {
                let v = option_text(&value).unwrap_or_default();
                self.set_variable("timezone", &v)?;
            }
            _ => {}
        }
        Ok(Output::Command {
            tag: "SET",
            rows: None,
        })
    }

    pub(super) fn set_variable(&mut self, key: &str, value: &str) -> Result<()> {
        let is_default = value.eq_ignore_ascii_case("default");
        check_setting(key, value)?;
        if key == "statement_timeout" && !is_default {
            self.check_statement_time(value)?;
        }
        match key {
            "lookout.now" => {
                self.fixed_now = if is_default || value.is_empty() {
                    None
                } else {
                    parse_timestamp_micros(value).and_then(DateTime::from_timestamp_micros)
                };
            }
            k if k.starts_with("datafusion.") => {
                let state = self.ctx.state_ref();
                let mut state = state.write();
                state
                    .config_mut()
                    .options_mut()
                    .set(k, value)
                    .map_err(|e| QueryError::new(SqlState::InvalidParameterValue, e.to_string()))?;
            }
            _ => {}
        }
        let key = if key == "time zone" { "timezone" } else { key };
        if is_default {
            self.settings.remove(key);
        } else {
            self.settings.insert(key.to_string(), value.to_string());
        }
        self.publish();
        Ok(())
    }

    /// Every setting `SHOW ALL` lists, sorted.
    pub(super) fn setting_names(&self) -> Vec<String> {
        let mut names: Vec<String> = DEFAULT_SETTINGS
            .iter()
            .map(|(k, _)| k.to_string())
            .collect();
        names.extend(self.settings.keys().cloned());
        names.push("lookout.now".into());
        names.sort();
        names.dedup();
        names
    }

    /// The current value of a setting, as `SHOW` and `current_setting` give it.
    pub fn setting(&self, key: &str) -> Option<String> {
        let key = key.to_lowercase();
        if key == "lookout.now" {
            return Some(self.fixed_now.map_or_else(String::new, |t| {
                let mut s = String::new();
                crate::format::push_timestamp(&mut s, t.timestamp_micros(), true);
                s
            }));
        }
        if key == "timezone" {
            return Some("UTC".to_string());
        }
        // As a hot standby answers, so drivers that look for the primary
        // (libpq's target_session_attrs, pgjdbc's targetServerType) can tell.
        if matches!(
            key.as_str(),
            "transaction_read_only" | "default_transaction_read_only" | "in_hot_standby"
        ) && self.lookout.storage().is_read_only()
        {
            return Some("on".to_string());
        }
        self.settings.get(&key).cloned().or_else(|| {
            DEFAULT_SETTINGS
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        })
    }

    pub(super) fn show(&self, variable: &[Ident]) -> Result<Output> {
        let key = show_key(variable);
        if key.eq_ignore_ascii_case("all") {
            let values = self
                .setting_names()
                .iter()
                .map(|n| format!("{n} = {}", self.setting(n).unwrap_or_default()))
                .collect();
            return text_rows("setting", values);
        }
        match self.setting(&key) {
            Some(v) => text_rows(&show_column(variable), vec![v]),
            None => Err(QueryError::new(
                SqlState::UndefinedObject,
                format!("unrecognized configuration parameter \"{key}\""),
            )),
        }
    }
}
