//! `CREATE ROLE`, `ALTER ROLE`, `DROP ROLE` and `GRANT`: users created in
//! SQL, kept in `lookout.roles` (one row per change; the latest wins), which
//! only admin sessions may read.
//!
//! ```sql
//! CREATE ROLE grafana LOGIN PASSWORD 'secret' IN ROLE reader;
//! ALTER ROLE grafana PASSWORD 'new secret' CONNECTION LIMIT 10;
//! ALTER ROLE grafana SET statement_timeout = '30s';
//! GRANT writer TO grafana;
//! DROP ROLE IF EXISTS grafana;
//! ```
//! `USER` may stand for `ROLE`. A role is `reader`, `writer` or `admin`
//! (`SUPERUSER` means admin); a new user without `IN ROLE` is a reader.
//! `CONNECTION LIMIT` (-1: none) bounds the user's open connections; a
//! role's `statement_timeout` bounds every statement of theirs (`RESET`
//! removes it).

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use async_trait::async_trait;
use lookout_query::{
    Access, ExtStatement, Lookout, Output, QueryError, Result, SqlExtension, SqlSession,
};

use lookout_query::SqlState;
use lookout_query::ext::{Piece, Words, leading_words};

use crate::auth::{RoleLimits, User, Users, Verifier};

const TABLE: &str = "CREATE TABLE IF NOT EXISTS lookout.roles (
    ts TIMESTAMPTZ NOT NULL, name TEXT NOT NULL, verifier TEXT, role TEXT,
    dropped BOOLEAN NOT NULL, connection_limit BIGINT, statement_timeout_ms BIGINT
) WITH (time_column = 'ts', partition_column = 'none', bucket = '3650 days')";

/// Columns added after the first release, for stores made before them.
const ADDED_COLUMNS: [&str; 2] = [
    "ALTER TABLE lookout.roles ADD COLUMN IF NOT EXISTS connection_limit BIGINT",
    "ALTER TABLE lookout.roles ADD COLUMN IF NOT EXISTS statement_timeout_ms BIGINT",
];

/// The columns every row of `lookout.roles` is written with.
const COLUMNS: &str = "ts, name, verifier, role, dropped, connection_limit, statement_timeout_ms";

/// Creates `lookout.roles` if needed, loads its users into `users` and adds
/// the role statements to every session. On a read-only replica the table
/// is only read, and read again whenever the writer commits, so a role
/// dropped or changed on the writer is dropped or changed here too.
pub async fn install_roles(lookout: &Lookout, users: Arc<Users>) -> Result<()> {
    let replica = lookout.storage().is_read_only();
    if !replica {
        lookout.sql(TABLE).await?;
        for added in ADDED_COLUMNS {
            lookout.sql(added).await?;
        }
    }
    lookout.restrict_to_admin("roles");
    let (created, legacy) = read_roles(lookout).await?;
    users.replace_created(created);
    if legacy && !replica {
        forget_salted_passwords(lookout, &users).await?;
    }
    if replica {
        lookout.add_background_task(tokio::spawn(follow_roles(
            lookout.clone(),
            Arc::clone(&users),
        )));
    }
    lookout.register_extension(Arc::new(RoleStatements { users }));
    Ok(())
}

/// How often a replica looks whether the writer committed since it last
/// read the roles.
const FOLLOW_ROLES_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Re-reads `lookout.roles` after each manifest version the replica installs.
async fn follow_roles(lookout: Lookout, users: Arc<Users>) {
    let version = |l: &Lookout| l.storage().manifest().map(|m| m.version).unwrap_or(0);
    let mut read = version(&lookout);
    loop {
        tokio::time::sleep(FOLLOW_ROLES_EVERY).await;
        let now = version(&lookout);
        if now == read {
            continue;
        }
        match read_roles(&lookout).await {
            Ok((created, _)) => {
                users.replace_created(created);
                read = now;
            }
            Err(e) => tracing::warn!(error = %e, "re-reading lookout.roles failed; retrying"),
        }
    }
}

