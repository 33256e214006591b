//! What Postgres clients expect beyond standard SQL: the `pg_catalog` schema
//! and its functions, an `information_schema` in Postgres's terms, `version()`,
//! and rewrites of the Postgres-only syntax that clients' catalog queries use.
//!
//! The `pg_catalog` tables, their functions and the rewrite rules come from
//! `datafusion-pg-catalog`; this module connects them to Lookout's schemas.

use std::sync::{Arc, LazyLock};

use crate::pg::dialect::Postgres;
use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{ObjectName, Statement, visit_relations};
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
use datafusion_pg_catalog::pg_catalog::context::{PgCatalogContextProvider, Role};
use datafusion_pg_catalog::pg_catalog::{
    self as pg, PG_CATALOG_TABLES, PgCatalogSchemaProvider, PgCatalogStaticTables,
};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_pg_catalog::sql::rules::{
    FixArrayLiteral, FixVersionColumnName, RewriteArrayAnyAllOperation, RewritePgCatalogOperator,
    RewriteRegCastToSubquery, SqlStatementRewriteRule, StripCallableQualifier, StripCollate,
};

/// The database name clients see (`current_database()`, `pg_database`).
pub(crate) const DATABASE: &str = "lookout";

/// The Postgres release whose behaviour and catalog clients should assume.
pub(crate) const SERVER_VERSION: &str = "16.6";

/// Schemas every session has besides the ones holding tables.
const CATALOG_SCHEMAS: [&str; 2] = ["information_schema", "pg_catalog"];

/// The static `pg_catalog` rows (a Postgres dump): decoded once per process.
static STATIC_TABLES: LazyLock<Result<Arc<PgCatalogStaticTables>, String>> = LazyLock::new(|| {
    PgCatalogStaticTables::try_new()
        .map(Arc::new)
        .map_err(|e| e.to_string())
});

/// The catalog functions, built once per process: sessions register clones
/// (an alert evaluation opens a session, so per-session work adds up).
/// `session_user` is the session's own (see `functions.rs`).
static CATALOG_FUNCTIONS: LazyLock<Vec<ScalarUDF>> = LazyLock::new(|| {
    use datafusion::arrow::datatypes::DataType;
    let mut functions = vec![
        pg::create_current_database_udf(DATABASE),
        pg::create_current_schema_udf(),
        pg::create_current_schemas_udf(),
        pg::create_pg_get_userbyid_udf(),
        pg::create_pg_table_is_visible(),
        pg::format_type::create_format_type_udf(),
        pg::pg_get_expr_udf::create_pg_get_expr_udf(),
        pg::create_pg_get_partkeydef_udf(),
        pg::create_pg_relation_is_publishable_udf(),
        pg::create_pg_get_statisticsobjdef_columns_udf(),
        pg::create_pg_encoding_to_char_udf(),
        pg::create_pg_backend_pid_udf(),
        pg::create_pg_relation_size_udf(),
        pg::create_pg_total_relation_size_udf(),
        pg::create_pg_stat_get_numscans(),
        pg::create_pg_get_constraintdef(),
        pg::create_pg_get_partition_ancestors_udf(),
        pg::quote_ident_udf::create_quote_ident_udf(),
        pg::quote_ident_udf::create_parse_ident_udf(),
        pg::array_bounds_udf::create_array_upper_udf(),
        pg::array_bounds_udf::create_array_lower_udf(),
        version_udf(),
        size_pretty_udf(),
    ];
    functions.extend(
        [
            "has_table_privilege",
            "has_schema_privilege",
            "has_database_privilege",
            "has_any_column_privilege",
        ]
        .map(pg::has_privilege_udf::create_has_privilege_udf),
    );
    functions.extend(
        [
            "shobj_description",
            "pg_get_function_sqlbody",
            "pg_get_indexdef",
            "pg_get_viewdef",
            "pg_get_triggerdef",
            "pg_get_ruledef",
            "pg_get_serial_sequence",
            "pg_tablespace_location",
        ]
        .map(|name| ScalarUDF::new_from_impl(NullFunction::new(name, DataType::Utf8))),
    );
    // Sizes of tables and indexes as psql's `\dt+` asks for them: unknown.
    functions.extend(
        ["pg_table_size", "pg_indexes_size"]
            .map(|name| ScalarUDF::new_from_impl(NullFunction::new(name, DataType::Int64))),
    );
    functions.extend(
        [
            "pg_function_is_visible",
            "pg_type_is_visible",
            "pg_collation_is_visible",
            "pg_opclass_is_visible",
            "pg_operator_is_visible",
        ]
        .map(visible_udf),
    );
    functions.extend(crate::pg::function_catalog::describing_functions());
    if let Ok(static_tables) = STATIC_TABLES.as_ref() {
        functions.push(to_regtype_udf(static_tables));
    }
    functions
});

/// Adds `pg_catalog`, `information_schema` and the Postgres functions clients
/// call to a session whose `catalog` holds `user_schemas` (`public` and
/// `lookout`).
pub(crate) fn register(
    ctx: &SessionContext,
    lookout: &crate::Lookout,
    catalog: &Arc<dyn CatalogProvider>,
    user_schemas: Vec<(&'static str, Arc<dyn SchemaProvider>)>,
    information_schema: Arc<dyn SchemaProvider>,
    settings: crate::functions::SettingValues,
    cursors: Arc<crate::cursor::Cursors>,
) -> DfResult<()> {
    let static_tables = STATIC_TABLES
        .as_ref()
        .map_err(|e| DataFusionError::Internal(format!("pg_catalog tables: {e}")))?;
    let tables = UserSchemas {
        schemas: Arc::new(user_schemas),
    };
    let relations = Arc::new(crate::pg::comments::RelationNames::default());
    let pg_catalog = PgCatalogSchemaProvider::try_new(
        tables.clone(),
        Arc::clone(static_tables),
        LookoutRoles(lookout.clone()),
    )?;
    catalog.register_schema(
        "pg_catalog",
        Arc::new(PgCatalog {
            inner: Arc::new(pg_catalog),
            settings,
            cursors,
            tables,
            relations: Arc::clone(&relations),
        }),
    )?;
    catalog.register_schema("information_schema", information_schema)?;

    for function in CATALOG_FUNCTIONS.iter() {
        ctx.register_udf(function.clone());
    }
    ctx.register_udf(in_recovery_udf(lookout.storage().is_read_only()));
    for function in crate::pg::comments::description_functions(lookout, &relations) {
        ctx.register_udf(function);
    }
    ctx.register_udtf("pg_get_keywords", static_tables.pg_get_keywords.clone());
    pg::generate_series_arg_coercion::CoerceIntArgsToBigInt::widen(ctx);
    Ok(())
}

/// The type planner that lets `::regclass`, `::oid` and friends parse.
pub(crate) fn type_planner() -> Arc<dyn datafusion::logical_expr::planner::TypePlanner> {
    Arc::new(pg::oid_type_planner::PgOidTypePlanner)
}

/// `version()` in the form drivers parse (SQLAlchemy reads "PostgreSQL x.y").
fn version_udf() -> ScalarUDF {
    let text = format!(
        "PostgreSQL {SERVER_VERSION} (Lookout {}) on {}-{}, 64-bit",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS,
    );
    create_udf(
        "version",
        vec![],
        datafusion::arrow::datatypes::DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.clone()))))),
    )
}

