//! Table and view definitions: create, drop, add columns, comments and
//! derived-table definitions, each one manifest commit.

use arrow::datatypes::Field;

use super::{CreateTable, Storage, check_versions, poisoned};
use crate::error::{Result, StorageError};
use crate::manifest::{ExternalTable, Garbage, Manifest, TableEntry};
use crate::schema::{ColumnDef, TableDef, normalize_type};

impl Storage {
    /// Creates a table from an Arrow schema.
    pub async fn create_table(
        &self,
        name: &str,
        schema: &arrow::datatypes::Schema,
        request: CreateTable,
        if_not_exists: bool,
    ) -> Result<bool> {
        self.commit(|m| {
            if name_taken(m, name, if_not_exists)? {
                return Ok(false);
            }
            let def = TableDef::new(
                m.next_table_id,
                name,
                schema,
                request.time_column.as_deref(),
                request.partition_column.as_ref().map(|p| p.as_deref()),
                request.bucket_micros,
                request.ttl_micros,
            )?;
            let mut def = def;
            if let Some(versions) = &request.versions {
                check_versions(&def, versions)?;
                def.options.versions = Some(versions.clone());
            }
            if let Some(derived) = &request.derived {
                if !m.tables.contains_key(&derived.source) {
                    return Err(StorageError::TableNotFound(derived.source.clone()));
                }
                def.derived = Some(derived.clone());
            }
            m.next_table_id += 1;
            m.tables.insert(
                name.to_string(),
                TableEntry {
                    def,
                    files: Default::default(),
                },
            );
            Ok(true)
        })
        .await
    }

    /// Defines a view: `definition` is kept as given (the SQL layer's text)
    /// and committed with the catalog. A table or, unless `replace`, a view
    /// of that name is an error.
    pub async fn create_view(&self, name: &str, definition: &str, replace: bool) -> Result<()> {
        self.commit(|m| {
            if m.tables.contains_key(name)
                || m.external.contains_key(name)
                || (m.views.contains_key(name) && !replace)
            {
                return Err(StorageError::TableExists(name.to_string()));
            }
            m.views.insert(name.to_string(), definition.to_string());
            Ok(())
        })
        .await
    }

    /// Drops a view; `false` if there was none and `if_exists`.
    pub async fn drop_view(&self, name: &str, if_exists: bool) -> Result<bool> {
        self.commit(|m| match m.views.remove(name) {
            Some(_) => Ok(true),
            None if if_exists => Ok(false),
            None => Err(StorageError::TableNotFound(name.to_string())),
        })
        .await
    }

    /// A view's definition.
    pub fn view(&self, name: &str) -> Result<Option<String>> {
        Ok(self.manifest()?.views.get(name).cloned())
    }

    /// The names of the views.
    pub fn view_names(&self) -> Result<Vec<String>> {
        Ok(self.manifest()?.views.keys().cloned().collect())
    }

    /// Defines an external table; a table, view or external table of that
    /// name is an error unless `if_not_exists` (then `false`).
    pub async fn create_external_table(
        &self,
        name: &str,
        table: ExternalTable,
        if_not_exists: bool,
    ) -> Result<bool> {
        self.commit(|m| {
            if name_taken(m, name, if_not_exists)? {
                return Ok(false);
            }
            m.external.insert(name.to_string(), table);
            Ok(true)
        })
        .await
    }

    /// Forgets an external table (its data is not touched); `false` if
    /// there was none and `if_exists`.
    pub async fn drop_external_table(&self, name: &str, if_exists: bool) -> Result<bool> {
        self.commit(|m| match m.external.remove(name) {
            Some(_) => Ok(true),
            None if if_exists => Ok(false),
            None => Err(StorageError::TableNotFound(name.to_string())),
        })
        .await
    }

    /// An external table's definition.
    pub fn external_table(&self, name: &str) -> Result<Option<ExternalTable>> {
        Ok(self.manifest()?.external.get(name).cloned())
    }

    /// The names of the external tables.
    pub fn external_table_names(&self) -> Result<Vec<String>> {
        Ok(self.manifest()?.external.keys().cloned().collect())
    }