/// The users `lookout.roles` holds (its latest row per name wins), and
/// whether any row has a verifier of the old salted-password form.
async fn read_roles(lookout: &Lookout) -> Result<(std::collections::HashMap<String, User>, bool)> {
    let mut created = std::collections::HashMap::new();
    // A replica of a store no server has written yet has no roles table.
    if lookout.storage().table("lookout.roles").is_err() {
        return Ok((created, false));
    }
    let batches = lookout
        .sql(&format!("SELECT {COLUMNS} FROM lookout.roles ORDER BY ts"))
        .await?;
    let mut legacy = false;
    for batch in &batches {
        let text = |i: usize| batch.column(i).as_string_opt::<i32>().cloned();
        let (Some(names), Some(verifiers), Some(roles)) = (text(1), text(2), text(3)) else {
            continue;
        };
        let dropped = batch.column(4).as_boolean();
        let number = |i: usize| {
            batch
                .column(i)
                .as_primitive_opt::<arrow::datatypes::Int64Type>()
                .cloned()
        };
        let (Some(connection_limits), Some(timeouts)) = (number(5), number(6)) else {
            continue;
        };
        for row in 0..batch.num_rows() {
            let name = names.value(row);
            if dropped.value(row) || verifiers.is_null(row) {
                created.remove(name);
                continue;
            }
            legacy |= Verifier::is_legacy(verifiers.value(row));
            let verifier = Verifier::parse(verifiers.value(row)).map_err(|e| {
                QueryError::new(SqlState::InternalError, format!("lookout.roles: {e}"))
            })?;
            let access = Access::from_role_name(roles.value(row)).unwrap_or(Access::Read);
            let limits = RoleLimits {
                connections: (!connection_limits.is_null(row))
                    .then(|| u32::try_from(connection_limits.value(row)).ok())
                    .flatten(),
                statement_timeout_ms: (!timeouts.is_null(row))
                    .then(|| u64::try_from(timeouts.value(row)).ok())
                    .flatten(),
            };
            created.insert(
                name.to_string(),
                User {
                    verifier,
                    access,
                    limits,
                },
            );
        }
    }
    Ok((created, legacy))
}

/// Rewrites verifiers of the salted-password form (earlier versions), which
/// log in when stolen, as stored keys: the current users get a row in the
/// new form, every old-form row is deleted, and the files are compacted so
/// the deleted rows leave the disk.
async fn forget_salted_passwords(lookout: &Lookout, users: &Users) -> Result<()> {
    let rows: Vec<String> = users
        .created()
        .into_iter()
        .map(|(name, user)| row_values(&name, Some(&user)))
        .collect();
    if !rows.is_empty() {
        lookout
            .sql(&format!(
                "INSERT INTO lookout.roles ({COLUMNS}) VALUES {}",
                rows.join(", ")
            ))
            .await?;
    }
    lookout
        .sql("DELETE FROM lookout.roles WHERE verifier LIKE 'lookout-scram-sha-256$%'")
        .await?;
    let storage = lookout.storage();
    storage.flush().await?;
    storage.compact().await?;
    tracing::info!(
        users = rows.len(),
        "password verifiers rewritten as SCRAM stored keys"
    );
    Ok(())
}

#[derive(Debug)]
struct RoleStatements {
    users: Arc<Users>,
}

/// What `CREATE ROLE` or `ALTER ROLE` sets; `None` leaves it as it is.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct RoleOptions {
    secret: Option<String>,
    access: Option<Access>,
    /// `CONNECTION LIMIT n`; `Some(None)` for -1, no limit.
    connections: Option<Option<u32>>,
}

/// One role statement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RoleStatement {
    Create {
        name: String,
        options: RoleOptions,
    },
    /// `ALTER ROLE` and `GRANT role TO user`, told apart by their tag.
    Alter {
        name: String,
        options: RoleOptions,
        tag: &'static str,
    },
    /// `ALTER ROLE name SET statement_timeout = ...` (`None`: `RESET`).
    SetStatementTimeout {
        name: String,
        timeout_ms: Option<u64>,
    },
    Drop {
        name: String,
        if_exists: bool,
    },
}

fn syntax(msg: impl Into<String>) -> QueryError {
    QueryError::new(SqlState::SyntaxError, msg.into())
}

/// `reader`, `writer` or `admin`.
fn role(t: &mut Words<'_>) -> Result<Access> {
    let n = t.name()?;
    Access::from_role_name(&n).ok_or_else(|| {
        QueryError::new(
            SqlState::UndefinedObject,
            format!("role \"{n}\" does not exist (roles are reader, writer and admin)"),
        )
    })
}

