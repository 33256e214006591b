//! The `public` and `lookout` schemas: Lookout's tables as DataFusion sees them.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::Result;
use lookout_storage::StorageError;

use crate::error::SqlState;
use crate::ext::names::SYSTEM_PREFIX;
use crate::ingest::Ingest;
use crate::table::external::ExternalProvider;
use crate::table::provider::{LookoutTable, storage_err};
use crate::table::status::{STATUS_TABLES, StatusTable};

/// Lists and opens tables from the storage manifest at each lookup, so every
/// query is planned against the tables in force; the files and rows it
/// reads are those of the moment it runs.
/// Views (`CREATE VIEW`) are listed with the tables and planned at each
/// query, as the `lookout` schema's views are.
#[derive(Debug)]
pub(crate) struct LookoutSchema {
    lookout: crate::Lookout,
}

impl LookoutSchema {
    pub(crate) fn new(lookout: crate::Lookout) -> Self {
        LookoutSchema { lookout }
    }
}

#[async_trait]
impl SchemaProvider for LookoutSchema {
    fn table_names(&self) -> Vec<String> {
        let storage = self.lookout.storage();
        let mut names = storage.table_names().unwrap_or_default();
        names.retain(|n| !n.starts_with(SYSTEM_PREFIX));
        names.extend(storage.view_names().unwrap_or_default());
        names.extend(storage.external_table_names().unwrap_or_default());
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if name.starts_with(SYSTEM_PREFIX) {
            return Ok(None);
        }
        let storage = self.lookout.storage();
        if let Some(sql) = storage.view(name).map_err(storage_err)? {
            return plan_view(&self.lookout, &sql).await.map(Some);
        }
        if let Some(table) = storage.external_table(name).map_err(storage_err)? {
            let provider = ExternalProvider::new(self.lookout.clone(), name, table)
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            return Ok(Some(Arc::new(provider)));
        }
        open_table(self.lookout.ingest(), name)
    }

    fn table_exist(&self, name: &str) -> bool {
        let storage = self.lookout.storage();
        !name.starts_with(SYSTEM_PREFIX)
            && (storage.table(name).is_ok()
                || storage.view(name).ok().flatten().is_some()
                || storage.external_table(name).ok().flatten().is_some())
    }
}

/// A table for planning: its definition now; its rows are read from the
/// snapshot each execution takes.
fn open_table(ingest: &Ingest, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
    match ingest.storage().table(name) {
        Ok(def) => {
            let versions = def.options.versions.clone();
            let table = LookoutTable::new(ingest.clone(), def)?;
            Ok(Some(match versions {
                Some(v) => Arc::new(crate::table::versions::LatestVersions::new(table, v)),
                None => Arc::new(table),
            }))
        }
        Err(StorageError::TableNotFound(_)) => Ok(None),
        Err(e) => Err(storage_err(e)),
    }
}

/// The `lookout` schema: tables Lookout's own components keep (their storage
/// names carry the `lookout.` prefix) and the views they define.
#[derive(Debug)]
pub(crate) struct SystemSchema {
    lookout: crate::Lookout,
}

impl SystemSchema {
    pub(crate) fn new(lookout: crate::Lookout) -> Self {
        SystemSchema { lookout }
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .lookout
            .storage()
            .table_names()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| n.strip_prefix(SYSTEM_PREFIX).map(str::to_string))
            .collect();
        names.extend(self.lookout.view_names());
        names.extend(STATUS_TABLES.iter().map(|n| n.to_string()));
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(status) = StatusTable::open(&self.lookout, name) {
            return Ok(Some(Arc::new(status)));
        }
        if let Some(sql) = self.lookout.view(name) {
            return plan_view(&self.lookout, &sql).await.map(Some);
        }
        open_table(self.lookout.ingest(), &format!("{SYSTEM_PREFIX}{name}"))
    }

    fn table_exist(&self, name: &str) -> bool {
        STATUS_TABLES.contains(&name)
            || self.lookout.view(name).is_some()
            || self
                .lookout
                .storage()
                .table(&format!("{SYSTEM_PREFIX}{name}"))
                .is_ok()
    }
}

/// Views within views planned at most this deep: views that read each other
/// (`a` over `b` over `a`, made with `CREATE OR REPLACE`) fail with 42P17
/// instead of recursing until the stack overflows.
const MAX_VIEW_DEPTH: usize = 16;

tokio::task_local! {
    static VIEW_DEPTH: usize;
}

