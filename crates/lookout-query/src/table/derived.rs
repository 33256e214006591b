//! Kinds of derived tables (rollups, sampled tables' held areas): each is
//! recorded by name in its table's definition, and the kind installed under
//! that name tells the storage engine how to combine the table's rows.

use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use lookout_storage::{Combine, Derivation, TableDef};

use crate::error::Result;

/// One kind of derived table, installed by the extension that derives it.
pub trait DerivedKind: Send + Sync + Debug {
    /// The name recorded in its tables' definitions ([`Derivation::kind`]).
    fn name(&self) -> &'static str;

    /// Whether a definition written before kinds were recorded is of this
    /// kind (data directories of earlier releases).
    fn recognises(&self, definition: &str) -> bool {
        let _ = definition;
        false
    }

    /// How the storage engine combines a table's rows when it flushes and
    /// compacts them; `None` keeps them as written.
    fn combiner(&self, table: &TableDef) -> Result<Option<Arc<dyn Combine>>>;

    /// Whether scans of its tables keep decoded columns in the column
    /// cache. A kind whose rows are read once and then dropped says no, so
    /// that reading them does not evict what dashboards read again.
    fn cached(&self) -> bool {
        true
    }

    /// Whether `derivation` is of this kind.
    fn defines(&self, derivation: &Derivation) -> bool {
        match &derivation.kind {
            Some(kind) => kind == self.name(),
            None => self.recognises(&derivation.definition),
        }
    }
}

/// The installed kinds.
#[derive(Debug, Clone, Default)]
pub struct DerivedKinds {
    kinds: Arc<RwLock<Vec<Arc<dyn DerivedKind>>>>,
}

impl DerivedKinds {
    pub(crate) fn register(&self, kind: Arc<dyn DerivedKind>) {
        self.kinds
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(kind);
    }

    /// The installed kind of `derivation`, if any.
    pub fn kind_of(&self, derivation: &Derivation) -> Option<Arc<dyn DerivedKind>> {
        self.kinds
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|k| k.defines(derivation))
            .cloned()
    }
}