/// `pg_is_in_recovery()`: true on a read-only replica, as on a hot
/// standby, which is how monitoring scripts and failover tools tell a
/// standby from its primary.
fn in_recovery_udf(replica: bool) -> ScalarUDF {
    create_udf(
        "pg_is_in_recovery",
        vec![],
        datafusion::arrow::datatypes::DataType::Boolean,
        Volatility::Stable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(replica))))),
    )
}

/// `pg_size_pretty(bytes)`: bytes, kB, MB, GB or TB as Postgres prints them
/// (the next unit from 10240 of the current one, rounded half up).
fn size_pretty_udf() -> ScalarUDF {
    use datafusion::arrow::array::{AsArray, StringBuilder};
    use datafusion::arrow::datatypes::{DataType, Int64Type};
    create_udf(
        "pg_size_pretty",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args| {
            let sizes = ColumnarValue::values_to_arrays(args)?;
            let sizes = sizes[0].as_primitive::<Int64Type>();
            let mut out = StringBuilder::with_capacity(sizes.len(), sizes.len() * 8);
            for size in sizes.iter() {
                out.append_option(size.map(pretty_size));
            }
            Ok(ColumnarValue::Array(Arc::new(out.finish())))
        }),
    )
}

fn pretty_size(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["bytes", "kB", "MB", "GB", "TB"];
    let (mut size, mut unit) = (bytes as f64, 0);
    while size.abs() >= 10240.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    format!("{} {}", size.round() as i64, UNITS[unit])
}

/// `to_regtype(name)`: the oid of a built-in type by name, NULL when there is
/// no such type (drivers probe for extension types such as hstore this way).
fn to_regtype_udf(tables: &PgCatalogStaticTables) -> ScalarUDF {
    use datafusion::arrow::array::{Array, AsArray, Int32Builder};
    use datafusion::arrow::datatypes::{DataType, Int32Type};
    let mut oids = std::collections::HashMap::new();
    for batch in tables.pg_type.data() {
        let (Some(oid), Some(name)) =
            (batch.column_by_name("oid"), batch.column_by_name("typname"))
        else {
            continue;
        };
        let (Some(oid), Some(name)) = (
            oid.as_primitive_opt::<Int32Type>(),
            name.as_string_opt::<i32>(),
        ) else {
            continue;
        };
        for i in 0..batch.num_rows() {
            if oid.is_valid(i) && name.is_valid(i) {
                oids.insert(name.value(i).to_string(), oid.value(i));
            }
        }
    }
    for (alias, name) in [
        ("integer", "int4"),
        ("smallint", "int2"),
        ("bigint", "int8"),
        ("real", "float4"),
        ("double precision", "float8"),
        ("boolean", "bool"),
        ("timestamp with time zone", "timestamptz"),
        ("timestamp without time zone", "timestamp"),
        ("character varying", "varchar"),
    ] {
        if let Some(oid) = oids.get(name).copied() {
            oids.insert(alias.to_string(), oid);
        }
    }
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(move |args| {
            let names = ColumnarValue::values_to_arrays(args)?;
            let names = names[0].as_string::<i32>();
            let mut out = Int32Builder::with_capacity(names.len());
            for name in names.iter() {
                let key = name.map(|n| n.trim().trim_start_matches("pg_catalog.").to_lowercase());
                out.append_option(key.and_then(|k| oids.get(&k).copied()));
            }
            Ok(ColumnarValue::Array(Arc::new(out.finish())))
        }),
    )
}

/// `pg_*_is_visible(oid)`: every object is on the search path (Lookout has
/// no per-user schemas to hide anything).
fn visible_udf(name: &str) -> ScalarUDF {
    create_udf(
        name,
        vec![datafusion::arrow::datatypes::DataType::Int64],
        datafusion::arrow::datatypes::DataType::Boolean,
        Volatility::Stable,
        Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))),
    )
}

/// Catalog functions that describe what Lookout does not have (comments,
/// indexes, defaults, sequences) or does not measure: NULL for any
/// arguments, as Postgres answers for an object without one.
#[derive(Debug, PartialEq, Eq, Hash)]
struct NullFunction {
    name: String,
    signature: datafusion::logical_expr::Signature,
    returns: datafusion::arrow::datatypes::DataType,
}

impl NullFunction {
    fn new(name: &str, returns: datafusion::arrow::datatypes::DataType) -> Self {
        NullFunction {
            name: name.to_string(),
            signature: datafusion::logical_expr::Signature::variadic_any(Volatility::Stable),
            returns,
        }
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for NullFunction {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(
        &self,
        _: &[datafusion::arrow::datatypes::DataType],
    ) -> DfResult<datafusion::arrow::datatypes::DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(
        &self,
        _: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from(&self.returns)?))
    }
}

/// `datafusion-pg-catalog`'s tables, with the columns psql 15 reads that
/// they lack (all empty in Lookout, as in a fresh Postgres).
#[derive(Debug)]
struct PgCatalog {
    inner: Arc<dyn SchemaProvider>,
    /// The session's settings, which `pg_settings` lists.
    settings: crate::functions::SettingValues,
    /// The session's cursors, which `pg_cursors` lists.
    cursors: Arc<crate::cursor::Cursors>,
    /// The schemas `pg_attribute` describes, for the json column types.
    tables: UserSchemas,
    /// The oids `pg_class` handed out, for the comment functions.
    relations: Arc<crate::pg::comments::RelationNames>,
}

impl PgCatalog {
    /// `pg_settings` with a row per setting the session has, in the shape of
    /// `datafusion-pg-catalog`'s (which lists only a few fixed ones).
    fn settings_table(&self, shape: SchemaRef) -> DfResult<Arc<dyn TableProvider>> {
        use datafusion::arrow::array::{ArrayRef, StringArray, new_null_array};
        let values = self.settings.all();
        let columns: Vec<ArrayRef> = shape
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match f.name().as_str() {
                    "name" => Arc::new(StringArray::from_iter_values(values.keys())),
                    "setting" | "reset_val" | "boot_val" => {
                        Arc::new(StringArray::from_iter_values(values.values()))
                    }
                    _ => new_null_array(f.data_type(), values.len()),
                }
            })
            .collect();
        let batch = datafusion::arrow::array::RecordBatch::try_new(Arc::clone(&shape), columns)?;
        Ok(Arc::new(datafusion::datasource::MemTable::try_new(
            shape,
            vec![vec![batch]],
        )?))
    }
}

