//! Prepared statements: planned once with their parameters' types, planned
//! again when a table they read changed, run with the parameters' values.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{DmlStatement, LogicalPlan, WriteOp};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;
use lookout_storage::ExternalTable;
use lookout_storage::TableDef;

use super::{Session, handled_here, show_column};
use crate::error::SqlState;
use crate::error::{QueryError, Result};
use crate::ext::{Command, Output, SYSTEM_PREFIX, batches_stream, ident_name, table_name};

/// A parsed statement ready to run with parameters (extended protocol).
#[derive(Debug, Clone)]
pub struct Prepared {
    statement: Command,
    plan: Option<LogicalPlan>,
    /// Types of `$1, $2, ...` as far as the planner could infer them.
    pub param_types: Vec<Option<DataType>>,
    /// Result columns, for statements that return rows.
    pub schema: Option<SchemaRef>,
    /// Whether it reads `pg_catalog` or `information_schema`, where integer
    /// lists are lists of object ids (`oid[]`).
    pub catalog: bool,
    /// The Lookout tables the plan reads or writes, with their definitions
    /// when it was made: a plan whose tables changed since is made again.
    tables: Vec<(String, Option<TableDef>)>,
    /// A write's `RETURNING` list, planned over the rows it writes.
    returning: Option<LogicalPlan>,
    /// The views and external tables defined when it was planned, if it
    /// names one: a plan made before one of them changed is made again.
    definitions: Option<Arc<Definitions>>,
}

/// View definitions and external tables, by name, as the manifest holds them.
type Definitions = (BTreeMap<String, String>, BTreeMap<String, ExternalTable>);

impl Prepared {
    /// The plan, for statements DataFusion runs.
    pub(super) fn plan(&self) -> Option<&LogicalPlan> {
        self.plan.as_ref()
    }
}

/// Placeholders cast to a type (`$1::oid[]`), with that type.
fn cast_placeholders(plan: &LogicalPlan) -> Vec<(String, DataType)> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::{Cast, Expr, ExprSchemable, TryCast};
    let mut found = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) = e
                    && let Expr::Placeholder(p) = expr.as_ref()
                {
                    found.push((p.id.clone(), field.data_type().clone()));
                }
                // `x = ANY($1)`: the parameter is a list of x's type.
                if let Expr::ScalarFunction(f) = e
                    && f.name() == "array_has"
                    && let [Expr::Placeholder(p), element] = f.args.as_slice()
                    && let Some(input) = node.inputs().first()
                    && let Ok(item) = element.get_type(input.schema())
                {
                    let field = Arc::new(Field::new("item", item, true));
                    found.push((p.id.clone(), DataType::List(field)));
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found
}

