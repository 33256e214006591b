//! Float arrays written as text, `'{0.1,0.2}'` or pgvector's `'[0.1,0.2]'`,
//! where an array is expected: cast to `real[]`, `double precision[]` or
//! `vector`, or given as the value of an array column in `INSERT ...
//! VALUES`. They become `ARRAY[...]` literals, which DataFusion casts to the
//! column's type (it cannot cast text to a list).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Array, ArrayElemTypeDef, CastKind, DataType as SqlType, Expr, ObjectName, SetExpr, Statement,
    UnaryOperator, Value, visit_expressions_mut,
};

use crate::error::{QueryError, Result, SqlState};
use crate::format::parse_float_array;

/// Rewrites the float arrays written as text in `stmt`. `array_columns`
/// gives a table's columns in order, each with whether it holds arrays.
pub(crate) fn rewrite(
    stmt: &mut Statement,
    array_columns: impl Fn(&ObjectName) -> Option<Vec<(String, bool)>>,
) -> Result<()> {
    if let Statement::Insert(insert) = stmt
        && let datafusion::sql::sqlparser::ast::TableObject::TableName(name) = &insert.table
        && let Some(columns) = array_columns(name)
        && columns.iter().any(|(_, array)| *array)
        && let Some(source) = insert.source.as_mut()
        && let SetExpr::Values(values) = source.body.as_mut()
    {
        let targets: Vec<bool> = if insert.columns.is_empty() {
            columns.iter().map(|(_, array)| *array).collect()
        } else {
            insert
                .columns
                .iter()
                .map(|c| {
                    let given =
                        c.0.last()
                            .and_then(|part| part.as_ident())
                            .map(crate::ext::ident_name)
                            .unwrap_or_default();
                    columns.iter().any(|(name, array)| *array && *name == given)
                })
                .collect()
        };
        for row in &mut values.rows {
            for (expr, is_array) in row.iter_mut().zip(&targets) {
                if *is_array && let Some(text) = string_literal(expr) {
                    *expr = array_literal(&text)?;
                }
            }
        }
    }
    let mut failure = None;
    let _ = visit_expressions_mut(stmt, |expr| {
        if let Expr::Cast {
            expr: inner,
            data_type,
            kind: CastKind::Cast | CastKind::DoubleColon,
            ..
        } = expr
            && let Some(float_type) = float_array_type(data_type)
        {
            *data_type = float_type;
            if let Some(text) = string_literal(inner) {
                match array_literal(&text) {
                    Ok(array) => **inner = array,
                    Err(e) => {
                        failure = Some(e);
                        return ControlFlow::Break(());
                    }
                }
            }
        }
        ControlFlow::Continue(())
    });
    failure.map_or(Ok(()), Err)
}

/// `real[]`, `double precision[]` as they are; pgvector's `vector` and
/// `vector(n)` as `real[]` (DataFusion plans no `vector` type).
fn float_array_type(data_type: &SqlType) -> Option<SqlType> {
    match data_type {
        SqlType::Array(ArrayElemTypeDef::SquareBracket(item, _))
            if matches!(
                item.as_ref(),
                SqlType::Real
                    | SqlType::Float4
                    | SqlType::Float8
                    | SqlType::DoublePrecision
                    | SqlType::Double(_)
                    | SqlType::Float(_)
            ) =>
        {
            Some(data_type.clone())
        }
        SqlType::Custom(name, _) if name.to_string().eq_ignore_ascii_case("vector") => {
            Some(SqlType::Array(ArrayElemTypeDef::SquareBracket(
                Box::new(SqlType::Real),
                None,
            )))
        }
        _ => None,
    }
}

fn string_literal(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// `ARRAY[...]` of the numbers in `text`.
fn array_literal(text: &str) -> Result<Expr> {
    let values = parse_float_array(text)
        .map_err(|e| QueryError::new(SqlState::InvalidTextRepresentation, e))?;
    let elem = values
        .into_iter()
        .map(|v| match v {
            None => Expr::value(Value::Null),
            // NaN and the infinities have no numeric literal.
            Some(f) if !f.is_finite() => Expr::Cast {
                kind: CastKind::Cast,
                expr: Box::new(Expr::value(Value::SingleQuotedString(f.to_string()))),
                data_type: SqlType::DoublePrecision,
                array: false,
                format: None,
            },
            Some(f) if f.is_sign_negative() => Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr: Box::new(Expr::value(Value::Number(format!("{:?}", -f), false))),
            },
            Some(f) => Expr::value(Value::Number(format!("{f:?}"), false)),
        })
        .collect();
    Ok(Expr::Array(Array { elem, named: true }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::compat::parse_sql;

    fn rewritten(sql: &str) -> Result<String> {
        let mut stmt = parse_sql(sql).expect("parses").remove(0);
        rewrite(&mut stmt, |_| {
            Some(vec![
                ("ts".into(), false),
                ("e".into(), true),
                ("v".into(), true),
            ])
        })?;
        Ok(stmt.to_string())
    }

    #[test]
    fn text_arrays_become_array_literals() {
        assert_eq!(
            rewritten("INSERT INTO t VALUES (now(), '{1, -2.5}', '[3,NaN]')").expect("ok"),
            "INSERT INTO t VALUES (now(), ARRAY[1.0, -2.5], ARRAY[3.0, CAST('NaN' AS DOUBLE PRECISION)])"
        );
        assert_eq!(
            rewritten("INSERT INTO t (e, ts) VALUES ('{1}', '2025-01-01')").expect("ok"),
            "INSERT INTO t (e, ts) VALUES (ARRAY[1.0], '2025-01-01')"
        );
        assert_eq!(
            rewritten("SELECT '[1,2]'::vector, CAST('{0.5}' AS REAL[])").expect("ok"),
            "SELECT ARRAY[1.0, 2.0]::REAL[], CAST(ARRAY[0.5] AS REAL[])"
        );
        let err = rewritten("INSERT INTO t VALUES (now(), '{1,x}')").expect_err("malformed");
        assert_eq!(err.sqlstate(), "22P02");
    }
}