impl PgCatalog {
    /// `pg_attribute` with json and jsonb columns typed as such (114, 3802),
    /// so psql's `\d` and `information_schema.columns` name them; the
    /// crate types a column by its Arrow type, which is text for both.
    async fn typed_json_columns(
        &self,
        attributes: Arc<dyn TableProvider>,
    ) -> DfResult<Arc<dyn TableProvider>> {
        use datafusion::arrow::array::{RecordBatch, StringArray, UInt32Array};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use datafusion::common::JoinType;
        use datafusion::datasource::{MemTable, provider_as_source};
        use datafusion::logical_expr::{LogicalPlanBuilder, cast, col, ident};
        let mut json_columns: Vec<(String, String, String, u32)> = Vec::new();
        for (schema_name, schema) in self.tables.schemas.iter() {
            for table_name in schema.table_names() {
                let Some(table) = schema.table(&table_name).await? else {
                    continue;
                };
                for field in declared_schema(table.as_ref()).fields() {
                    if let Some(kind) = crate::json::json_kind(field) {
                        let oid = match kind {
                            crate::json::JsonKind::Json => 114,
                            crate::json::JsonKind::Jsonb => 3802,
                        };
                        json_columns.push((
                            schema_name.to_string(),
                            table_name.clone(),
                            field.name().clone(),
                            oid,
                        ));
                    }
                }
            }
        }
        let (Some(classes), Some(namespaces)) = (
            self.inner.table("pg_class").await?,
            self.inner.table("pg_namespace").await?,
        ) else {
            return Ok(attributes);
        };
        if json_columns.is_empty() {
            return Ok(attributes);
        }
        let shape = Arc::new(Schema::new(vec![
            Field::new("j_nsp", DataType::Utf8, false),
            Field::new("j_rel", DataType::Utf8, false),
            Field::new("j_att", DataType::Utf8, false),
            Field::new("j_typid", DataType::UInt32, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&shape),
            vec![
                Arc::new(StringArray::from_iter_values(
                    json_columns.iter().map(|c| &c.0),
                )),
                Arc::new(StringArray::from_iter_values(
                    json_columns.iter().map(|c| &c.1),
                )),
                Arc::new(StringArray::from_iter_values(
                    json_columns.iter().map(|c| &c.2),
                )),
                Arc::new(UInt32Array::from_iter_values(
                    json_columns.iter().map(|c| c.3),
                )),
            ],
        )?;
        let json = LogicalPlanBuilder::scan(
            "j",
            provider_as_source(Arc::new(MemTable::try_new(shape, vec![vec![batch]])?)),
            None,
        )?
        .build()?;
        let namespaces = LogicalPlanBuilder::scan("n", provider_as_source(namespaces), None)?
            .project(vec![
                cast(col("oid"), DataType::Int64).alias("n_oid"),
                col("nspname").alias("n_nsp"),
            ])?
            .build()?;
        let json_attributes = LogicalPlanBuilder::scan("c", provider_as_source(classes), None)?
            .project(vec![
                cast(col("oid"), DataType::Int64).alias("c_oid"),
                col("relname").alias("c_rel"),
                cast(col("relnamespace"), DataType::Int64).alias("c_ns"),
            ])?
            .join(
                namespaces,
                JoinType::Inner,
                (vec!["c_ns"], vec!["n_oid"]),
                None,
            )?
            .join(
                json,
                JoinType::Inner,
                (vec!["n_nsp", "c_rel"], vec!["j_nsp", "j_rel"]),
                None,
            )?
            .project(vec![
                col("c_oid").alias("jc_rel"),
                col("j_att").alias("jc_att"),
                col("j_typid").alias("jc_typid"),
            ])?
            .build()?;
        let fields = attributes.schema();
        let plan = LogicalPlanBuilder::scan("a", provider_as_source(attributes), None)?
            .project(
                fields
                    .fields()
                    .iter()
                    .map(|f| ident(f.name()))
                    .chain([cast(ident("attrelid"), DataType::Int64).alias("a_rel")])
                    .collect::<Vec<_>>(),
            )?
            .join(
                json_attributes,
                JoinType::Left,
                (vec!["a_rel", "attname"], vec!["jc_rel", "jc_att"]),
                None,
            )?
            .project(
                fields
                    .fields()
                    .iter()
                    .map(|f| match f.name().as_str() {
                        "atttypid" => cast(
                            datafusion::functions::expr_fn::coalesce(vec![
                                cast(col("jc_typid"), f.data_type().clone()),
                                ident("atttypid"),
                            ]),
                            f.data_type().clone(),
                        )
                        .alias("atttypid"),
                        name => ident(name),
                    })
                    .collect::<Vec<_>>(),
            )?
            .build()?;
        Ok(Arc::new(datafusion::catalog::view::ViewTable::new(
            plan, None,
        )))
    }
}

/// `pg_authid` as PostgreSQL keeps it, superuser-only, and without the
/// verifiers of the bundled catalog rows (Lookout's users are listed, with
/// no secret, in `pg_roles`).
fn password_free(table: Arc<dyn TableProvider>) -> DfResult<Arc<dyn TableProvider>> {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{LogicalPlanBuilder, cast, col, lit};
    let columns: Vec<_> = table
        .schema()
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "rolpassword" => cast(lit(ScalarValue::Null), DataType::Utf8).alias(f.name()),
            name => col(datafusion::common::Column::new_unqualified(name)),
        })
        .collect();
    let plan = LogicalPlanBuilder::scan(
        "pg_authid",
        datafusion::datasource::provider_as_source(table),
        None,
    )?
    .project(columns)?
    .build()?;
    Ok(Arc::new(crate::access::AdminOnly::new(Arc::new(
        datafusion::catalog::view::ViewTable::new(plan, None),
    ))))
}

/// Columns added to a catalog table: (table, column, SQL type).
const EXTRA_COLUMNS: &[(&str, &str, &str)] = &[
    ("pg_class", "reloptions", "text[]"),
    ("pg_class", "relacl", "text[]"),
];

/// Vector columns the static tables keep as space-separated text, which
/// clients unnest and index as arrays: (table, column).
const VECTOR_COLUMNS: &[(&str, &str)] = &[
    ("pg_index", "indkey"),
    ("pg_index", "indoption"),
    ("pg_index", "indclass"),
    ("pg_index", "indcollation"),
];