/// A view: its SQL planned at each query, so it sees the tables of the moment.
async fn plan_view(lookout: &crate::Lookout, sql: &str) -> Result<Arc<dyn TableProvider>> {
    let depth = VIEW_DEPTH.try_with(|d| *d).unwrap_or(0);
    if depth >= MAX_VIEW_DEPTH {
        return Err(datafusion::error::DataFusionError::External(Box::new(
            crate::error::QueryError::new(
                SqlState::InvalidObjectDefinition,
                format!("infinite recursion detected in views (more than {MAX_VIEW_DEPTH} deep)"),
            ),
        )));
    }
    let session = crate::Session::new(lookout.clone());
    let plan = Box::pin(VIEW_DEPTH.scope(depth + 1, session.logical_plan(sql)))
        .await
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
    Ok(Arc::new(datafusion::catalog::view::ViewTable::new(
        plan,
        Some(sql.to_string()),
    )))
}

/// `information_schema` as Postgres defines it, as views over `pg_catalog`,
/// so tools see Postgres type names (`timestamp with time zone`, `bigint`).
#[derive(Debug)]
pub(crate) struct InformationSchema {
    lookout: crate::Lookout,
}

impl InformationSchema {
    pub(crate) fn new(lookout: crate::Lookout) -> Self {
        InformationSchema { lookout }
    }

    fn view(name: &str) -> Option<&'static str> {
        INFORMATION_SCHEMA_VIEWS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, sql)| *sql)
    }
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        INFORMATION_SCHEMA_VIEWS
            .iter()
            .map(|(n, _)| n.to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        match Self::view(name) {
            Some(sql) => plan_view(&self.lookout, sql).await.map(Some),
            None => Ok(None),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        Self::view(name).is_some()
    }
}

