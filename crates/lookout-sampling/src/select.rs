//! Choosing a decision's kept rows in two passes over its candidate rows.
//!
//! The first pass reads the candidates' narrow columns and counts each
//! (segment, hour): rows kept by a rule, late rows, rows of closing hours and
//! those under the rate, and the `minimum` lowest (hash, key) of the closing
//! rows. The second pass reads the candidates whole and keeps each row by
//! its stratum's outcome. Held rows are read twice, never sorted and never
//! hashed; the first design ran the same selection as SQL, which joined the
//! held rows to the hours closed before and the keys already kept (hash
//! tables of every held row, 10 GB for 10 M), planned the candidates once
//! per reference and ranked whole rows with `row_number()`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, RecordBatch};
use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use lookout_query::{QueryError, Result, SqlState};

use crate::decide::{Count, micros, missing_column};
use crate::policy::SamplingPolicy;

/// A closing row's place in its stratum's ranking: hash, then key, NULLs
/// last (the order of `ORDER BY "_h", key`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rank {
    hash: Option<u64>,
    key: Box<[u8]>,
}

impl Rank {
    fn new(hash: Option<f64>, key: &[u8]) -> Rank {
        Rank {
            // Hashes are in [0, 1): their bits order as the numbers do.
            hash: hash.map(f64::to_bits),
            key: key.into(),
        }
    }
}

impl Ord for Rank {
    fn cmp(&self, other: &Self) -> Ordering {
        let hash = match (self.hash, other.hash) {
            (Some(a), Some(b)) => a.cmp(&b),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        hash.then_with(|| self.key.cmp(&other.key))
    }
}

impl PartialOrd for Rank {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One (segment, hour) of a decision.
#[derive(Debug, Default)]
struct Stratum {
    rule: i64,
    late_n: i64,
    late_k: i64,
    /// Rows of the closing hour (not kept by a rule, not late).
    n: i64,
    /// Those of them under the rate.
    k: i64,
    /// The `minimum` lowest ranks of the closing rows (a max-heap).
    lowest: BinaryHeap<Rank>,
    /// Second pass: closing rows kept at the highest kept rank so far.
    taken_at_threshold: usize,
}

/// What the second pass does with a stratum's closing rows.
#[derive(Debug)]
enum Outcome {
    /// Keep the rows under the rate, with this weight.
    Rate(f64),
    /// Keep the rows ranked at or below `threshold` (`ties` of them at it),
    /// with this weight.
    Minimum {
        threshold: Rank,
        ties: usize,
        weight: f64,
    },
}

/// The columns of a candidates batch a selection reads, and how the
/// decision treats each row.
struct Candidates<'a> {
    strata: Rows,
    hash: &'a Float64Array,
    rate: &'a Float64Array,
    key: Rows,
    classes: Vec<Class>,
}

/// How a decision treats a candidate row.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Class {
    /// A keep-rule matches it: kept with weight 1.
    Rule,
    /// Its (segment, hour) closed before it arrived: kept under the rate.
    Late,
    /// Its (segment, hour) closes now.
    Closing,
    /// Its hour is still open, or a rule kept it before: it stays held.
    Waiting,
}

impl Candidates<'_> {
    fn hash(&self, row: usize) -> Option<f64> {
        self.hash.is_valid(row).then(|| self.hash.value(row))
    }

    /// `"_h" < "_rate"`, false where either is NULL.
    fn under_rate(&self, row: usize) -> bool {
        self.rate.is_valid(row) && self.hash(row).is_some_and(|h| h < self.rate.value(row))
    }

    /// How the row ranks against `rank`.
    fn cmp_rank(&self, row: usize, rank: &Rank) -> Ordering {
        let hash = self.hash(row).map(f64::to_bits);
        let by_hash = match (hash, rank.hash) {
            (Some(a), Some(b)) => a.cmp(&b),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        by_hash.then_with(|| self.key.row(row).as_ref().cmp(&rank.key))
    }
}