pub(crate) fn parse(sql: &str) -> Result<RoleStatement> {
    let mut t = Words::new(sql)?;
    let verb = t.name()?;
    if verb == "grant" {
        let access = role(&mut t)?;
        if !t.eat_word("to") {
            return Err(syntax("expected GRANT reader|writer|admin TO name"));
        }
        let name = t.name()?;
        t.expect_end()?;
        return Ok(RoleStatement::Alter {
            name,
            options: RoleOptions {
                access: Some(access),
                ..RoleOptions::default()
            },
            tag: "GRANT ROLE",
        });
    }
    if !(t.eat_word("role") || t.eat_word("user")) {
        return Err(syntax("expected ROLE or USER"));
    }
    if verb == "drop" {
        let if_exists = t.eat_word("if");
        if if_exists {
            t.expect_word("exists")?;
        }
        let name = t.name()?;
        t.expect_end()?;
        return Ok(RoleStatement::Drop { name, if_exists });
    }
    let name = t.name()?;
    if verb == "alter" && (t.peek_word("set") || t.peek_word("reset")) {
        let reset = t.peek_word("reset");
        t.advance();
        if !t.eat_word("statement_timeout") {
            return Err(QueryError::new(
                SqlState::FeatureNotSupported,
                "a role may set only statement_timeout",
            ));
        }
        let timeout_ms = if reset {
            None
        } else {
            if !(t.eat_symbol("=") || t.eat_word("to")) {
                return Err(syntax("expected SET statement_timeout = value"));
            }
            let value = match t.peek() {
                Some(Piece::Str(v) | Piece::Word { text: v, .. } | Piece::Number(v)) => v.clone(),
                _ => return Err(syntax("expected a statement_timeout value")),
            };
            t.advance();
            lookout_query::parse_statement_timeout(&value)?.map(|d| d.as_millis() as u64)
        };
        t.expect_end()?;
        return Ok(RoleStatement::SetStatementTimeout { name, timeout_ms });
    }
    let mut options = RoleOptions::default();
    t.eat_word("with");
    while let Some(piece) = t.peek() {
        let Piece::Word {
            text,
            quoted: false,
        } = piece
        else {
            return Err(syntax("expected a role option"));
        };
        let option = text.to_lowercase();
        t.advance();
        match option.as_str() {
            "login" | "nologin" | "inherit" | "noinherit" | "nosuperuser" => {}
            "superuser" => options.access = Some(Access::Admin),
            "password" => options.secret = Some(t.string("PASSWORD 'secret'")?),
            "in" => {
                if !t.eat_word("role") {
                    return Err(syntax("expected IN ROLE reader|writer|admin"));
                }
                options.access = Some(role(&mut t)?);
            }
            "connection" => {
                if !t.eat_word("limit") {
                    return Err(syntax("expected CONNECTION LIMIT n"));
                }
                let negative = t.eat_symbol("-");
                let limit = match t.peek() {
                    Some(Piece::Number(n) | Piece::Word { text: n, .. }) => n.parse::<u32>().ok(),
                    _ => None,
                };
                t.advance();
                options.connections = Some(match (negative, limit) {
                    (true, Some(1)) => None,
                    (false, Some(n)) => Some(n),
                    _ => {
                        return Err(QueryError::new(
                            SqlState::InvalidParameterValue,
                            "CONNECTION LIMIT is -1 (no limit) or a count of connections",
                        ));
                    }
                });
            }
            other => return Err(syntax(format!("unsupported role option {other}"))),
        }
    }
    Ok(match verb.as_str() {
        "create" => RoleStatement::Create { name, options },
        "alter" => RoleStatement::Alter {
            name,
            options,
            tag: "ALTER ROLE",
        },
        _ => return Err(syntax("expected CREATE, ALTER or DROP")),
    })
}

fn sql_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The values of a `lookout.roles` row (in [`COLUMNS`] order) recording
/// `user` as `name`, or its removal.
fn row_values(name: &str, user: Option<&User>) -> String {
    let number = |n: Option<u64>| n.map_or("NULL".to_string(), |n| n.to_string());
    match user {
        Some(u) => format!(
            "(now(), {}, {}, {}, false, {}, {})",
            sql_text(name),
            sql_text(&u.verifier.to_string()),
            sql_text(u.access.role_name()),
            number(u.limits.connections.map(u64::from)),
            number(u.limits.statement_timeout_ms),
        ),
        None => format!("(now(), {}, NULL, NULL, true, NULL, NULL)", sql_text(name)),
    }
}

