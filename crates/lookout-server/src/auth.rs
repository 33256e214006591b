//! Users, their password verifiers and roles, and SCRAM-SHA-256 login.
//!
//! Users come from two places: the configuration file (replaced as a whole on
//! reload) and `CREATE ROLE ... PASSWORD` (kept in `lookout.roles`). A name in
//! the configuration file wins over the same name created in SQL.
//!
//! Passwords are never stored. A verifier is PostgreSQL's SCRAM secret,
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64), as
//! `pg_authid.rolpassword` holds it: one made by PostgreSQL (psql's
//! `\password`, `pg_authid`) works here and the other way round. It cannot be
//! turned back into the password, and it does not log in: a login proves
//! knowledge of the key whose hash is `StoredKey` (see [`crate::scram`]).
//!
//! Earlier versions kept the salted password itself
//! (`lookout-scram-sha-256$4096:<salt>$<salted password>`), which does log in
//! when stolen. Such a verifier is still read, converted to stored keys at
//! once; `lookout.roles` is rewritten at start (see [`crate::roles`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lookout_query::Access;
use pgwire::api::auth::sasl::scram::gen_salted_password;

use crate::scram::{KEY_LEN, StoredKeys, hmac_sha256};

/// SCRAM's iteration count for new verifiers (Postgres's default).
pub const SCRAM_ITERATIONS: usize = 4096;

const PREFIX: &str = "SCRAM-SHA-256$";
const LEGACY_PREFIX: &str = "lookout-scram-sha-256$";

/// What login needs to know of a password.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier(pub(crate) StoredKeys);

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verifier(..)")
    }
}

impl Verifier {
    /// A verifier for `password` with a fresh random salt.
    pub fn from_password(password: &str) -> Verifier {
        let salt: [u8; 16] = rand::random();
        let salted = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
        Verifier(StoredKeys::from_salted_password(
            SCRAM_ITERATIONS as u32,
            salt.to_vec(),
            &salted,
        ))
    }

    /// Reads a verifier's text form: PostgreSQL's SCRAM secret, or the
    /// salted-password form of earlier Lookout versions (converted).
    pub fn parse(text: &str) -> Result<Verifier, String> {
        let bad = || {
            format!(
                "not a SCRAM-SHA-256 password verifier (expected {PREFIX}<iterations>:<salt>$<StoredKey>:<ServerKey>; `lookout passwd` makes one)"
            )
        };
        let (legacy, rest) = match text.strip_prefix(PREFIX) {
            Some(rest) => (false, rest),
            None => (true, text.strip_prefix(LEGACY_PREFIX).ok_or_else(bad)?),
        };
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iterations, salt) = params.split_once(':').ok_or_else(bad)?;
        let iterations: u32 = iterations.parse().ok().filter(|i| *i > 0).ok_or_else(bad)?;
        let salt = STANDARD.decode(salt).map_err(|_| bad())?;
        let key = |text: &str| -> Result<[u8; KEY_LEN], String> {
            let bytes = STANDARD.decode(text).map_err(|_| bad())?;
            bytes.try_into().map_err(|_| bad())
        };
        if legacy {
            let salted = key(keys)?;
            return Ok(Verifier(StoredKeys::from_salted_password(
                iterations, salt, &salted,
            )));
        }
        let (stored_key, server_key) = keys.split_once(':').ok_or_else(bad)?;
        Ok(Verifier(StoredKeys {
            iterations,
            salt,
            stored_key: key(stored_key)?,
            server_key: key(server_key)?,
        }))
    }

    /// Whether `text` is in the salted-password form of earlier versions,
    /// which logs in when stolen and should be replaced.
    pub fn is_legacy(text: &str) -> bool {
        text.starts_with(LEGACY_PREFIX)
    }

    /// A verifier from what a user gave: a verifier as is, or a password.
    pub fn from_secret(secret: &str) -> Result<Verifier, String> {
        if secret.starts_with(PREFIX) || Verifier::is_legacy(secret) {
            Verifier::parse(secret)
        } else if is_md5_hash(secret) {
            Err("MD5 password hashes cannot log in with SCRAM-SHA-256; give the password, or a SCRAM-SHA-256 verifier".into())
        } else if secret.is_empty() {
            Err("empty password".into())
        } else {
            Ok(Verifier::from_password(secret))
        }
    }
}

