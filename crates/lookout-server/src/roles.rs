//! `CREATE ROLE`, `ALTER ROLE`, `DROP ROLE` and `GRANT`: users created in
//! SQL, kept in `lookout.roles` (one row per change; the latest wins), which
//! only admin sessions may read.
//!
//! ```sql
//! CREATE ROLE grafana LOGIN PASSWORD 'secret' IN ROLE reader;
//! ALTER ROLE grafana PASSWORD 'new secret';
//! GRANT writer TO grafana;
//! DROP ROLE IF EXISTS grafana;
//! ```
//! `USER` may stand for `ROLE`. A role is `reader`, `writer` or `admin`
//! (`SUPERUSER` means admin); a new user without `IN ROLE` is a reader.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use lookout_query::{Access, Lookout, Output, QueryError, Result, Session, SqlExtension};

use crate::auth::{User, Users, Verifier};

const TABLE: &str = "CREATE TABLE IF NOT EXISTS lookout.roles (
    ts TIMESTAMPTZ NOT NULL, name TEXT NOT NULL, verifier TEXT, role TEXT,
    dropped BOOLEAN NOT NULL
) WITH (time_column = 'ts', partition_column = 'none', bucket = '3650 days')";

/// Creates `lookout.roles` if needed, loads its users into `users` and adds
/// the role statements to every session.
pub async fn install_roles(lookout: &Lookout, users: Arc<Users>) -> Result<()> {
    lookout.sql(TABLE).await?;
    lookout.restrict_to_admin("roles");
    let batches = lookout
        .sql("SELECT name, verifier, role, dropped FROM lookout.roles ORDER BY ts")
        .await?;
    let mut legacy = false;
    for batch in &batches {
        let text = |i: usize| batch.column(i).as_string_opt::<i32>().cloned();
        let (Some(names), Some(verifiers), Some(roles)) = (text(0), text(1), text(2)) else {
            continue;
        };
        let dropped = batch.column(3).as_boolean();
        for row in 0..batch.num_rows() {
            let name = names.value(row);
            let user = if dropped.value(row) || verifiers.is_null(row) {
                None
            } else {
                legacy |= Verifier::is_legacy(verifiers.value(row));
                let verifier = Verifier::parse(verifiers.value(row))
                    .map_err(|e| QueryError::with_code("XX000", format!("lookout.roles: {e}")))?;
                let access = Access::from_role_name(roles.value(row)).unwrap_or(Access::Read);
                Some(User { verifier, access })
            };
            users.set_created(name, user);
        }
    }
    if legacy {
        forget_salted_passwords(lookout, &users).await?;
    }
    lookout.register_extension(Arc::new(RoleStatements { users }));
    Ok(())
}

/// Rewrites verifiers of the salted-password form (earlier versions), which
/// log in when stolen, as stored keys: the current users get a row in the
/// new form, every old-form row is deleted, and the files are compacted so
/// the deleted rows leave the disk.
async fn forget_salted_passwords(lookout: &Lookout, users: &Users) -> Result<()> {
    let rows: Vec<String> = users
        .created()
        .into_iter()
        .map(|(name, user)| {
            format!(
                "(now(), {}, {}, {}, false)",
                sql_text(&name),
                sql_text(&user.verifier.to_string()),
                sql_text(user.access.role_name())
            )
        })
        .collect();
    if !rows.is_empty() {
        lookout
            .sql(&format!(
                "INSERT INTO lookout.roles VALUES {}",
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

/// One role statement.
#[derive(Debug, PartialEq)]
enum RoleStatement {
    Create {
        name: String,
        secret: Option<String>,
        access: Option<Access>,
    },
    /// `ALTER ROLE` and `GRANT role TO user`, told apart by their tag.
    Alter {
        name: String,
        secret: Option<String>,
        access: Option<Access>,
        tag: &'static str,
    },
    Drop {
        name: String,
        if_exists: bool,
    },
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Str(String),
}

fn syntax(msg: impl Into<String>) -> QueryError {
    QueryError::with_code("42601", msg.into())
}

fn lex(sql: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' || c == '"' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some(q) if q == c && chars.peek() == Some(&c) => {
                        chars.next();
                        s.push(c);
                    }
                    Some(q) if q == c => break,
                    Some(other) => s.push(other),
                    None => return Err(syntax("unterminated quoted string")),
                }
            }
            tokens.push(if c == '\'' {
                Token::Str(s)
            } else {
                Token::Quoted(s)
            });
        } else if c.is_alphanumeric() || c == '_' {
            let mut s = String::new();
            while let Some(&w) = chars.peek() {
                if !(w.is_alphanumeric() || w == '_') {
                    break;
                }
                s.push(w);
                chars.next();
            }
            tokens.push(Token::Word(s));
        } else {
            return Err(syntax(format!("syntax error at or near \"{c}\"")));
        }
    }
    Ok(tokens)
}