/// The `information_schema` views clients read, each defined over
/// `pg_catalog` as in Postgres (the constraint views are empty: Lookout tables
/// have no keys).
const INFORMATION_SCHEMA_VIEWS: &[(&str, &str)] = &[
    (
        "schemata",
        "SELECT current_database() AS catalog_name, nspname AS schema_name, \
         'lookout' AS schema_owner, CAST(NULL AS TEXT) AS default_character_set_catalog, \
         CAST(NULL AS TEXT) AS default_character_set_schema, \
         CAST(NULL AS TEXT) AS default_character_set_name, CAST(NULL AS TEXT) AS sql_path \
         FROM pg_catalog.pg_namespace",
    ),
    (
        "tables",
        "SELECT current_database() AS table_catalog, n.nspname AS table_schema, \
         c.relname AS table_name, \
         CASE c.relkind WHEN 'v' THEN 'VIEW' ELSE 'BASE TABLE' END AS table_type, \
         CAST(NULL AS TEXT) AS self_referencing_column_name, \
         CAST(NULL AS TEXT) AS reference_generation, CAST(NULL AS TEXT) AS user_defined_type_catalog, \
         CAST(NULL AS TEXT) AS user_defined_type_schema, CAST(NULL AS TEXT) AS user_defined_type_name, \
         CASE c.relkind WHEN 'v' THEN 'NO' ELSE 'YES' END AS is_insertable_into, \
         'NO' AS is_typed, CAST(NULL AS TEXT) AS commit_action \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON c.relnamespace = n.oid \
         WHERE c.relkind IN ('r', 'p', 'v')",
    ),
    (
        "views",
        "SELECT current_database() AS table_catalog, n.nspname AS table_schema, \
         c.relname AS table_name, CAST(NULL AS TEXT) AS view_definition, \
         'NONE' AS check_option, 'NO' AS is_updatable, 'NO' AS is_insertable_into, \
         'NO' AS is_trigger_updatable, 'NO' AS is_trigger_deletable, \
         'NO' AS is_trigger_insertable_into \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON c.relnamespace = n.oid \
         WHERE c.relkind = 'v'",
    ),
    (
        "columns",
        "SELECT current_database() AS table_catalog, n.nspname AS table_schema, \
         c.relname AS table_name, a.attname AS column_name, \
         CAST(a.attnum AS INT) AS ordinal_position, CAST(NULL AS TEXT) AS column_default, \
         CASE WHEN a.attnotnull THEN 'NO' ELSE 'YES' END AS is_nullable, \
         CASE WHEN t.typcategory = 'A' THEN 'ARRAY' \
              WHEN t.typname = 'numeric' THEN 'numeric' \
              ELSE format_type(a.atttypid, NULL) END AS data_type, \
         CAST(NULL AS INT) AS character_maximum_length, \
         CAST(NULL AS INT) AS character_octet_length, \
         CAST(CASE t.typname WHEN 'int2' THEN 16 WHEN 'int4' THEN 32 WHEN 'int8' THEN 64 \
              WHEN 'float4' THEN 24 WHEN 'float8' THEN 53 END AS INT) AS numeric_precision, \
         CAST(CASE WHEN t.typname IN ('int2', 'int4', 'int8', 'float4', 'float8') THEN 2 END \
              AS INT) AS numeric_precision_radix, \
         CAST(CASE WHEN t.typname IN ('int2', 'int4', 'int8') THEN 0 END AS INT) AS numeric_scale, \
         CAST(CASE WHEN t.typname IN ('timestamptz', 'timestamp') THEN 6 \
              WHEN t.typname = 'date' THEN 0 END AS INT) AS datetime_precision, \
         CAST(NULL AS TEXT) AS interval_type, CAST(NULL AS INT) AS interval_precision, \
         CAST(NULL AS TEXT) AS character_set_catalog, CAST(NULL AS TEXT) AS character_set_schema, \
         CAST(NULL AS TEXT) AS character_set_name, CAST(NULL AS TEXT) AS collation_catalog, \
         CAST(NULL AS TEXT) AS collation_schema, CAST(NULL AS TEXT) AS collation_name, \
         CAST(NULL AS TEXT) AS domain_catalog, CAST(NULL AS TEXT) AS domain_schema, \
         CAST(NULL AS TEXT) AS domain_name, current_database() AS udt_catalog, \
         'pg_catalog' AS udt_schema, t.typname AS udt_name, \
         CAST(a.attnum AS INT) AS dtd_identifier, 'NO' AS is_self_referencing, \
         'NO' AS is_identity, CAST(NULL AS TEXT) AS identity_generation, \
         'NEVER' AS is_generated, CAST(NULL AS TEXT) AS generation_expression, \
         CASE c.relkind WHEN 'v' THEN 'NO' ELSE 'YES' END AS is_updatable \
         FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_class c ON a.attrelid = c.oid \
         JOIN pg_catalog.pg_namespace n ON c.relnamespace = n.oid \
         JOIN pg_catalog.pg_type t ON a.atttypid = t.oid \
         WHERE a.attnum > 0 AND NOT a.attisdropped",
    ),
    (
        "table_constraints",
        "SELECT CAST(NULL AS TEXT) AS constraint_catalog, CAST(NULL AS TEXT) AS constraint_schema, \
         CAST(NULL AS TEXT) AS constraint_name, CAST(NULL AS TEXT) AS table_catalog, \
         CAST(NULL AS TEXT) AS table_schema, CAST(NULL AS TEXT) AS table_name, \
         CAST(NULL AS TEXT) AS constraint_type, CAST(NULL AS TEXT) AS is_deferrable, \
         CAST(NULL AS TEXT) AS initially_deferred, CAST(NULL AS TEXT) AS enforced, \
         CAST(NULL AS TEXT) AS nulls_distinct WHERE false",
    ),
    (
        "key_column_usage",
        "SELECT CAST(NULL AS TEXT) AS constraint_catalog, CAST(NULL AS TEXT) AS constraint_schema, \
         CAST(NULL AS TEXT) AS constraint_name, CAST(NULL AS TEXT) AS table_catalog, \
         CAST(NULL AS TEXT) AS table_schema, CAST(NULL AS TEXT) AS table_name, \
         CAST(NULL AS TEXT) AS column_name, CAST(NULL AS INT) AS ordinal_position, \
         CAST(NULL AS INT) AS position_in_unique_constraint WHERE false",
    ),
    (
        "referential_constraints",
        "SELECT CAST(NULL AS TEXT) AS constraint_catalog, CAST(NULL AS TEXT) AS constraint_schema, \
         CAST(NULL AS TEXT) AS constraint_name, CAST(NULL AS TEXT) AS unique_constraint_catalog, \
         CAST(NULL AS TEXT) AS unique_constraint_schema, \
         CAST(NULL AS TEXT) AS unique_constraint_name, CAST(NULL AS TEXT) AS match_option, \
         CAST(NULL AS TEXT) AS update_rule, CAST(NULL AS TEXT) AS delete_rule WHERE false",
    ),
];