/// `md5` and 32 hex digits: what PostgreSQL takes for an MD5 hash.
fn is_md5_hash(secret: &str) -> bool {
    secret.len() == 35
        && secret.starts_with("md5")
        && secret[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let StoredKeys {
            iterations,
            salt,
            stored_key,
            server_key,
        } = &self.0;
        write!(
            f,
            "{PREFIX}{iterations}:{}${}:{}",
            STANDARD.encode(salt),
            STANDARD.encode(stored_key),
            STANDARD.encode(server_key)
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
    /// What their sessions may use.
    pub limits: RoleLimits,
}

/// Per-role resource limits, as PostgreSQL's `CONNECTION LIMIT` and
/// `ALTER ROLE ... SET statement_timeout`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoleLimits {
    /// Connections the user may have open at once; `None` is no limit.
    /// Admins are not held to it (as PostgreSQL's superusers are not), so
    /// they can always log in to change it.
    pub connections: Option<u32>,
    /// The longest any statement of the user may run: their sessions'
    /// `statement_timeout`, which they may lower but not raise.
    pub statement_timeout_ms: Option<u64>,
}

/// Everyone who may log in, shared by all connections.
#[derive(Debug, Default)]
pub struct Users {
    from_config: RwLock<HashMap<String, User>>,
    from_sql: RwLock<HashMap<String, User>>,
    mock: MockSecret,
    /// Open connections by user, for `CONNECTION LIMIT`.
    open: Arc<Mutex<HashMap<String, u32>>>,
}

/// One logged-in connection of a user, counted until dropped.
#[derive(Debug)]
pub(crate) struct Admission {
    open: Arc<Mutex<HashMap<String, u32>>>,
    name: String,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.name) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.name);
            }
        }
    }
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
    /// Keys for a user who does not exist: derived from the name, so
    /// repeated attempts see the same salt, and matching no password.
    pub(crate) fn keys_for(&self, name: &str) -> StoredKeys {
        let derive = |what: &[u8]| hmac_sha256(&self.0, &[what, name.as_bytes()].concat());
        StoredKeys {
            iterations: SCRAM_ITERATIONS as u32,
            salt: derive(b"salt")[..16].to_vec(),
            stored_key: derive(b"stored key"),
            server_key: derive(b"server key"),
        }
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

    /// Replaces every user created in SQL (a replica re-reading the
    /// writer's `lookout.roles`).
    pub fn replace_created(&self, users: HashMap<String, User>) {
        *self.from_sql.write().unwrap_or_else(|p| p.into_inner()) = users;
    }

    /// The users created in SQL, by name (configured ones of the same
    /// name included, which they shadow).
    pub(crate) fn created(&self) -> Vec<(String, User)> {
        let created = self.from_sql.read().unwrap_or_else(|p| p.into_inner());
        created
            .iter()
            .map(|(n, u)| (n.clone(), u.clone()))
            .collect()
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

impl Users {
    /// Counts a new connection of `user` (logged in as `name`), or refuses
    /// it with 53300 when the user's connection limit is reached.
    pub(crate) fn admit(&self, name: &str, user: &User) -> Result<Admission, String> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(name.to_string()).or_default();
        if let Some(limit) = user.limits.connections
            && user.access != Access::Admin
            && *count >= limit
        {
            return Err(format!("too many connections for role \"{name}\""));
        }
        *count += 1;
        Ok(Admission {
            open: Arc::clone(&self.open),
            name: name.to_string(),
        })
    }

    /// The keys a login as `name` is checked against: the user's, or made-up
    /// ones for an unknown name, so that the exchange runs as for a known
    /// user and fails as a wrong password does (which names exist is not
    /// told).
    pub(crate) fn login_keys(&self, name: &str) -> StoredKeys {
        match self.get(name) {
            Some(user) => user.verifier.0,
            None => self.mock.keys_for(name),
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
                limits: RoleLimits::default(),
            }),
        );
        let first = users.login_keys("nobody");
        let again = users.login_keys("nobody");
        let other = users.login_keys("somebody");
        assert_eq!(first.salt, again.salt);
        assert_eq!(first.salt.len(), 16);
        assert_eq!(first.iterations, 4096);
        assert_ne!(first.salt, other.salt);
        assert_ne!(first.stored_key, first.server_key);
        // Another process (another secret) makes up other salts.
        assert_ne!(first.salt, Users::default().login_keys("nobody").salt);
    }

    #[test]
    fn verifiers_round_trip_and_reject_garbage() {
        let v = Verifier::from_password("s3cret");
        let text = v.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
        assert_eq!(Verifier::parse(&text), Ok(v.clone()));
        assert_eq!(Verifier::from_secret(&text), Ok(v));
        for bad in [
            "SCRAM-SHA-256$4096:abc$def:ghi",
            "SCRAM-SHA-256$0:AAAA$AAAA:AAAA",
            "SCRAM-SHA-256$4096:AAAA$AAAA",
            "lookout-scram-sha-256$4096:AAAA$AAAA",
        ] {
            assert!(Verifier::parse(bad).is_err(), "{bad}");
        }
        assert!(Verifier::from_secret("").is_err());
        assert!(Verifier::from_secret("md5a3556571e93b0d20722ba62be61e8c2d").is_err());
        // The same password with another salt gives another verifier.
        assert_ne!(
            Verifier::from_password("s3cret"),
            Verifier::from_password("s3cret")
        );
    }

    #[test]
    fn postgres_verifiers_are_read_as_they_are() {
        // Made by PostgreSQL 15 for the password "secret"
        // (SET password_encryption = 'scram-sha-256'; CREATE ROLE ... PASSWORD).
        let pg = "SCRAM-SHA-256$4096:jgysaQoHwdUiRWbEII5zVw==$zO4qxPpRG/q0nqjOtaHMB97ocdfkx2co3hSglbUR6Pw=:p9oBEfxTkT2KkudjKSBjbhdWB1M3CA0CEcq8nWbn5hg=";
        let v = Verifier::parse(pg).expect("a PostgreSQL verifier");
        assert_eq!(v.to_string(), pg);
        assert_eq!(v.0.iterations, 4096);
        // It checks against the same password, derived independently.
        let salted = gen_salted_password("secret", &v.0.salt, 4096);
        assert_eq!(
            StoredKeys::from_salted_password(4096, v.0.salt.clone(), &salted),
            v.0
        );
    }

    #[test]
    fn legacy_verifiers_become_stored_keys() {
        let salt = [7u8; 16];
        let salted = gen_salted_password("old", &salt, 4096);
        let legacy = format!(
            "lookout-scram-sha-256$4096:{}${}",
            STANDARD.encode(salt),
            STANDARD.encode(&salted)
        );
        assert!(Verifier::is_legacy(&legacy));
        let v = Verifier::parse(&legacy).expect("legacy form");
        assert_eq!(
            v.0,
            StoredKeys::from_salted_password(4096, salt.to_vec(), &salted)
        );
        let text = v.to_string();
        assert!(!Verifier::is_legacy(&text));
        assert!(!text.contains(&STANDARD.encode(&salted)));
    }

    #[test]
    fn configured_users_win_over_created_ones() {
        let users = Users::default();
        let created = User {
            verifier: Verifier::from_password("a"),
            access: Access::Admin,
            limits: RoleLimits::default(),
        };
        let configured = User {
            verifier: Verifier::from_password("b"),
            access: Access::Read,
            limits: RoleLimits::default(),
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