/// A decision's strata, counted by the first pass, applied by the second.
pub(crate) struct Selection {
    minimum: usize,
    close_before: i64,
    segment_by: Vec<String>,
    key: String,
    segment_types: Vec<DataType>,
    key_type: DataType,
    /// Segment columns and hour (as microseconds), as comparable rows.
    strata_rows: RowConverter,
    key_rows: RowConverter,
    index: HashMap<Box<[u8]>, usize>,
    names: Vec<OwnedRow>,
    /// (segment, hour)s that earlier decisions closed.
    closed: HashSet<Box<[u8]>>,
    /// Keys the table holds in the hours this decision closes.
    published: HashSet<Box<[u8]>>,
    /// Keys a rule reading other tables keeps.
    matched: HashSet<Box<[u8]>>,
    strata: Vec<Stratum>,
    outcomes: Vec<Outcome>,
}

impl Selection {
    /// A selection over candidates of `schema` (which holds the segment
    /// columns, the key, `_hour`, `_h`, `_rate`, `_keep` and `_again`), closing the (segment, hour)s
    /// before `close_before`.
    pub(crate) fn new(
        policy: &SamplingPolicy,
        schema: &SchemaRef,
        close_before: i64,
    ) -> Result<Selection> {
        let mut segment_types = Vec::new();
        for c in &policy.segment_by {
            let field = schema
                .field_with_name(c)
                .map_err(|_| missing_column(c, &policy.table))?;
            segment_types.push(field.data_type().clone());
        }
        let mut fields: Vec<SortField> =
            segment_types.iter().cloned().map(SortField::new).collect();
        fields.push(SortField::new(DataType::Int64));
        let key = schema
            .field_with_name(&policy.key)
            .map_err(|_| missing_column(&policy.key, &policy.table))?;
        let key_rows = RowConverter::new(vec![SortField::new_with_options(
            key.data_type().clone(),
            SortOptions {
                descending: false,
                nulls_first: false,
            },
        )])?;
        Ok(Selection {
            minimum: usize::try_from(policy.minimum).unwrap_or(usize::MAX),
            close_before,
            segment_by: policy.segment_by.clone(),
            key: policy.key.clone(),
            segment_types,
            key_type: key.data_type().clone(),
            strata_rows: RowConverter::new(fields)?,
            key_rows,
            index: HashMap::new(),
            names: Vec::new(),
            closed: HashSet::new(),
            published: HashSet::new(),
            matched: HashSet::new(),
            strata: Vec::new(),
            outcomes: Vec::new(),
        })
    }