fn is_word(t: Option<&Token>, word: &str) -> bool {
    matches!(t, Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
}

fn name(t: Option<&Token>) -> Result<String> {
    match t {
        Some(Token::Word(w)) => Ok(w.to_lowercase()),
        Some(Token::Quoted(q)) => Ok(q.clone()),
        _ => Err(syntax("expected a role name")),
    }
}

fn role(t: Option<&Token>) -> Result<Access> {
    let n = name(t)?;
    Access::from_role_name(&n).ok_or_else(|| {
        QueryError::with_code(
            "42704",
            format!("role \"{n}\" does not exist (roles are reader, writer and admin)"),
        )
    })
}

fn parse(sql: &str) -> Result<RoleStatement> {
    let tokens = lex(sql)?;
    let mut it = tokens.iter().peekable();
    let verb = name(it.next())?;
    if verb == "grant" {
        let access = role(it.next())?;
        if !is_word(it.next(), "to") {
            return Err(syntax("expected GRANT reader|writer|admin TO name"));
        }
        let user = name(it.next())?;
        return finish(
            it.next(),
            RoleStatement::Alter {
                name: user,
                secret: None,
                access: Some(access),
                tag: "GRANT ROLE",
            },
        );
    }
    let kind = it.next();
    if !is_word(kind, "role") && !is_word(kind, "user") {
        return Err(syntax("expected ROLE or USER"));
    }
    if verb == "drop" {
        let mut if_exists = false;
        if is_word(it.peek().copied(), "if") {
            it.next();
            if !is_word(it.next(), "exists") {
                return Err(syntax("expected IF EXISTS"));
            }
            if_exists = true;
        }
        let user = name(it.next())?;
        return finish(
            it.next(),
            RoleStatement::Drop {
                name: user,
                if_exists,
            },
        );
    }
    let user = name(it.next())?;
    let (mut secret, mut access) = (None, None);
    if is_word(it.peek().copied(), "with") {
        it.next();
    }
    while let Some(t) = it.next() {
        let Token::Word(w) = t else {
            return Err(syntax("expected a role option"));
        };
        match w.to_lowercase().as_str() {
            "login" | "nologin" | "inherit" | "noinherit" | "nosuperuser" => {}
            "superuser" => access = Some(Access::Admin),
            "password" => match it.next() {
                Some(Token::Str(s)) => secret = Some(s.clone()),
                _ => return Err(syntax("expected PASSWORD 'secret'")),
            },
            "in" => {
                if !is_word(it.next(), "role") {
                    return Err(syntax("expected IN ROLE reader|writer|admin"));
                }
                access = Some(role(it.next())?);
            }
            other => return Err(syntax(format!("unsupported role option {other}"))),
        }
    }
    let name = user;
    Ok(match verb.as_str() {
        "create" => RoleStatement::Create {
            name,
            secret,
            access,
        },
        "alter" => RoleStatement::Alter {
            name,
            secret,
            access,
            tag: "ALTER ROLE",
        },
        _ => return Err(syntax("expected CREATE, ALTER or DROP")),
    })
}

fn finish(rest: Option<&Token>, stmt: RoleStatement) -> Result<RoleStatement> {
    match rest {
        None => Ok(stmt),
        Some(_) => Err(syntax("unexpected text after the statement")),
    }
}

fn sql_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl RoleStatements {
    async fn record(&self, session: &mut Session, name: &str, user: Option<&User>) -> Result<()> {
        let (verifier, role) = match user {
            Some(u) => (
                sql_text(&u.verifier.to_string()),
                sql_text(u.access.role_name()),
            ),
            None => ("NULL".into(), "NULL".into()),
        };
        session
            .query(&format!(
                "INSERT INTO lookout.roles VALUES (now(), {}, {verifier}, {role}, {})",
                sql_text(name),
                user.is_none()
            ))
            .await?;
        self.users.set_created(name, user.cloned());
        Ok(())
    }

    fn not_configured(&self, name: &str) -> Result<()> {
        if self.users.is_configured(name) {
            return Err(QueryError::with_code(
                "42501",
                format!("role \"{name}\" is defined in the configuration file; change it there"),
            ));
        }
        Ok(())
    }
}

fn secret_error(e: String) -> QueryError {
    QueryError::with_code("22023", e)
}

#[async_trait]
impl SqlExtension for RoleStatements {
    fn claims(&self, sql: &str) -> bool {
        let words: Vec<String> = sql
            .split_whitespace()
            .take(2)
            .map(str::to_lowercase)
            .collect();
        match words.as_slice() {
            [verb, kind] if ["create", "alter", "drop"].contains(&verb.as_str()) => {
                kind == "role" || kind == "user"
            }
            [verb, role] if verb == "grant" => Access::from_role_name(role).is_some(),
            _ => false,
        }
    }

    fn describe(&self, _sql: &str) -> Result<Option<SchemaRef>> {
        Ok(None)
    }

    async fn execute(&self, sql: &str, session: &mut Session) -> Result<Output> {
        match parse(sql)? {
            RoleStatement::Create {
                name,
                secret,
                access,
            } => {
                self.not_configured(&name)?;
                if self.users.get(&name).is_some() {
                    return Err(QueryError::with_code(
                        "42710",
                        format!("role \"{name}\" already exists"),
                    ));
                }
                let secret = secret.ok_or_else(|| {
                    syntax("a role needs a PASSWORD to log in (Lookout has no other login)")
                })?;
                let user = User {
                    verifier: Verifier::from_secret(&secret).map_err(secret_error)?,
                    access: access.unwrap_or(Access::Read),
                };
                self.record(session, &name, Some(&user)).await?;
                Ok(Output::Command {
                    tag: "CREATE ROLE",
                    rows: None,
                })
            }
            RoleStatement::Alter {
                name,
                secret,
                access,
                tag,
            } => {
                self.not_configured(&name)?;
                let mut user = self.users.get(&name).ok_or_else(|| {
                    QueryError::with_code("42704", format!("role \"{name}\" does not exist"))
                })?;
                if let Some(secret) = secret {
                    user.verifier = Verifier::from_secret(&secret).map_err(secret_error)?;
                }
                if let Some(access) = access {
                    user.access = access;
                }
                self.record(session, &name, Some(&user)).await?;
                Ok(Output::Command { tag, rows: None })
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
                    return Err(QueryError::with_code(
                        "42704",
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
                secret: Some("it's".into()),
                access: Some(Access::Read),
            })
        );
        assert_eq!(
            parse("create user \"Ops\" superuser password 'x'").ok(),
            Some(RoleStatement::Create {
                name: "Ops".into(),
                secret: Some("x".into()),
                access: Some(Access::Admin),
            })
        );
        assert_eq!(
            parse("GRANT writer TO grafana").ok(),
            Some(RoleStatement::Alter {
                name: "grafana".into(),
                secret: None,
                access: Some(Access::Write),
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
    }
}