#[async_trait]
impl SchemaProvider for PgCatalog {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.push("pg_cursors".to_string());
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        use datafusion::arrow::datatypes::DataType;
        use datafusion::logical_expr::{LogicalPlanBuilder, cast, col, lit};
        if name == "pg_cursors" {
            return Ok(Some(Arc::new(crate::cursor::CursorsTable::new(
                Arc::clone(&self.cursors),
            ))));
        }
        let Some(table) = self.inner.table(name).await? else {
            return Ok(None);
        };
        if name == "pg_settings" {
            return self.settings_table(table.schema()).map(Some);
        }
        if name == "pg_authid" {
            return password_free(table).map(Some);
        }
        if name == "pg_attribute" {
            return self.typed_json_columns(table).await.map(Some);
        }
        if name == "pg_proc"
            && let Some(namespaces) = self.inner.table("pg_namespace").await?
        {
            return crate::pg::function_catalog::pg_proc(table, namespaces).map(Some);
        }
        let table = match self.inner.table("pg_namespace").await? {
            Some(namespaces) if name == "pg_class" => {
                self.relations.remember(table, namespaces).await?
            }
            _ => table,
        };
        let extra: Vec<_> = EXTRA_COLUMNS
            .iter()
            .filter(|(t, _, _)| *t == name)
            .collect();
        let is_vector = |column: &str| VECTOR_COLUMNS.contains(&(name, column));
        let schema = table.schema();
        if extra.is_empty()
            && !schema
                .fields()
                .iter()
                .any(|f| is_vector(f.name()) && f.data_type() == &DataType::Utf8)
        {
            return Ok(Some(table));
        }
        let mut columns: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| {
                let column = col(datafusion::common::Column::new_unqualified(f.name()));
                if is_vector(f.name()) && f.data_type() == &DataType::Utf8 {
                    let parts = datafusion::functions_nested::expr_fn::string_to_array(
                        column,
                        lit(" "),
                        lit(ScalarValue::Utf8(None)),
                    );
                    cast(parts, DataType::new_list(DataType::Int32, true)).alias(f.name())
                } else {
                    column
                }
            })
            .collect();
        for (_, column, ty) in extra {
            let data_type = match *ty {
                "text[]" => DataType::new_list(DataType::Utf8, true),
                _ => DataType::Utf8,
            };
            columns.push(cast(lit(ScalarValue::Null), data_type).alias(*column));
        }
        let plan = LogicalPlanBuilder::scan(
            name,
            datafusion::datasource::provider_as_source(table),
            None,
        )?
        .project(columns)?
        .build()?;
        Ok(Some(Arc::new(datafusion::catalog::view::ViewTable::new(
            plan, None,
        ))))
    }

    fn table_exist(&self, name: &str) -> bool {
        name == "pg_cursors" || self.inner.table_exist(name)
    }
}

/// Whether a column holds Postgres object ids (`oid`, `regclass`, ...).
pub fn is_oid_field(field: &datafusion::arrow::datatypes::Field) -> bool {
    field.metadata().contains_key(pg::oid_field::OID_ALIAS_KEY)
}

fn is_int_list(data_type: &datafusion::arrow::datatypes::DataType) -> bool {
    use datafusion::arrow::datatypes::DataType;
    matches!(data_type, DataType::List(item) if item.data_type() == &DataType::Int32)
}

/// Marks the integer-list columns of a catalog query's result as `oid[]`
/// (the catalog keeps object ids as 32-bit integers; clients expect `oid[]`).
pub(crate) fn mark_oid_lists(schema: &SchemaRef) -> SchemaRef {
    use datafusion::arrow::datatypes::{Field, Schema};
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let field = f.as_ref().clone();
            if is_int_list(f.data_type()) {
                let mut metadata = field.metadata().clone();
                metadata.insert(
                    pg::oid_field::OID_ALIAS_KEY.to_string(),
                    pg::oid_field::kind::OID.to_string(),
                );
                field.with_metadata(metadata)
            } else {
                field
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `pg_roles` rows from the server's users.
#[derive(Debug, Clone)]
struct LookoutRoles(crate::Lookout);

#[async_trait]
impl PgCatalogContextProvider for LookoutRoles {
    async fn roles(&self) -> Vec<String> {
        self.0.roles().into_iter().map(|(name, _)| name).collect()
    }

    async fn role(&self, name: &str) -> Option<Role> {
        // Always a role: pg_roles asks by every name roles() gave, and one
        // dropped in between still gets a (powerless) row rather than none.
        let access = self
            .0
            .roles()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, access)| access);
        let admin = access == Some(crate::Access::Admin);
        Some(Role {
            name: name.to_string(),
            is_superuser: admin,
            can_login: access.is_some(),
            can_create_db: false,
            can_create_role: admin,
            can_create_user: admin,
            can_replication: false,
            grants: Vec::new(),
            inherited_roles: access
                .map(|a| vec![a.role_name().to_string()])
                .unwrap_or_default(),
        })
    }
}

/// A table's columns as its definition declares them: queries plan Lookout
/// tables with every column nullable (storage checks NOT NULL itself), but
/// `pg_attribute.attnotnull` and psql's `\d` show the declaration.
fn declared_schema(table: &dyn TableProvider) -> SchemaRef {
    if let Some(t) = table.downcast_ref::<crate::table::provider::LookoutTable>() {
        return t.declared_schema();
    }
    if let Some(v) = table.downcast_ref::<crate::table::versions::LatestVersions>() {
        return v.stored().declared_schema();
    }
    table.schema()
}

/// The tables `pg_class` and `pg_attribute` describe: the `public` and
/// `lookout` schemas, in name order so object ids come out the same in every
/// session over the same tables. The catalog schemas are listed (they appear in
/// `pg_namespace`) but their own tables are not.
///
/// It holds the schemas themselves, not the session's catalog: the catalog
/// holds `pg_catalog`, which holds this, and that cycle kept every
/// session's catalog alive after its connection closed.
#[derive(Debug, Clone)]
struct UserSchemas {
    schemas: Arc<Vec<(&'static str, Arc<dyn SchemaProvider>)>>,
}

impl UserSchemas {
    fn schema(&self, schema: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.schemas
            .iter()
            .find(|(name, _)| *name == schema)
            .map(|(_, provider)| Arc::clone(provider))
    }
}

#[async_trait]
impl CatalogInfo for UserSchemas {
    async fn catalog_names(&self) -> DfResult<Vec<String>> {
        Ok(vec![DATABASE.to_string()])
    }

    async fn schema_names(&self, catalog: &str) -> DfResult<Option<Vec<String>>> {
        if catalog != DATABASE {
            return Ok(None);
        }
        let mut names: Vec<String> = self
            .schemas
            .iter()
            .map(|(name, _)| name.to_string())
            .chain(CATALOG_SCHEMAS.map(String::from))
            .collect();
        names.sort();
        Ok(Some(names))
    }

    async fn table_names(&self, catalog: &str, schema: &str) -> DfResult<Option<Vec<String>>> {
        if catalog != DATABASE {
            return Ok(None);
        }
        if CATALOG_SCHEMAS.contains(&schema) {
            return Ok(Some(Vec::new()));
        }
        Ok(self.schema(schema).map(|s| {
            let mut names = s.table_names();
            names.sort();
            names
        }))
    }