impl RoleStatements {
    async fn record(
        &self,
        session: &mut dyn SqlSession,
        name: &str,
        user: Option<&User>,
    ) -> Result<()> {
        session
            .query(&format!(
                "INSERT INTO lookout.roles ({COLUMNS}) VALUES {}",
                row_values(name, user)
            ))
            .await?;
        self.users.set_created(name, user.cloned());
        Ok(())
    }

    /// The SQL-made user `name`, to change.
    fn existing(&self, name: &str) -> Result<User> {
        self.not_configured(name)?;
        self.users.get(name).ok_or_else(|| {
            QueryError::new(
                SqlState::UndefinedObject,
                format!("role \"{name}\" does not exist"),
            )
        })
    }

    fn not_configured(&self, name: &str) -> Result<()> {
        if self.users.is_configured(name) {
            return Err(QueryError::new(
                SqlState::InsufficientPrivilege,
                format!("role \"{name}\" is defined in the configuration file; change it there"),
            ));
        }
        Ok(())
    }
}

fn secret_error(e: String) -> QueryError {
    QueryError::new(SqlState::InvalidParameterValue, e)
}

impl SqlExtension for RoleStatements {
    fn parse(&self, sql: &str) -> Option<Result<Box<dyn ExtStatement>>> {
        if !is_role_statement(sql) {
            return None;
        }
        Some(parse(sql).map(|statement| {
            Box::new(ParsedRole {
                users: Arc::clone(&self.users),
                statement,
            }) as Box<dyn ExtStatement>
        }))
    }
}

/// Whether `sql` is a role statement.
fn is_role_statement(sql: &str) -> bool {
    let words: Vec<String> = leading_words(sql, 2)
        .iter()
        .map(|w| w.to_lowercase())
        .collect();
    match words.as_slice() {
        [verb, kind] if ["create", "alter", "drop"].contains(&verb.as_str()) => {
            kind == "role" || kind == "user"
        }
        [verb, role] if verb == "grant" => Access::from_role_name(role).is_some(),
        _ => false,
    }
}

/// A role statement, parsed once.
#[derive(Debug)]
struct ParsedRole {
    users: Arc<Users>,
    statement: RoleStatement,
}

/// Prints the statement without its options: they may hold a password.
impl std::fmt::Display for ParsedRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (verb, name) = match &self.statement {
            RoleStatement::Create { name, .. } => ("CREATE", name),
            RoleStatement::Alter { name, .. } | RoleStatement::SetStatementTimeout { name, .. } => {
                ("ALTER", name)
            }
            RoleStatement::Drop { name, .. } => ("DROP", name),
        };
        write!(f, "{verb} ROLE {}", lookout_query::quote_ident(name))
    }
}

#[async_trait]
impl ExtStatement for ParsedRole {
    fn access(&self) -> Access {
        Access::Admin
    }

    async fn execute(&self, session: &mut dyn SqlSession) -> Result<Output> {
        RoleStatements {
            users: Arc::clone(&self.users),
        }
        .run(self.statement.clone(), session)
        .await
    }
}

