//! The three levels of access a statement may need.

/// A session's rights, each including the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Queries, session settings and cursors; no writes, no DDL.
    Read,
    /// Also writes (INSERT, COPY FROM STDIN) and table DDL.
    Write,
    /// Also alert rules, roles and server-side file COPY.
    Admin,
}

impl Access {
    /// The role name that grants this access.
    pub fn role_name(self) -> &'static str {
        match self {
            Access::Read => "reader",
            Access::Write => "writer",
            Access::Admin => "admin",
        }
    }

    /// The access a role name grants.
    pub fn from_role_name(name: &str) -> Option<Access> {
        match name.to_ascii_lowercase().as_str() {
            "reader" | "read_only" | "readonly" => Some(Access::Read),
            "writer" | "read_write" => Some(Access::Write),
            "admin" => Some(Access::Admin),
            _ => None,
        }
    }
}