    /// The selection's columns of `batch` and its rows' classes; `hours`
    /// holds its `_hour` column as microseconds (see [`Selection::hours`]).
    fn read<'a>(&self, batch: &'a RecordBatch, hours: &'a ArrayRef) -> Result<Candidates<'a>> {
        let column = |name: &str| column(batch, name);
        let typed = |name: &str, t: DataType| -> Result<&'a ArrayRef> {
            let c = column(name)?;
            if *c.data_type() == t {
                Ok(c)
            } else {
                Err(internal(format!(
                    "candidate column {name} is {}",
                    c.data_type()
                )))
            }
        };
        let mut strata_columns = Vec::new();
        for c in &self.segment_by {
            strata_columns.push(Arc::clone(column(c)?));
        }
        strata_columns.push(Arc::clone(hours));
        let strata = self.strata_rows.convert_columns(&strata_columns)?;
        let keys = column(&self.key)?;
        let key = self.key_rows.convert_columns(&[Arc::clone(keys)])?;
        let hour = hours.as_primitive::<Int64Type>();
        let keep = typed("_keep", DataType::Boolean)?.as_boolean();
        let again = typed("_again", DataType::Boolean)?.as_boolean();
        let set = |c: &BooleanArray, row: usize| c.is_valid(row) && c.value(row);
        // A NULL key is never in a key set (SQL's `=` never matches it).
        let listed = |keys_in: &HashSet<Box<[u8]>>, row: usize| {
            keys.is_valid(row) && keys_in.contains(key.row(row).as_ref())
        };
        let classes = (0..batch.num_rows())
            .map(|row| {
                if set(again, row) && listed(&self.published, row) {
                    Class::Waiting
                } else if set(keep, row) || listed(&self.matched, row) {
                    Class::Rule
                } else if self.closed.contains(strata.row(row).as_ref()) {
                    Class::Late
                } else if hour.is_valid(row) && hour.value(row) < self.close_before {
                    Class::Closing
                } else {
                    Class::Waiting
                }
            })
            .collect();
        Ok(Candidates {
            strata,
            hash: typed("_h", DataType::Float64)?.as_primitive::<Float64Type>(),
            rate: typed("_rate", DataType::Float64)?.as_primitive::<Float64Type>(),
            key,
            classes,
        })
    }

    /// Adds the (segment, hour)s of `batch` (the segment columns and
    /// `_hour`) to those closed before.
    pub(crate) fn add_closed(&mut self, batch: &RecordBatch) -> Result<()> {
        let hours = Self::hours(batch)?;
        let mut columns = Vec::new();
        for (c, field) in self.segment_by.iter().zip(self.segment_types.clone()) {
            columns.push(arrow::compute::cast(column(batch, c)?, &field)?);
        }
        columns.push(hours);
        let rows = self.strata_rows.convert_columns(&columns)?;
        self.closed.extend(rows.iter().map(|r| r.as_ref().into()));
        Ok(())
    }

    /// Adds the keys in the first column of `batch` to those the table holds.
    pub(crate) fn add_published(&mut self, batch: &RecordBatch) -> Result<()> {
        let keys = self.key_set(batch)?;
        self.published.extend(keys);
        Ok(())
    }

    /// Adds the keys in the first column of `batch` to those a rule keeps.
    pub(crate) fn add_matched(&mut self, batch: &RecordBatch) -> Result<()> {
        let keys = self.key_set(batch)?;
        self.matched.extend(keys);
        Ok(())
    }

    fn key_set(&self, batch: &RecordBatch) -> Result<Vec<Box<[u8]>>> {
        let keys = arrow::compute::cast(batch.column(0), &self.key_type)?;
        let rows = self.key_rows.convert_columns(&[Arc::clone(&keys)])?;
        Ok((0..keys.len())
            .filter(|&i| keys.is_valid(i))
            .map(|i| rows.row(i).as_ref().into())
            .collect())
    }

    fn hours(batch: &RecordBatch) -> Result<ArrayRef> {
        micros(column(batch, "_hour")?)
    }

    /// First pass: counts a batch of candidates.
    pub(crate) fn count(&mut self, batch: &RecordBatch) -> Result<()> {
        let hours = Self::hours(batch)?;
        let rows = self.read(batch, &hours)?;
        for row in 0..batch.num_rows() {
            let class = rows.classes[row];
            if class == Class::Waiting {
                continue;
            }
            let name = rows.strata.row(row);
            let at = match self.index.get(name.as_ref()) {
                Some(&at) => at,
                None => {
                    self.index.insert(name.as_ref().into(), self.strata.len());
                    self.names.push(name.owned());
                    self.strata.push(Stratum::default());
                    self.strata.len() - 1
                }
            };
            let stratum = &mut self.strata[at];
            match class {
                Class::Rule => stratum.rule += 1,
                Class::Late => {
                    stratum.late_n += 1;
                    stratum.late_k += i64::from(rows.under_rate(row));
                }
                Class::Closing => {
                    stratum.n += 1;
                    stratum.k += i64::from(rows.under_rate(row));
                    let lowest = &mut stratum.lowest;
                    if lowest.len() < self.minimum {
                        lowest.push(Rank::new(rows.hash(row), rows.key.row(row).as_ref()));
                    } else if lowest
                        .peek()
                        .is_some_and(|top| rows.cmp_rank(row, top) == Ordering::Less)
                    {
                        lowest.pop();
                        lowest.push(Rank::new(rows.hash(row), rows.key.row(row).as_ref()));
                    }
                }
                Class::Waiting => {}
            }
        }
        Ok(())
    }

    /// Ends the first pass: the counts-table rows of the strata, and what
    /// the second pass keeps of each.
    pub(crate) fn counts(&mut self) -> Result<Vec<Count>> {
        let names = self
            .strata_rows
            .convert_rows(self.names.iter().map(|r| r.row()))?;
        let segments = self.segment_by.len();
        let hours = names[segments].as_primitive::<Int64Type>();
        let m = i64::try_from(self.minimum).unwrap_or(i64::MAX);
        let mut counts = Vec::with_capacity(self.strata.len());
        self.outcomes.clear();
        for (at, stratum) in self.strata.iter_mut().enumerate() {
            let (n, k) = (stratum.n, stratum.k);
            let small = n > 0 && k < m;
            let sampled = if small { n.min(m) } else { k };
            let weight = (sampled > 0).then(|| n as f64 / sampled as f64);
            let lowest = std::mem::take(&mut stratum.lowest);
            self.outcomes.push(if small {
                let ties = |top: &Rank| lowest.iter().filter(|r| *r == top).count();
                let threshold = lowest
                    .peek()
                    .cloned()
                    .ok_or_else(|| internal("a sampled stratum ranked no rows".into()))?;
                Outcome::Minimum {
                    ties: ties(&threshold),
                    threshold,
                    weight: weight.unwrap_or(1.0),
                }
            } else {
                Outcome::Rate(weight.unwrap_or(1.0))
            });
            counts.push(Count {
                hour: hours.is_valid(at).then(|| hours.value(at)),
                segment: names[..segments].iter().map(|c| c.slice(at, 1)).collect(),
                seen: stratum.rule + stratum.late_n + n,
                kept_by_rule: stratum.rule,
                kept_by_rate: stratum.late_k + if small { 0 } else { k },
                kept_for_minimum: if small { sampled } else { 0 },
                rescued: 0,
                dropped: stratum.late_n - stratum.late_k + n - sampled,
                weight,
                closes_hour: n > 0,
            });
        }
        Ok(counts)
    }

    /// Second pass: the kept rows of a batch of candidates, in its first
    /// `columns` columns, with the weight column (at `weight`) set.
    pub(crate) fn keep(
        &mut self,
        batch: &RecordBatch,
        columns: usize,
        weight: usize,
    ) -> Result<RecordBatch> {
        let hours = Self::hours(batch)?;
        let rows = self.read(batch, &hours)?;
        let mut kept = Vec::with_capacity(batch.num_rows());
        let mut weights = Vec::new();
        for row in 0..batch.num_rows() {
            let w = match rows.classes[row] {
                Class::Rule => Some(1.0),
                Class::Late => rows.under_rate(row).then(|| 1.0 / rows.rate.value(row)),
                Class::Closing => {
                    let name = rows.strata.row(row);
                    let at = *self.index.get(name.as_ref()).ok_or_else(|| {
                        internal("a closing row's stratum was not counted".into())
                    })?;
                    match &self.outcomes[at] {
                        Outcome::Rate(w) => rows.under_rate(row).then_some(*w),
                        Outcome::Minimum {
                            threshold,
                            ties,
                            weight,
                        } => match rows.cmp_rank(row, threshold) {
                            Ordering::Less => Some(*weight),
                            Ordering::Equal if self.strata[at].taken_at_threshold < *ties => {
                                self.strata[at].taken_at_threshold += 1;
                                Some(*weight)
                            }
                            _ => None,
                        },
                    }
                }
                Class::Waiting => None,
            };
            kept.push(w.is_some());
            weights.extend(w);
        }
        let projected = batch.project(&(0..columns).collect::<Vec<_>>())?;
        let mut out = arrow::compute::filter_record_batch(&projected, &BooleanArray::from(kept))?
            .columns()
            .to_vec();
        let field = projected.schema_ref().field(weight).clone();
        out[weight] = arrow::compute::cast(&Float64Array::from(weights), field.data_type())?;
        Ok(RecordBatch::try_new(projected.schema(), out)?)
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| internal(format!("the candidates have no column {name}")))
}