    async fn table_schema(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> DfResult<Option<SchemaRef>> {
        Ok(self
            .table(catalog, schema, table)
            .await?
            .map(|t| declared_schema(t.as_ref())))
    }

    async fn table_type(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> DfResult<Option<TableType>> {
        Ok(self
            .table(catalog, schema, table)
            .await?
            .map(|t| t.table_type()))
    }
}

impl UserSchemas {
    async fn table(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        match self.schema(schema) {
            Some(s) if catalog == DATABASE => s.table(table).await,
            _ => Ok(None),
        }
    }
}

/// Gives each unnamed select item of every query in `statement`
/// (subqueries too) for which `named` answers the expression and name it
/// returns, as PostgreSQL would name the item as written.
fn name_select_items(
    statement: &mut Statement,
    named: fn(
        &datafusion::sql::sqlparser::ast::Expr,
    ) -> Option<(datafusion::sql::sqlparser::ast::Expr, String)>,
) {
    use datafusion::sql::sqlparser::ast::{
        Expr, Ident, Query, SelectItem, SetExpr, VisitMut, VisitorMut,
    };
    use std::ops::ControlFlow;
    struct Items(fn(&Expr) -> Option<(Expr, String)>);
    impl VisitorMut for Items {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = query.body.as_mut() {
                for item in &mut select.projection {
                    if let SelectItem::UnnamedExpr(expr) = item
                        && let Some((expr, name)) = (self.0)(expr)
                    {
                        *item = SelectItem::ExprWithAlias {
                            expr,
                            alias: Ident::new(name),
                        };
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = statement.visit(&mut Items(named));
}

/// PostgreSQL's parenthesis-less functions as calls DataFusion plans, each
/// keeping its own name (so `SELECT current_user, session_user` names its
/// columns as PostgreSQL does): `current_role`, `user` and `current_user`
/// are the current user, `current_schema` and `current_catalog` the schema
/// and database.
#[derive(Debug)]
struct SpecialRegisters;

/// The special register an expression names, lower-cased: `current_role`,
/// `user`, `current_user`, `session_user`, `current_schema`,
/// `current_catalog`, written without parentheses.
fn special_register(expr: &datafusion::sql::sqlparser::ast::Expr) -> Option<String> {
    use datafusion::sql::sqlparser::ast::{Expr, FunctionArguments};
    let name = match expr {
        Expr::Identifier(ident) if ident.quote_style.is_none() => ident.value.to_lowercase(),
        Expr::Function(f) if matches!(f.args, FunctionArguments::None) => {
            match f.name.0.as_slice() {
                [part] => part.as_ident()?.value.to_lowercase(),
                _ => return None,
            }
        }
        _ => return None,
    };
    matches!(
        name.as_str(),
        "current_role"
            | "user"
            | "current_user"
            | "session_user"
            | "current_schema"
            | "current_catalog"
    )
    .then_some(name)
}

impl SqlStatementRewriteRule for SpecialRegisters {
    fn rewrite(&self, mut statement: Statement) -> Statement {
        use datafusion::sql::sqlparser::ast::{
            Expr, Function, FunctionArgumentList, FunctionArguments, Ident, VisitMut, VisitorMut,
        };
        use std::ops::ControlFlow;

        fn call(name: &str) -> Expr {
            Expr::Function(Function {
                name: ObjectName::from(vec![Ident::new(name)]),
                uses_odbc_syntax: false,
                parameters: FunctionArguments::None,
                args: FunctionArguments::List(FunctionArgumentList {
                    duplicate_treatment: None,
                    args: vec![],
                    clauses: vec![],
                }),
                filter: None,
                null_treatment: None,
                over: None,
                within_group: vec![],
            })
        }

        // A select item that is only a register is named after it, as
        // PostgreSQL names it; then the registers become calls.
        name_select_items(&mut statement, |expr| {
            special_register(expr).map(|name| (expr.clone(), name))
        });
        struct Calls;
        impl VisitorMut for Calls {
            type Break = ();
            fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
                match special_register(expr).as_deref() {
                    Some(register @ ("current_role" | "user" | "current_schema")) => {
                        *expr = call(register)
                    }
                    Some("current_catalog") => *expr = call("current_database"),
                    _ => {}
                }
                ControlFlow::Continue(())
            }
        }
        let _ = statement.visit(&mut Calls);
        statement
    }
}

/// A select item that is a name cast to `regclass` or `regtype` (`SELECT
/// 'events'::regclass`) shows the name under the type's name, as PostgreSQL
/// prints those types; everywhere else the casts stay object ids, which is
/// what comparisons with catalog columns need.
#[derive(Debug)]
struct ShownRegCasts;

impl SqlStatementRewriteRule for ShownRegCasts {
    fn rewrite(&self, mut statement: Statement) -> Statement {
        use datafusion::sql::sqlparser::ast::{Expr, Value};

        fn shown(expr: &Expr) -> Option<(Expr, String)> {
            let Expr::Cast {
                expr: operand,
                data_type,
                ..
            } = expr
            else {
                return None;
            };
            if !matches!(operand.as_ref(), Expr::Value(v) if matches!(v.value, Value::SingleQuotedString(_)))
            {
                return None;
            }
            let type_name = data_type.to_string().to_lowercase();
            let (sql, name) = match type_name.trim_start_matches("pg_catalog.") {
                // max(): NULL, not an error, for a name that is no table.
                "regclass" => (
                    format!(
                        "(SELECT max(c.relname) FROM pg_catalog.pg_class c WHERE c.oid = {expr})"
                    ),
                    "regclass",
                ),
                "regtype" => (format!("format_type({expr}, NULL)"), "regtype"),
                _ => return None,
            };
            let shown = Parser::new(&Postgres)
                .try_with_sql(&sql)
                .and_then(|mut p| p.parse_expr())
                .ok()?;
            Some((shown, name.to_string()))
        }

        name_select_items(&mut statement, shown);
        statement
    }
}

/// Rewrites that only make Postgres syntax plannable, never change what a
/// query means: applied to every statement.
static SYNTAX_RULES: LazyLock<Vec<Box<dyn SqlStatementRewriteRule>>> = LazyLock::new(|| {
    vec![
        Box::new(RewriteArrayAnyAllOperation),
        Box::new(StripCallableQualifier),
        Box::new(FixArrayLiteral),
        Box::new(SpecialRegisters),
        Box::new(StripCollate),
        Box::new(RewritePgCatalogOperator),
        Box::new(ShownRegCasts),
        Box::new(RewriteRegCastToSubquery::new()),
        Box::new(FixVersionColumnName),
    ]
});

/// Every rewrite clients' catalog queries need, including ones that trade
/// exactness for plannability (a correlated scalar subquery in a projection
/// becomes NULL): applied only to statements that read the catalog.
static CATALOG_PARSER: LazyLock<PostgresCompatibilityParser> =
    LazyLock::new(PostgresCompatibilityParser::new);

/// Client query fragments DataFusion cannot plan, each with an equivalent it
/// can; matched token by token, whitespace aside.
const SUBSTITUTIONS: &[(&str, &str)] = &[
    // Grafana's table and column pickers: the schemas on the search path.
    // Set-returning functions in FROM with column aliases become one unnest.
    (
        r#"SELECT CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
           FROM generate_series(
               array_lower(string_to_array(current_setting('search_path'),','),1),
               array_upper(string_to_array(current_setting('search_path'),','),1)
           ) as i,
           string_to_array(current_setting('search_path'),',') s"#,
        r#"SELECT CASE WHEN trim(x) = '"$user"' THEN current_user ELSE trim(x) END
           FROM unnest(string_to_array(current_setting('search_path'), ',')) AS search_path(x)"#,
    ),
];

fn tokens(sql: &str) -> Option<Vec<datafusion::sql::sqlparser::tokenizer::Token>> {
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&Postgres, sql).tokenize().ok()?;
    Some(
        tokens
            .into_iter()
            .filter(|t| !matches!(t, Token::Whitespace(_)))
            .collect(),
    )
}

/// `sql` with the [`SUBSTITUTIONS`] made, if any applies.
fn substitute(sql: &str) -> Option<String> {
    type Tokens = Vec<datafusion::sql::sqlparser::tokenizer::Token>;
    static PATTERNS: LazyLock<Vec<(Tokens, Tokens)>> = LazyLock::new(|| {
        SUBSTITUTIONS
            .iter()
            .filter_map(|(from, to)| Some((tokens(from)?, tokens(to)?)))
            .collect()
    });
    let mut input = tokens(sql)?;
    let mut changed = false;
    for (pattern, replacement) in PATTERNS.iter() {
        while let Some(at) = input
            .windows(pattern.len())
            .position(|w| w == pattern.as_slice())
        {
            input.splice(at..at + pattern.len(), replacement.iter().cloned());
            changed = true;
        }
    }
    changed.then(|| {
        input
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// Parses SQL text as Postgres would, with the rewrites above.
/// Names the columns of an `INSERT ... SELECT` whose select list has
/// unnamed expressions or two columns of the same name (`SELECT 'user', ...,
/// 'user'`, `SELECT CAST(v AS TEXT), v`): Postgres inserts by position and
/// never minds; DataFusion refuses a projection with two equal names.
/// And an `INSERT` without a column list that gives fewer values than the
/// table has columns fills the leading columns, as in Postgres (a table
/// that gained a column, such as a sample weight, keeps taking its writers'
/// statements); `columns_of` gives a table's column names.
pub(crate) fn name_insert_columns(
    stmt: Statement,
    columns_of: impl Fn(&ObjectName) -> Option<Vec<String>>,
) -> Statement {
    use datafusion::sql::sqlparser::ast::{Ident, SelectItem, SetExpr, TableObject};
    let Statement::Insert(mut insert) = stmt else {
        return stmt;
    };
    if insert.columns.is_empty()
        && let TableObject::TableName(name) = &insert.table
        && let Some(query) = insert.source.as_ref()
        && let Some(columns) = columns_of(name)
    {
        let given = match query.body.as_ref() {
            SetExpr::Values(values) => values.rows.first().map(|row| row.len()),
            SetExpr::Select(select)
                if select.projection.iter().all(|item| {
                    matches!(
                        item,
                        SelectItem::UnnamedExpr(_) | SelectItem::ExprWithAlias { .. }
                    )
                }) =>
            {
                Some(select.projection.len())
            }
            _ => None,
        };
        if let Some(given) = given.filter(|n| *n < columns.len()) {
            insert.columns = columns
                .into_iter()
                .take(given)
                .map(|c| ObjectName::from(vec![Ident::with_quote('"', c)]))
                .collect();
        }
    }
    if let Some(query) = insert.source.as_mut()
        && let SetExpr::Select(select) = query.body.as_mut()
    {
        // An unnamed expression's name is DataFusion's, which is not its
        // text (`CAST(v AS TEXT)` is named `v`): any two may collide, so
        // each gets a name by position, one no alias of the list uses; a
        // repeated alias is renamed the same way.
        if select.projection.len() > 1 {
            let aliases: std::collections::HashSet<String> = select
                .projection
                .iter()
                .filter_map(|item| match item {
                    SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.to_lowercase()),
                    _ => None,
                })
                .collect();
            let mut taken = std::collections::HashSet::new();
            for (i, item) in select.projection.iter_mut().enumerate() {
                let fresh = |taken: &mut std::collections::HashSet<String>| {
                    let mut name = format!("column{}", i + 1);
                    while aliases.contains(&name) || taken.contains(&name) {
                        name.push('_');
                    }
                    taken.insert(name.clone());
                    Ident::new(name)
                };
                match item {
                    SelectItem::UnnamedExpr(e) => {
                        *item = SelectItem::ExprWithAlias {
                            expr: e.clone(),
                            alias: fresh(&mut taken),
                        };
                    }
                    SelectItem::ExprWithAlias { alias, .. }
                        if !taken.insert(alias.value.to_lowercase()) =>
                    {
                        *alias = fresh(&mut taken);
                    }
                    _ => {}
                }
            }
        }
    }
    Statement::Insert(insert)
}

pub(crate) fn parse_sql(sql: &str) -> Result<Vec<Statement>, ParserError> {
    Ok(parse_postgres_sql(sql)?
        .into_iter()
        .map(crate::pg::function_catalog::show_functions)
        .collect())
}

fn parse_postgres_sql(sql: &str) -> Result<Vec<Statement>, ParserError> {
    // Both checks keep large INSERTs from paying for rewrites they cannot need
    // (tokenizing and visiting 20,000 rows tripled their parse time).
    let substituted = sql
        .contains("search_path")
        .then(|| substitute(sql))
        .flatten();
    let sql = substituted.as_deref().unwrap_or(sql);
    let rewrite = may_need_rewrite(sql);
    match Parser::parse_sql(&Postgres, sql) {
        Ok(statements) if !rewrite => Ok(statements),
        Ok(statements) if statements.iter().any(reads_catalog) => {
            // The catalog parser matches some client queries token by token, so
            // it reads the original text unless a regproc literal changed it.
            let rewritten: Vec<Statement> =
                statements.iter().cloned().map(regproc_literals).collect();
            let text = if rewritten == statements {
                sql.to_string()
            } else {
                rewritten
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(";\n")
            };
            Ok(CATALOG_PARSER
                .parse(&text)
                .or_else(|_| CATALOG_PARSER.parse(sql))
                .unwrap_or_else(|_| statements.into_iter().map(rewrite_syntax).collect())
                .into_iter()
                .map(array_subquery_to_null)
                .map(plannable_catalog_expressions)
                .map(like_escape_to_backslash)
                .collect())
        }
        Ok(statements) => Ok(statements.into_iter().map(rewrite_syntax).collect()),
        // Some client statements parse only after the catalog parser's
        // substitutions (e.g. `ABORT`); the original error is the useful one.
        Err(e) => CATALOG_PARSER.parse(sql).map_err(|_| e),
    }
}

/// Subqueries DataFusion cannot run become NULL in catalog queries:
/// `array(SELECT ...)` (psql reads option and ACL lists this way) and scalar
/// subqueries inside a CASE (asyncpg's type introspection reads domain bases
/// and composite attributes this way); Lookout has none of these objects.
fn array_subquery_to_null(mut statement: Statement) -> Statement {
    use datafusion::sql::sqlparser::ast::{Expr, FunctionArguments, Value, visit_expressions_mut};
    let _ = visit_expressions_mut(&mut statement, |expr| {
        match expr {
            Expr::Function(f)
                if f.name.to_string().eq_ignore_ascii_case("array")
                    && matches!(f.args, FunctionArguments::Subquery(_)) =>
            {
                *expr = Expr::value(Value::Null);
            }
            Expr::Case {
                conditions,
                else_result,
                ..
            } => {
                let results = conditions
                    .iter_mut()
                    .map(|c| &mut c.result)
                    .chain(else_result.iter_mut().map(|e| e.as_mut()));
                let mut all_null = true;
                for result in results {
                    if contains_subquery(result) {
                        *result = Expr::value(Value::Null);
                    }
                    all_null &= matches!(result, Expr::Value(v) if v.value == Value::Null);
                }
                // Then the conditions (which may hold subqueries too) do not matter.
                if all_null {
                    *expr = Expr::value(Value::Null);
                }
            }
            _ => {}
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    statement
}

/// Expressions of client catalog queries DataFusion cannot plan, made
/// plannable: pgjdbc's `information_schema._pg_expandarray`, correlated
/// lookups that do not aggregate, `(record).field`, and
/// `generate_subscripts(a, 1)` as `unnest(generate_series(1, array_length(a, 1)))`.
fn plannable_catalog_expressions(mut statement: Statement) -> Statement {
    use datafusion::sql::sqlparser::ast::{
        AccessExpr, Expr, FunctionArguments, GroupByExpr, SelectItem, SetExpr,
    };
    let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(&mut statement, |expr| {
        // `_pg_expandarray(indkey)` expands an index's key columns into (x, n)
        // rows; Lookout tables have no indexes, so no row ever reaches it.
        if let Expr::Function(f) = expr
            && f.name
                .to_string()
                .to_lowercase()
                .ends_with("_pg_expandarray")
            && let Ok(parsed) = Parser::new(&Postgres)
                .try_with_sql("named_struct('x', CAST(NULL AS INT), 'n', CAST(NULL AS INT))")
                .and_then(|mut p| p.parse_expr())
        {
            *expr = parsed;
            return std::ops::ControlFlow::Continue(());
        }
        // DataFusion runs a correlated scalar subquery only when it aggregates;
        // catalog lookups such as `(SELECT c.relkind = 'c' FROM pg_class c
        // WHERE c.oid = t.typrelid)` return at most one row, so max() is the same.
        if let Expr::Subquery(query) = expr
            && let SetExpr::Select(select) = query.body.as_mut()
            && matches!(&select.group_by, GroupByExpr::Expressions(g, _) if g.is_empty())
            && let [SelectItem::UnnamedExpr(item) | SelectItem::ExprWithAlias { expr: item, .. }] =
                select.projection.as_mut_slice()
            && !is_aggregate(item)
            && let Ok(parsed) = Parser::new(&Postgres)
                .try_with_sql(&format!("max({item})"))
                .and_then(|mut p| p.parse_expr())
        {
            *item = parsed;
        }
        // `(record).field` on an expression: DataFusion reads fields with get_field.
        if let Expr::CompoundFieldAccess { root, access_chain } = expr
            && !matches!(
                root.as_ref(),
                Expr::Identifier(_) | Expr::CompoundIdentifier(_)
            )
            && let [AccessExpr::Dot(Expr::Identifier(field))] = access_chain.as_slice()
            && let Ok(parsed) = Parser::new(&Postgres)
                .try_with_sql(&format!("get_field({root}, '{}')", field.value))
                .and_then(|mut p| p.parse_expr())
        {
            *expr = parsed;
            return std::ops::ControlFlow::Continue(());
        }
        if let Expr::Function(f) = expr
            && f.name
                .to_string()
                .eq_ignore_ascii_case("generate_subscripts")
            && let FunctionArguments::List(list) = &f.args
            && list.args.len() == 2
        {
            let array = list.args[0].to_string();
            let dim = list.args[1].to_string();
            let sql = format!("unnest(generate_series(1, array_length({array}, {dim})))");
            if let Ok(parsed) = Parser::new(&Postgres)
                .try_with_sql(&sql)
                .and_then(|mut p| p.parse_expr())
            {
                *expr = parsed;
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    statement
}

fn is_aggregate(expr: &datafusion::sql::sqlparser::ast::Expr) -> bool {
    use datafusion::sql::sqlparser::ast::Expr;
    const AGGREGATES: &[&str] = &[
        "count",
        "max",
        "min",
        "sum",
        "avg",
        "array_agg",
        "string_agg",
        "bool_and",
        "bool_or",
        "every",
        "json_agg",
        "jsonb_agg",
    ];
    match expr {
        Expr::Function(f) => {
            let name = f.name.to_string().to_lowercase();
            AGGREGATES.contains(&name.trim_start_matches("pg_catalog."))
        }
        Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => is_aggregate(inner),
        _ => false,
    }
}

/// `'pg_catalog.array_in'::regproc` becomes the name itself: the catalog keeps
/// functions (pg_type's typinput, ...) by name, so the name is what compares.
/// Runs before the catalog parser, which would look the name up as an oid.
fn regproc_literals(mut statement: Statement) -> Statement {
    use datafusion::sql::sqlparser::ast::{Expr, Value};
    let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(&mut statement, |expr| {
        if let Expr::Cast {
            expr: inner,
            data_type,
            ..
        } = expr
            && matches!(
                data_type.to_string().to_lowercase().as_str(),
                "regproc" | "regprocedure" | "pg_catalog.regproc" | "pg_catalog.regprocedure"
            )
            && let Expr::Value(v) = inner.as_ref()
            && let Value::SingleQuotedString(name) = &v.value
        {
            let name = name.trim_start_matches("pg_catalog.");
            let name = name.split('(').next().unwrap_or(name).to_string();
            *expr = Expr::value(Value::SingleQuotedString(name));
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    statement
}

fn contains_subquery(expr: &datafusion::sql::sqlparser::ast::Expr) -> bool {
    use datafusion::sql::sqlparser::ast::Expr;
    match expr {
        Expr::Subquery(_) => true,
        Expr::Nested(inner) => contains_subquery(inner),
        _ => false,
    }
}

/// Whether SQL text has anything the rewrites act on: catalog names,
/// `ANY`/`ALL`, `OPERATOR(...)`, `COLLATE`, reg casts, the user and
/// `current_catalog` keywords, array literals, `version()`, `ESCAPE`.
fn may_need_rewrite(sql: &str) -> bool {
    const MARKERS: &[&str] = &[
        "pg_",
        "information_schema",
        "any",
        "all",
        "operator",
        "collate",
        "::reg",
        "user",
        "current_",
        "{",
        "version",
        "escape",
    ];
    let lower = sql.to_ascii_lowercase();
    MARKERS.iter().any(|m| lower.contains(m))
}

fn rewrite_syntax(mut statement: Statement) -> Statement {
    for rule in SYNTAX_RULES.iter() {
        statement = rule.rewrite(statement);
    }
    like_escape_to_backslash(statement)
}

/// `LIKE p ESCAPE 'c'` for a `c` other than backslash (SQLAlchemy escapes with
/// '/') becomes the same match with backslash escapes, the only kind
/// DataFusion takes.
fn like_escape_to_backslash(mut statement: Statement) -> Statement {
    use datafusion::sql::sqlparser::ast::{
        Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments,
        Ident, ObjectName, Value, visit_expressions_mut,
    };
    let replace = |arg: Expr, from: &str, to: &str| {
        Expr::Function(Function {
            name: ObjectName::from(vec![Ident::new("replace")]),
            uses_odbc_syntax: false,
            parameters: FunctionArguments::None,
            args: FunctionArguments::List(FunctionArgumentList {
                duplicate_treatment: None,
                args: [
                    arg,
                    Expr::value(Value::SingleQuotedString(from.into())),
                    Expr::value(Value::SingleQuotedString(to.into())),
                ]
                .into_iter()
                .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                .collect(),
                clauses: vec![],
            }),
            filter: None,
            null_treatment: None,
            over: None,
            within_group: vec![],
        })
    };
    let _ = visit_expressions_mut(&mut statement, |expr| {
        if let Expr::Like {
            pattern,
            escape_char,
            ..
        }
        | Expr::ILike {
            pattern,
            escape_char,
            ..
        } = expr
            && let Some(Value::SingleQuotedString(c)) = escape_char.as_ref().map(|v| &v.value)
            && c != "\\"
            && !c.is_empty()
        {
            let c = c.clone();
            let original = std::mem::replace(pattern.as_mut(), Expr::value(Value::Null));
            **pattern = replace(replace(original, "\\", "\\\\"), &c, "\\");
            *escape_char = None;
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    statement
}

/// Whether a statement reads a `pg_catalog` or `information_schema` relation.
pub(crate) fn reads_catalog(statement: &Statement) -> bool {
    visit_relations(statement, |name| {
        let parts: Vec<String> = name
            .0
            .iter()
            .filter_map(|p| p.as_ident().map(|i| i.value.to_lowercase()))
            .collect();
        let catalog = match parts.as_slice() {
            [table] => PG_CATALOG_TABLES.contains(&table.as_str()),
            [schema, _] | [_, schema, _] => CATALOG_SCHEMAS.contains(&schema.as_str()),
            _ => false,
        };
        if catalog {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    })
    .is_break()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> String {
        let statements = parse_sql(sql).expect("parses");
        assert_eq!(statements.len(), 1);
        statements[0].to_string()
    }

    #[tokio::test]
    async fn a_dropped_session_frees_its_catalog() {
        // pg_catalog lists the session's tables; when it held the session's
        // catalog (which holds pg_catalog) every connection's catalog stayed
        // alive, about 6 MiB per 1,000 connections of a server.
        let dir = tempfile::tempdir().expect("tempdir");
        let lookout = crate::Lookout::open(dir.path()).await.expect("open");
        let mut session = lookout.session();
        let listed = session
            .query("CREATE TABLE t (ts TIMESTAMPTZ NOT NULL, v INT); SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 't'")
            .await
            .expect("pg_class");
        let count = listed
            .first()
            .and_then(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
            })
            .map(|c| c.value(0));
        assert_eq!(count, Some(1), "pg_class lists the session's table");
        let catalog = session.catalog_for_tests();
        assert!(catalog.upgrade().is_some());
        drop(session);
        assert!(
            catalog.upgrade().is_none(),
            "the session's catalog outlived it"
        );
    }

    #[test]
    fn user_queries_keep_their_meaning() {
        // A correlated scalar subquery stays (the catalog parser would make it NULL).
        let sql = "SELECT (SELECT max(b.v) FROM t b WHERE b.k = a.k) FROM t a";
        assert_eq!(one(sql), sql);
        // Syntax-only rewrites still apply.
        assert!(one("SELECT 1 WHERE 'a' = ANY('{a,b}')").contains("array"));
    }

    #[test]
    fn catalog_queries_are_made_plannable() {
        let text = one(
            "SELECT t.oid FROM pg_catalog.pg_type t WHERE t.typrelid = 0 OR \
             (SELECT c.relkind = 'c' FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid)",
        );
        assert!(text.contains("max(c.relkind = 'c')"), "{text}");
        let text = one("SELECT typinput = 'pg_catalog.array_in'::regproc FROM pg_type");
        assert!(text.contains("typinput = 'array_in'"), "{text}");
        let text = one("SELECT generate_subscripts(i.indkey, 1) FROM pg_catalog.pg_index i");
        assert!(
            text.contains("unnest(generate_series(1, array_length(i.indkey, 1)))"),
            "{text}"
        );
        let text = one("SELECT CASE WHEN true THEN (SELECT 1) ELSE NULL END FROM pg_class");
        assert!(text.starts_with("SELECT NULL FROM"), "{text}");
    }

    #[test]
    fn sizes_print_as_postgres_does() {
        assert_eq!(pretty_size(10239), "10239 bytes");
        assert_eq!(pretty_size(10240), "10 kB");
        assert_eq!(pretty_size(1_500_000), "1465 kB");
        assert_eq!(pretty_size(20 * 1024 * 1024), "20 MB");
    }

    #[test]
    fn like_escape_becomes_backslash() {
        let text = one("SELECT 1 FROM t WHERE x LIKE 'pg/_%' ESCAPE '/'");
        assert!(!text.contains("ESCAPE"), "{text}");
        assert!(
            text.contains("replace(replace('pg/_%', '\\', '\\\\'), '/', '\\')"),
            "{text}"
        );
    }

    #[test]
    fn grafana_search_path_query_is_substituted() {
        let sql = "SELECT 1 WHERE 'public' IN (SELECT CASE WHEN trim(s[i]) = '\"$user\"' THEN user \
                   ELSE trim(s[i]) END FROM generate_series(array_lower(string_to_array(\
                   current_setting('search_path'),','),1), array_upper(string_to_array(\
                   current_setting('search_path'),','),1)) as i, \
                   string_to_array(current_setting('search_path'),',') s)";
        let text = substitute(sql).expect("substituted");
        assert!(text.contains("unnest"), "{text}");
        assert_eq!(substitute("SELECT 1"), None);
    }
}