/// `schema` with the output column names PostgreSQL gives (see
/// [`crate::pg::rewrite::output_names`]).
fn with_names(schema: SchemaRef, names: &[Option<String>]) -> SchemaRef {
    let width = schema.fields().len();
    // A `None` stands for the columns of a `*`, however many they are.
    let names: Vec<&Option<String>> = match names.iter().position(Option::is_none) {
        Some(star) if width + 1 >= names.len() => {
            let expanded = width + 1 - names.len();
            names[..star]
                .iter()
                .chain(std::iter::repeat_n(&None, expanded))
                .chain(&names[star + 1..])
                .collect()
        }
        _ => names.iter().collect(),
    };
    if names.len() != width || names.iter().all(|n| n.is_none()) {
        return schema;
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(names)
        .map(|(f, name)| match name {
            Some(name) => f.as_ref().clone().with_name(name.clone()),
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The storage names of the Lookout tables `plan` scans or writes,
/// subqueries included.
fn tables_of(plan: &LogicalPlan) -> Vec<String> {
    use datafusion::common::TableReference;
    use datafusion::common::tree_node::TreeNodeRecursion;
    let storage_name = |r: &TableReference| match r.schema() {
        None | Some("public") => Some(r.table().to_string()),
        Some("lookout") => Some(format!("{SYSTEM_PREFIX}{}", r.table())),
        Some(_) => None,
    };
    let mut names = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        let named = match node {
            LogicalPlan::TableScan(scan) => storage_name(&scan.table_name),
            LogicalPlan::Dml(dml) => storage_name(&dml.table_name),
            _ => None,
        };
        if let Some(name) = named
            && !names.contains(&name)
        {
            names.push(name);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    names
}

impl Session {
    /// Parses and plans one statement for later execution with parameters.
    pub async fn prepare(&self, sql: &str) -> Result<Option<Prepared>> {
        let mut stmts = self.parse(sql)?;
        if stmts.len() > 1 {
            return Err(QueryError::syntax(
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        let stmt = match stmts.pop() {
            None => return Ok(None),
            Some(Command::Sql(stmt)) => stmt,
            Some(Command::Extension(statement)) => {
                let schema = statement.schema();
                return Ok(Some(Prepared {
                    statement: Command::Extension(statement),
                    plan: None,
                    param_types: Vec::new(),
                    schema,
                    catalog: false,
                    tables: Vec::new(),
                    returning: None,
                    definitions: None,
                }));
            }
        };
        if handled_here(&stmt) {
            let schema = match &stmt {
                Statement::Fetch { name, .. } => Some(self.cursors.schema(&ident_name(name))?),
                Statement::ShowVariable { variable } => {
                    Some(Arc::new(Schema::new(vec![Field::new(
                        show_column(variable),
                        DataType::Utf8,
                        true,
                    )])))
                }
                _ => None,
            };
            return Ok(Some(Prepared {
                statement: Command::Sql(stmt),
                plan: None,
                param_types: Vec::new(),
                schema,
                catalog: false,
                tables: Vec::new(),
                returning: None,
                definitions: None,
            }));
        }
        self.plan(stmt).await.map(Some)
    }

    /// Plans one statement, or takes the plan this session made of the
    /// same query before (see [`super::plan_cache`]).
    pub(super) async fn plan(&self, stmt: Statement) -> Result<Prepared> {
        if let Some(kept) = self.plan_cache().get(&stmt, |p| self.tables_unchanged(p)) {
            return Ok(kept);
        }
        let key = self.plan_cache().keeps(&stmt).then(|| stmt.clone());
        let prepared = self.plan_statement(stmt).await?;
        if let Some(key) = key {
            self.plan_cache().put(key, &prepared);
        }
        Ok(prepared)
    }

    async fn plan_statement(&self, stmt: Statement) -> Result<Prepared> {
        let storage = self.lookout.storage();
        let mut stmt = crate::pg::compat::name_insert_columns(stmt, |name| {
            let def = storage.table(&table_name(name).ok()?).ok()?;
            Some(def.columns.into_iter().map(|c| c.name).collect())
        });
        crate::pg::float_arrays::rewrite(&mut stmt, |name| {
            let schema = storage.table(&table_name(name).ok()?).ok()?.schema().ok()?;
            Some(
                schema
                    .fields()
                    .iter()
                    .map(|f| {
                        let array = matches!(
                            f.data_type(),
                            DataType::List(_) | DataType::FixedSizeList(_, _)
                        );
                        (f.name().clone(), array)
                    })
                    .collect(),
            )
        })?;
        // Before planning: a view replaced meanwhile makes it planned again.
        let definitions = self.definitions_read(&stmt);
        // Kept as written: a plan made again starts from it.
        let written = stmt.clone();
        let returning = crate::table::returning::split(&mut stmt)?;
        // Named from the statement as written, before the rewrites below.
        let names = crate::pg::rewrite::output_names(&stmt);
        crate::pg::rewrite::rewrite_statement(&mut stmt)?;
        let state = self.state();
        let plan = match state
            .statement_to_plan(DFStatement::Statement(Box::new(stmt.clone())))
            .await
        {
            // PostgreSQL lets output names repeat (`SELECT v::text, v::int`);
            // DataFusion does not, so such a query is planned with distinct
            // aliases, and the client sees PostgreSQL's names all the same.
            Err(e)
                if e.to_string().contains("unique expression names")
                    && !names.is_empty()
                    && crate::pg::rewrite::alias_output_columns(&mut stmt) =>
            {
                state
                    .statement_to_plan(DFStatement::Statement(Box::new(stmt.clone())))
                    .await?
            }
            planned => planned?,
        };
        let plan = crate::pg::rewrite::rewrite_plan(plan)?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .verify_plan(&plan)
            .map_err(|_| {
                QueryError::unsupported(format!("statement not supported by Lookout: {stmt}"))
            })?;
        let returning = match (returning, &plan) {
            (Some(select), LogicalPlan::Dml(dml)) => Some(self.plan_returning(select, dml).await?),
            _ => None,
        };
        let mut types = plan.get_parameter_types()?;
        if let Some((returning, _)) = &returning {
            for (id, data_type) in returning.get_parameter_types()? {
                let slot = types.entry(id).or_insert(None);
                if slot.is_none() {
                    *slot = data_type;
                }
            }
        }
        // `$1::type` fixes the parameter's type where the planner left it open.
        for (id, data_type) in cast_placeholders(&plan) {
            if let Some(slot @ None) = types.get_mut(&id) {
                *slot = Some(data_type);
            }
        }
        let mut param_types: Vec<(usize, Option<DataType>)> = types
            .into_iter()
            .filter_map(|(k, v)| {
                k.trim_start_matches('$')
                    .parse::<usize>()
                    .ok()
                    .map(|i| (i, v))
            })
            .collect();
        param_types.sort_by_key(|(i, _)| *i);
        let count = param_types.last().map_or(0, |(i, _)| *i);
        let mut ordered = vec![None; count];
        for (i, t) in param_types {
            ordered[i - 1] = t;
        }
        let mut schema = match (&plan, &returning) {
            (LogicalPlan::Dml(_), Some((_, named))) => Some(Arc::clone(named)),
            (LogicalPlan::Dml(_), None) => None,
            (p, _) => Some(with_names(Arc::new(p.schema().as_arrow().clone()), &names)),
        };
        let catalog = crate::pg::compat::reads_catalog(&stmt);
        if catalog {
            // Integer lists in catalog queries are lists of object ids.
            schema = schema.map(|s| crate::pg::compat::mark_oid_lists(&s));
        }
        let tables = tables_of(&plan)
            .into_iter()
            .map(|name| {
                let def = storage.table(&name).ok();
                (name, def)
            })
            .collect();
        Ok(Prepared {
            statement: Command::Sql(if returning.is_some() { written } else { stmt }),
            plan: Some(plan),
            param_types: ordered,
            schema,
            catalog,
            tables,
            returning: returning.map(|(plan, _)| plan),
            definitions,
        })
    }

    /// Plans a write's `RETURNING` list (made a query by
    /// [`crate::table::returning::split`]) over the rows of the written table;
    /// returns the plan and its columns, named as PostgreSQL names them.
    pub(super) async fn plan_returning(
        &self,
        mut select: Statement,
        dml: &DmlStatement,
    ) -> Result<(LogicalPlan, SchemaRef)> {
        let names = crate::pg::rewrite::output_names(&select);
        crate::pg::rewrite::rewrite_statement(&mut select)?;
        let columns = Arc::new(dml.target.schema().as_ref().clone());
        let state = crate::table::returning::planning_state(&self.state(), columns);
        let plan = state
            .statement_to_plan(DFStatement::Statement(Box::new(select)))
            .await?;
        let plan = crate::pg::rewrite::rewrite_plan(plan)?;
        let schema = with_names(Arc::new(plan.schema().as_arrow().clone()), &names);
        Ok((plan, schema))
    }

    /// The plan to run `prepared` with: its own, or, when a table it uses
    /// was altered, dropped or created again since, a new one, as
    /// PostgreSQL re-plans a cached statement after DDL. A new plan whose
    /// result columns differ is refused, as PostgreSQL refuses it (0A000).
    pub(super) async fn current_plan<'a>(
        &self,
        prepared: &'a Prepared,
    ) -> Result<std::borrow::Cow<'a, Prepared>> {
        if self.tables_unchanged(prepared) {
            return Ok(std::borrow::Cow::Borrowed(prepared));
        }
        let Command::Sql(stmt) = &prepared.statement else {
            return Ok(std::borrow::Cow::Borrowed(prepared));
        };
        let replanned = self.plan_statement(stmt.clone()).await?;
        let shape = |s: &Option<SchemaRef>| {
            s.as_ref().map(|s| {
                s.fields()
                    .iter()
                    .map(|f| (f.name().clone(), f.data_type().clone()))
                    .collect::<Vec<_>>()
            })
        };
        if shape(&replanned.schema) != shape(&prepared.schema) {
            return Err(QueryError::new(
                SqlState::FeatureNotSupported,
                "cached plan must not change result type: a table the statement reads changed \
                 since it was prepared; prepare it again",
            ));
        }
        Ok(std::borrow::Cow::Owned(replanned))
    }

    /// The views and external tables defined now, if `stmt` names one of
    /// them: the planner puts a view's definition (and those of the views it
    /// reads) into the plan, where their names are no longer seen.
    fn definitions_read(&self, stmt: &Statement) -> Option<Arc<Definitions>> {
        use std::ops::ControlFlow;
        let manifest = self.lookout.storage().manifest().ok()?;
        let names_one =
            datafusion::sql::sqlparser::ast::visit_relations(stmt, |name| match table_name(name) {
                Ok(name) if manifest.views.contains_key(&name) => ControlFlow::Break(()),
                Ok(name) if manifest.external.contains_key(&name) => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            })
            .is_break();
        names_one.then(|| Arc::new((manifest.views.clone(), manifest.external.clone())))
    }

    /// Whether the tables `prepared` reads, and the views and external
    /// tables it names, are defined as when it was planned.
    fn tables_unchanged(&self, prepared: &Prepared) -> bool {
        let Ok(manifest) = self.lookout.storage().manifest() else {
            return false;
        };
        let definitions = prepared
            .definitions
            .as_ref()
            .is_none_or(|d| manifest.views == d.0 && manifest.external == d.1);
        definitions
            && prepared.tables.iter().all(|(name, def)| {
                manifest.tables.get(name).map(|entry| &entry.def) == def.as_ref()
            })
    }

    /// Runs a prepared statement with parameter values.
    pub async fn execute_prepared(
        &mut self,
        prepared: &Prepared,
        params: Vec<ScalarValue>,
    ) -> Result<Output> {
        crate::access::check(&self.user, self.access, &prepared.statement, |t| {
            self.lookout.is_restricted(t)
        })?;
        self.admit(&prepared.statement)?;
        self.apply_set_config();
        let interrupt = self.interrupt();
        let result = match &prepared.plan {
            None => {
                crate::interrupt::bounded(
                    interrupt,
                    Box::pin(self.execute_command(prepared.statement.clone())),
                )
                .await
            }
            Some(_) => {
                let run = async {
                    let current = self.current_plan(prepared).await?;
                    self.run_plan(&current, Some(params)).await
                };
                crate::interrupt::bounded(interrupt, Box::pin(run)).await
            }
        };
        self.settle(result)
    }

    pub(super) async fn run_plan(
        &self,
        prepared: &Prepared,
        params: Option<Vec<ScalarValue>>,
    ) -> Result<Output> {
        let Some(plan) = prepared.plan.clone() else {
            return Err(QueryError::new(
                SqlState::InternalError,
                "statement has no plan",
            ));
        };
        let with_params = |plan: LogicalPlan| match &params {
            Some(p) if !p.is_empty() => plan.with_param_values(ParamValues::List(
                p.iter().cloned().map(Into::into).collect(),
            )),
            _ => Ok(plan),
        };
        let plan = with_params(plan)?;
        let dml = match &plan {
            LogicalPlan::Dml(DmlStatement { op, .. }) => Some(match op {
                WriteOp::Insert(_) => "INSERT",
                WriteOp::Delete => "DELETE",
                WriteOp::Update => "UPDATE",
                WriteOp::Truncate => "TRUNCATE TABLE",
                _ => "MERGE",
            }),
            _ => None,
        };
        // What the provider would be handed is checked on the plan as
        // optimized with the parameters' values (`WHERE $1` may fold away).
        let plan = match dml {
            Some(tag @ ("DELETE" | "UPDATE")) => {
                let optimized = self.state().optimize(&plan)?;
                if crate::table::write_check::check(&optimized)?
                    == crate::table::write_check::WriteShape::Nothing
                {
                    return Ok(match &prepared.schema {
                        Some(schema) if prepared.returning.is_some() => Output::Tagged {
                            tag,
                            schema: Arc::clone(schema),
                            stream: batches_stream(Arc::clone(schema), Vec::new()),
                        },
                        _ => Output::Command { tag, rows: Some(0) },
                    });
                }
                optimized
            }
            _ => plan,
        };
        if let (Some(tag), Some(returning)) = (dml, &prepared.returning) {
            let returning = with_params(returning.clone())?;
            return self.run_returning(tag, plan, returning, prepared).await;
        }
        let df = DataFrame::new(self.state(), plan);
        if let Some(tag) = dml {
            let batches = self.lookout.query_runtime().collect(df).await?;
            let rows = batches
                .first()
                .and_then(|b| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<arrow::array::UInt64Array>()
                        .map(|a| a.value(0))
                })
                .unwrap_or(0);
            return Ok(Output::Command {
                tag,
                // PostgreSQL's TRUNCATE reports no row count.
                rows: (tag != "TRUNCATE TABLE").then_some(rows),
            });
        }
        let planned = Arc::new(df.schema().as_arrow().clone());
        // The prepared schema carries the column names PostgreSQL would give.
        let schema = match &prepared.schema {
            Some(named)
                if named.fields().len() == planned.fields().len()
                    && named
                        .fields()
                        .iter()
                        .zip(planned.fields())
                        .all(|(a, b)| a.data_type() == b.data_type()) =>
            {
                Arc::clone(named)
            }
            _ => planned,
        };
        let stream = self.lookout.query_runtime().execute(df).await?;
        Ok(Output::Rows { schema, stream })
    }

    /// Runs a write whose table provider hands the rows it writes to a
    /// collector, then its `RETURNING` plan over those rows.
    pub(super) async fn run_returning(
        &self,
        tag: &'static str,
        write: LogicalPlan,
        returning: LogicalPlan,
        prepared: &Prepared,
    ) -> Result<Output> {
        let mut state = self.state();
        state
            .config_mut()
            .set_extension(Arc::new(crate::table::returning::Returned::default()));
        let runtime = self.lookout.query_runtime();
        runtime
            .collect(DataFrame::new(state.clone(), write))
            .await?;
        let stream = runtime.execute(DataFrame::new(state, returning)).await?;
        let schema = prepared.schema.clone().unwrap_or_else(|| stream.schema());
        Ok(Output::Tagged {
            tag,
            schema,
            stream,
        })
    }
}