    /// Drops a table; its files are collected after the grace period.
    pub async fn drop_table(&self, name: &str, if_exists: bool) -> Result<bool> {
        let dropped = self
            .commit(|m| {
                if let Some(dependent) = m
                    .tables
                    .values()
                    .find(|t| t.def.derived.as_ref().is_some_and(|d| d.source == name))
                {
                    return Err(StorageError::Dependent {
                        table: name.to_string(),
                        dependent: dependent.def.name.clone(),
                    });
                }
                let Some(entry) = m.tables.remove(name) else {
                    return if if_exists {
                        Ok(None)
                    } else {
                        Err(StorageError::TableNotFound(name.to_string()))
                    };
                };
                let since = self.now_micros();
                m.garbage.extend(entry.files.iter().map(|f| Garbage {
                    path: f.path.clone(),
                    since,
                }));
                Ok(Some(entry.def.id))
            })
            .await?;
        if let Some(id) = dropped {
            self.inner
                .state
                .write()
                .map_err(poisoned)?
                .buffers
                .remove(&id);
        }
        Ok(dropped.is_some())
    }

    /// Marks a derived table as complete (see [`Derivation::pending`]).
    pub async fn finish_derivation(&self, name: &str) -> Result<()> {
        self.commit(|m| {
            if let Some(d) = m.table_mut(name)?.def.derived.as_mut() {
                d.pending = false;
            }
            Ok(())
        })
        .await
    }

    /// Replaces the definition of a derived table (see [`Derivation::definition`]).
    pub async fn redefine(&self, name: &str, definition: &str) -> Result<()> {
        self.commit(|m| {
            match m.table_mut(name)?.def.derived.as_mut() {
                Some(d) => d.definition = definition.to_string(),
                None => {
                    return Err(StorageError::InvalidDefinition(format!(
                        "\"{name}\" is not a derived table"
                    )));
                }
            }
            Ok(())
        })
        .await
    }

    /// Sets (or, with `None`, removes) the comment of a table, or of one of
    /// its columns.
    pub async fn set_comment(
        &self,
        table: &str,
        column: Option<&str>,
        comment: Option<&str>,
    ) -> Result<()> {
        self.commit(|m| {
            let def = &mut m.table_mut(table)?.def;
            let slot = match column {
                None => &mut def.comment,
                Some(column) => match def.columns.iter_mut().find(|c| c.name == column) {
                    Some(c) => &mut c.comment,
                    None => {
                        return Err(StorageError::Column(format!(
                            "column \"{column}\" of relation \"{table}\" does not exist"
                        )));
                    }
                },
            };
            *slot = comment.map(str::to_string);
            Ok(())
        })
        .await
    }

    /// Adds a nullable column; existing files are not rewritten (they read as NULL).
    pub async fn add_column(
        &self,
        table: &str,
        field: &Field,
        if_not_exists: bool,
    ) -> Result<bool> {
        self.commit(|m| {
            let entry = m.table_mut(table)?;
            if entry.def.columns.iter().any(|c| c.name == *field.name()) {
                return if if_not_exists {
                    Ok(false)
                } else {
                    Err(StorageError::Column(format!(
                        "column \"{}\" of relation \"{table}\" already exists",
                        field.name()
                    )))
                };
            }
            if !field.is_nullable() {
                return Err(StorageError::InvalidDefinition(format!(
                    "column \"{}\" cannot be NOT NULL: existing rows have no value for it",
                    field.name()
                )));
            }
            entry.def.columns.push(ColumnDef {
                name: field.name().clone(),
                data_type: normalize_type(field.data_type()).to_string(),
                nullable: true,
                sql_type: crate::schema::sql_type_of(field).map(str::to_string),
                comment: None,
            });
            Ok(true)
        })
        .await
    }
}

/// Whether a table, view or external table already has `name`: `true`
/// when `if_not_exists` lets the statement do nothing, an error otherwise.
fn name_taken(m: &Manifest, name: &str, if_not_exists: bool) -> Result<bool> {
    let taken =
        m.tables.contains_key(name) || m.views.contains_key(name) || m.external.contains_key(name);
    match taken {
        true if if_not_exists => Ok(true),
        true => Err(StorageError::TableExists(name.to_string())),
        false => Ok(false),
    }
}
