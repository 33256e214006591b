//! Users, their password verifiers and roles, and SCRAM-SHA-256 login.
//!
//! Users come from two places: the configuration file (replaced as a whole on
//! reload) and `CREATE ROLE ... PASSWORD` (kept in `lookout.roles`). A name in
//! the configuration file wins over the same name created in SQL.
//!
//! Passwords are never stored: a verifier keeps the salt, the iteration count
//! and the salted password SCRAM derives its keys from
//! (`lookout-scram-sha-256$<iterations>:<salt>$<salted password>`, base64).
//! Like Postgres's own SCRAM secrets it cannot be turned back into the
//! password, but a stolen verifier lets its holder log in, so the file and the
//! table deserve the same care as a Postgres `pg_authid`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lookout_query::Access;
use pgwire::api::auth::sasl::scram::gen_salted_password;
use pgwire::api::auth::{AuthSource, LoginInfo, Password};
use pgwire::error::PgWireResult;

/// SCRAM's iteration count for new verifiers (Postgres's default).
pub const SCRAM_ITERATIONS: usize = 4096;

const PREFIX: &str = "lookout-scram-sha-256$";

/// What login needs to know of a password.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    iterations: usize,
    salt: Vec<u8>,
    salted_password: Vec<u8>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verifier(..)")
    }
}

impl Verifier {
    /// A verifier for `password` with a fresh random salt.
    pub fn from_password(password: &str) -> Verifier {
        let salt: [u8; 16] = rand::random();
        Verifier {
            iterations: SCRAM_ITERATIONS,
            salted_password: gen_salted_password(password, &salt, SCRAM_ITERATIONS),
            salt: salt.to_vec(),
        }
    }

    /// Reads the text form (`lookout-scram-sha-256$4096:<salt>$<key>`).
    pub fn parse(text: &str) -> Result<Verifier, String> {
        let bad = || {
            format!(
                "not a Lookout password verifier (expected {PREFIX}<iterations>:<salt>$<key>; `lookout passwd` makes one)"
            )
        };
        let rest = text.strip_prefix(PREFIX).ok_or_else(bad)?;
        let (params, key) = rest.split_once('$').ok_or_else(bad)?;
        let (iterations, salt) = params.split_once(':').ok_or_else(bad)?;
        let iterations: usize = iterations.parse().map_err(|_| bad())?;
        if iterations != SCRAM_ITERATIONS {
            return Err(format!(
                "password verifiers use {SCRAM_ITERATIONS} iterations, this one {iterations}"
            ));
        }
        Ok(Verifier {
            iterations,
            salt: STANDARD.decode(salt).map_err(|_| bad())?,
            salted_password: STANDARD.decode(key).map_err(|_| bad())?,
        })
    }

    /// A verifier from what a user gave: a verifier as is, or a password.
    pub fn from_secret(secret: &str) -> Result<Verifier, String> {
        if secret.starts_with(PREFIX) {
            Verifier::parse(secret)
        } else if secret.is_empty() {
            Err("empty password".into())
        } else {
            Ok(Verifier::from_password(secret))
        }
    }
}

impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}:{}${}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(&self.salted_password)
        )
    }
}

/// A user who may log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Their password's verifier.
    pub verifier: Verifier,
    /// What their sessions may do.
    pub access: Access,
}

/// Everyone who may log in, shared by all connections.
#[derive(Debug, Default)]
pub struct Users {
    from_config: RwLock<HashMap<String, User>>,
    from_sql: RwLock<HashMap<String, User>>,
    mock: MockSecret,
}

/// A random secret of this process, from which unknown users get a salt and
/// key that stay the same at every attempt (as PostgreSQL's mock
/// authentication does), so a login attempt does not tell whether a name
/// exists.
struct MockSecret([u8; 32]);

impl Default for MockSecret {
    fn default() -> Self {
        MockSecret(rand::random())
    }
}

impl fmt::Debug for MockSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MockSecret(..)")
    }
}

impl MockSecret {
    /// A salt and salted password for a user who does not exist: derived
    /// from the name, so repeated attempts see the same salt.
    fn password_for(&self, name: &str) -> Password {
        let salt = gen_salted_password(name, &self.0, 1)[..16].to_vec();
        let key = gen_salted_password(name, &[&self.0[..], b"key"].concat(), 1);
        Password::new(Some(salt), key)
    }
}