fn internal(message: String) -> QueryError {
    QueryError::new(SqlState::InternalError, message)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    const HOUR: i64 = 3_600_000_000;

    /// One candidate row, as the reference sees it.
    #[derive(Debug, Clone)]
    struct Row {
        model: Option<&'static str>,
        key: Option<String>,
        hour: Option<i64>,
        hash: Option<f64>,
        rate: f64,
        keep: bool,
        again: bool,
    }

    fn policy(minimum: u64) -> SamplingPolicy {
        SamplingPolicy {
            table: "t".into(),
            key: "request_id".into(),
            segment_by: vec!["model".into()],
            rate: "0.5".into(),
            minimum,
            keep: vec![],
            window: 0,
            window_text: "0 seconds".into(),
            overflow: 0,
            overflow_text: "0 seconds".into(),
            weight: "w".into(),
        }
    }

    fn schema() -> SchemaRef {
        let utc = DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into()));
        Arc::new(Schema::new(vec![
            Field::new("model", DataType::Utf8, true),
            Field::new("request_id", DataType::Utf8, true),
            Field::new("w", DataType::Float64, true),
            Field::new("id", DataType::Int64, false),
            Field::new("_hour", utc, true),
            Field::new("_h", DataType::Float64, true),
            Field::new("_rate", DataType::Float64, false),
            Field::new("_keep", DataType::Boolean, false),
            Field::new("_again", DataType::Boolean, false),
        ]))
    }

    fn batch(rows: &[Row], first_id: i64) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(rows.iter().map(|r| r.model).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| r.key.clone()).collect::<StringArray>()),
            Arc::new(Float64Array::from(vec![None; rows.len()])),
            Arc::new(Int64Array::from_iter_values(
                (0..rows.len() as i64).map(|i| first_id + i),
            )),
            Arc::new(
                rows.iter()
                    .map(|r| r.hour)
                    .collect::<TimestampMicrosecondArray>()
                    .with_timezone("UTC"),
            ),
            Arc::new(rows.iter().map(|r| r.hash).collect::<Float64Array>()),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.rate))),
            Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.keep)))),
            Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.again)))),
        ];
        RecordBatch::try_new(schema(), columns).unwrap()
    }

    /// Random rows with few distinct models, keys and hashes, so strata
    /// are small and ranks tie, with NULLs in every nullable column.
    fn random_rows(seed: u64, n: usize) -> Vec<Row> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        };
        (0..n)
            .map(|_| Row {
                model: [Some("a"), Some("b"), None][next(3) as usize],
                key: (next(10) > 0).then(|| format!("k{}", next(12))),
                hour: (next(20) > 0).then(|| next(4) as i64 * HOUR),
                hash: (next(10) > 0).then(|| next(6) as f64 / 10.0),
                rate: [0.0, 0.15, 0.35, 1.0][next(4) as usize],
                keep: next(8) == 0,
                again: next(3) == 0,
            })
            .collect()
    }

    const CLOSE_BEFORE: i64 = 3 * HOUR;

    fn closed(row: &Row) -> bool {
        row.model == Some("a") && row.hour == Some(0)
    }

    /// The decision as the SQL of the first design defined it, row by row.
    fn reference(rows: &[Row], minimum: usize) -> (Vec<(String, i64)>, Vec<String>) {
        let in_set = |key: &Option<String>, set: &str| key.as_deref() == Some(set);
        let mut kept = Vec::new();
        let mut strata: BTreeMap<(Option<&str>, Option<i64>), Vec<&Row>> = BTreeMap::new();
        let mut counts: BTreeMap<(Option<&str>, Option<i64>), [i64; 3]> = BTreeMap::new();
        let under = |r: &Row| r.hash.is_some_and(|h| h < r.rate);
        let describe =
            |r: &Row, w: f64| format!("{:?} {:?} {:?} {:?} {w:.6}", r.model, r.hour, r.hash, r.key);
        for r in rows {
            if r.again && in_set(&r.key, "k3") {
                continue;
            }
            let stratum = (r.model, r.hour);
            if r.keep || in_set(&r.key, "k5") {
                counts.entry(stratum).or_default()[0] += 1;
                kept.push(describe(r, 1.0));
            } else if closed(r) {
                counts.entry(stratum).or_default()[1] += 1;
                if under(r) {
                    kept.push(describe(r, 1.0 / r.rate));
                }
            } else if r.hour.is_some_and(|h| h < CLOSE_BEFORE) {
                counts.entry(stratum).or_default()[2] += 1;
                strata.entry(stratum).or_default().push(r);
            }
        }
        for closing in strata.values_mut() {
            let n = closing.len();
            let k = closing.iter().filter(|r| under(r)).count();
            if k < minimum {
                // ORDER BY "_h", key: NULLs last.
                closing.sort_by(|a, b| {
                    let hash = |r: &Row| (r.hash.is_none(), r.hash.map(f64::to_bits));
                    let key = |r: &Row| (r.key.is_none(), r.key.clone());
                    hash(a).cmp(&hash(b)).then_with(|| key(a).cmp(&key(b)))
                });
                let take = n.min(minimum);
                for r in &closing[..take] {
                    kept.push(describe(r, n as f64 / take as f64));
                }
            } else {
                for r in closing.iter().filter(|r| under(r)) {
                    kept.push(describe(r, n as f64 / k as f64));
                }
            }
        }
        kept.sort();
        let mut seen: Vec<(String, i64)> = counts
            .iter()
            .map(|((m, h), c)| (format!("{m:?} {h:?}"), c.iter().sum()))
            .collect();
        seen.sort();
        (seen, kept)
    }

    fn select(rows: &[Row], minimum: u64) -> (Vec<(String, i64)>, Vec<String>) {
        let mut selection = Selection::new(&policy(minimum), &schema(), CLOSE_BEFORE).unwrap();
        let closed_batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("model", DataType::Utf8, true),
                Field::new("_hour", DataType::Int64, true),
            ])),
            vec![
                Arc::new(StringArray::from(vec![Some("a")])),
                Arc::new(Int64Array::from(vec![0])),
            ],
        )
        .unwrap();
        selection.add_closed(&closed_batch).unwrap();
        let keys = |key: &str| {
            let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true)]));
            let keys: ArrayRef = Arc::new(StringArray::from(vec![Some(key), None]));
            RecordBatch::try_new(schema, vec![keys]).unwrap()
        };
        selection.add_published(&keys("k3")).unwrap();
        selection.add_matched(&keys("k5")).unwrap();
        let half = rows.len() / 2;
        let batches = [batch(&rows[..half], 0), batch(&rows[half..], half as i64)];
        for b in &batches {
            selection.count(b).unwrap();
        }
        let mut seen: Vec<(String, i64)> = selection
            .counts()
            .unwrap()
            .iter()
            .map(|c| {
                let model = c.segment[0].as_string::<i32>();
                let model = model.is_valid(0).then(|| model.value(0));
                (format!("{model:?} {:?}", c.hour), c.seen)
            })
            .collect();
        seen.sort();
        let mut kept = Vec::new();
        for b in &batches {
            let out = selection.keep(b, 4, 2).unwrap();
            let ids = out.column(3).as_primitive::<Int64Type>();
            let weights = out.column(2).as_primitive::<Float64Type>();
            for i in 0..out.num_rows() {
                let r = &rows[ids.value(i) as usize];
                kept.push(format!(
                    "{:?} {:?} {:?} {:?} {:.6}",
                    r.model,
                    r.hour,
                    r.hash,
                    r.key,
                    weights.value(i)
                ));
            }
        }
        kept.sort();
        (seen, kept)
    }

    #[test]
    fn selection_matches_the_row_by_row_definition() {
        for seed in 1..200 {
            let rows = random_rows(seed, 40 + (seed as usize * 7) % 300);
            for minimum in [0, 1, 3, 8] {
                let (seen, kept) = select(&rows, minimum);
                let (want_seen, want_kept) = reference(&rows, minimum as usize);
                assert_eq!(seen, want_seen, "seed {seed}, minimum {minimum}");
                assert_eq!(kept, want_kept, "seed {seed}, minimum {minimum}");
            }
        }
    }
}