impl RoleStatements {
    async fn run(&self, statement: RoleStatement, session: &mut dyn SqlSession) -> Result<Output> {
        match statement {
            RoleStatement::Create { name, options } => {
                self.not_configured(&name)?;
                if self.users.get(&name).is_some() {
                    return Err(QueryError::new(
                        SqlState::DuplicateObject,
                        format!("role \"{name}\" already exists"),
                    ));
                }
                let secret = options.secret.ok_or_else(|| {
                    syntax("a role needs a PASSWORD to log in (Lookout has no other login)")
                })?;
                let user = User {
                    verifier: Verifier::from_secret(&secret).map_err(secret_error)?,
                    access: options.access.unwrap_or(Access::Read),
                    limits: RoleLimits {
                        connections: options.connections.flatten(),
                        statement_timeout_ms: None,
                    },
                };
                self.record(session, &name, Some(&user)).await?;
                Ok(Output::Command {
                    tag: "CREATE ROLE",
                    rows: None,
                })
            }
            RoleStatement::Alter { name, options, tag } => {
                let mut user = self.existing(&name)?;
                if let Some(secret) = options.secret {
                    user.verifier = Verifier::from_secret(&secret).map_err(secret_error)?;
                }
                if let Some(access) = options.access {
                    user.access = access;
                }
                if let Some(connections) = options.connections {
                    user.limits.connections = connections;
                }
                self.record(session, &name, Some(&user)).await?;
                Ok(Output::Command { tag, rows: None })
            }
            RoleStatement::SetStatementTimeout { name, timeout_ms } => {
                let mut user = self.existing(&name)?;
                user.limits.statement_timeout_ms = timeout_ms;
                self.record(session, &name, Some(&user)).await?;
                Ok(Output::Command {
                    tag: "ALTER ROLE",
                    rows: None,
                })
            }
            RoleStatement::Drop { name, if_exists } => {
                self.not_configured(&name)?;
                if self.users.get(&name).is_none() {
                    if if_exists {
                        return Ok(Output::Command {
                            tag: "DROP ROLE",
                            rows: None,
                        });
                    }
                    return Err(QueryError::new(
                        SqlState::UndefinedObject,
                        format!("role \"{name}\" does not exist"),
                    ));
                }
                self.record(session, &name, None).await?;
                Ok(Output::Command {
                    tag: "DROP ROLE",
                    rows: None,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_role_statements() {
        assert_eq!(
            parse("CREATE ROLE Grafana WITH LOGIN PASSWORD 'it''s' IN ROLE reader").ok(),
            Some(RoleStatement::Create {
                name: "grafana".into(),
                options: RoleOptions {
                    secret: Some("it's".into()),
                    access: Some(Access::Read),
                    connections: None,
                },
            })
        );
        assert_eq!(
            parse("create user \"Ops\" superuser password 'x'").ok(),
            Some(RoleStatement::Create {
                name: "Ops".into(),
                options: RoleOptions {
                    secret: Some("x".into()),
                    access: Some(Access::Admin),
                    connections: None,
                },
            })
        );
        assert_eq!(
            parse("ALTER ROLE grafana CONNECTION LIMIT 3").ok(),
            Some(RoleStatement::Alter {
                name: "grafana".into(),
                options: RoleOptions {
                    connections: Some(Some(3)),
                    ..RoleOptions::default()
                },
                tag: "ALTER ROLE",
            })
        );
        assert_eq!(
            parse("CREATE ROLE g PASSWORD 'p' CONNECTION LIMIT -1").ok(),
            Some(RoleStatement::Create {
                name: "g".into(),
                options: RoleOptions {
                    secret: Some("p".into()),
                    connections: Some(None),
                    ..RoleOptions::default()
                },
            })
        );
        assert_eq!(
            parse("alter role g set statement_timeout = '1.5s'").ok(),
            Some(RoleStatement::SetStatementTimeout {
                name: "g".into(),
                timeout_ms: Some(1500),
            })
        );
        assert_eq!(
            parse("ALTER ROLE g SET statement_timeout TO 250").ok(),
            Some(RoleStatement::SetStatementTimeout {
                name: "g".into(),
                timeout_ms: Some(250),
            })
        );
        assert_eq!(
            parse("ALTER ROLE g RESET statement_timeout").ok(),
            Some(RoleStatement::SetStatementTimeout {
                name: "g".into(),
                timeout_ms: None,
            })
        );
        assert_eq!(
            parse("GRANT writer TO grafana").ok(),
            Some(RoleStatement::Alter {
                name: "grafana".into(),
                options: RoleOptions {
                    access: Some(Access::Write),
                    ..RoleOptions::default()
                },
                tag: "GRANT ROLE",
            })
        );
        assert_eq!(
            parse("DROP ROLE IF EXISTS grafana").ok(),
            Some(RoleStatement::Drop {
                name: "grafana".into(),
                if_exists: true,
            })
        );
        for bad in [
            "CREATE ROLE",
            "CREATE ROLE x PASSWORD",
            "CREATE ROLE x CREATEDB",
            "GRANT admin grafana",
            "DROP ROLE x y",
            "ALTER ROLE x CONNECTION 3",
            "ALTER ROLE x SET statement_timeout '1s'",
        ] {
            assert_eq!(
                parse(bad).err().map(|e| e.sqlstate().to_string()),
                Some("42601".into()),
                "{bad}"
            );
        }
        assert_eq!(
            parse("CREATE ROLE x PASSWORD 'p' IN ROLE root")
                .err()
                .map(|e| e.sqlstate().to_string()),
            Some("42704".into())
        );
        for bad in [
            "ALTER ROLE x CONNECTION LIMIT -2",
            "ALTER ROLE x CONNECTION LIMIT many",
            "ALTER ROLE x SET statement_timeout = 'soon'",
        ] {
            assert_eq!(
                parse(bad).err().map(|e| e.sqlstate().to_string()),
                Some("22023".into()),
                "{bad}"
            );
        }
    }
}