impl Users {
    /// Replaces the users the configuration file defines (at start and on reload).
    pub fn set_configured(&self, users: HashMap<String, User>) {
        *self.from_config.write().unwrap_or_else(|p| p.into_inner()) = users;
    }

    /// Adds or replaces a user created in SQL; `None` removes it.
    pub fn set_created(&self, name: &str, user: Option<User>) {
        let mut map = self.from_sql.write().unwrap_or_else(|p| p.into_inner());
        match user {
            Some(u) => map.insert(name.to_string(), u),
            None => map.remove(name),
        };
    }

    /// The user logging in as `name`, if any.
    pub fn get(&self, name: &str) -> Option<User> {
        let configured = self.from_config.read().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = configured.get(name) {
            return Some(u.clone());
        }
        let created = self.from_sql.read().unwrap_or_else(|p| p.into_inner());
        created.get(name).cloned()
    }

    /// Whether `name` comes from the configuration file (SQL cannot change it).
    pub fn is_configured(&self, name: &str) -> bool {
        self.from_config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
    }
}

impl lookout_query::RoleDirectory for Users {
    fn roles(&self) -> Vec<(String, Access)> {
        let mut all: HashMap<String, Access> = self
            .from_sql
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(n, u)| (n.clone(), u.access))
            .collect();
        let configured = self.from_config.read().unwrap_or_else(|p| p.into_inner());
        all.extend(configured.iter().map(|(n, u)| (n.clone(), u.access)));
        all.into_iter().collect()
    }
}

/// Login through SCRAM against [`Users`].
#[derive(Debug)]
pub(crate) struct UserSource(pub(crate) Arc<Users>);

#[async_trait]
impl AuthSource for UserSource {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let name = login.user().unwrap_or_default();
        match self.0.get(name) {
            Some(user) => Ok(Password::new(
                Some(user.verifier.salt.clone()),
                user.verifier.salted_password.clone(),
            )),
            // A made-up salt and key: the exchange runs as for a known user
            // and fails as a wrong password does, so which names exist is
            // not told.
            None => Ok(self.0.mock.password_for(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_users_get_a_stable_made_up_salt() {
        let users = Users::default();
        users.set_created(
            "known",
            Some(User {
                verifier: Verifier::from_password("pw"),
                access: Access::Read,
            }),
        );
        let first = users.mock.password_for("nobody");
        let again = users.mock.password_for("nobody");
        let other = users.mock.password_for("somebody");
        assert_eq!(first.salt(), again.salt());
        assert_eq!(first.salt().map(<[u8]>::len), Some(16));
        assert_ne!(first.salt(), other.salt());
        assert_ne!(first.password(), &[] as &[u8]);
        // Another process (another secret) makes up other salts.
        assert_ne!(
            first.salt(),
            Users::default().mock.password_for("nobody").salt()
        );
    }

    #[test]
    fn verifiers_round_trip_and_reject_garbage() {
        let v = Verifier::from_password("s3cret");
        let text = v.to_string();
        assert!(text.starts_with("lookout-scram-sha-256$4096:"), "{text}");
        assert_eq!(Verifier::parse(&text), Ok(v.clone()));
        assert_eq!(Verifier::from_secret(&text), Ok(v));
        assert!(Verifier::parse("SCRAM-SHA-256$4096:abc$def:ghi").is_err());
        assert!(Verifier::parse("lookout-scram-sha-256$100:AAAA$AAAA").is_err());
        assert!(Verifier::from_secret("").is_err());
        // The same password with another salt gives another verifier.
        assert_ne!(
            Verifier::from_password("s3cret"),
            Verifier::from_password("s3cret")
        );
    }

    #[test]
    fn configured_users_win_over_created_ones() {
        let users = Users::default();
        let created = User {
            verifier: Verifier::from_password("a"),
            access: Access::Admin,
        };
        let configured = User {
            verifier: Verifier::from_password("b"),
            access: Access::Read,
        };
        users.set_created("ann", Some(created.clone()));
        assert_eq!(users.get("ann"), Some(created));
        users.set_configured(HashMap::from([("ann".to_string(), configured.clone())]));
        assert_eq!(users.get("ann"), Some(configured));
        assert!(users.is_configured("ann"));
        users.set_configured(HashMap::new());
        users.set_created("ann", None);
        assert_eq!(users.get("ann"), None);
    }
}
