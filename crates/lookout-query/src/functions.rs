//! Functions Lookout adds to DataFusion's.

use datafusion::execution::context::SessionContext;

/// Registers Lookout's functions in a session.
pub(crate) fn register(ctx: &SessionContext) {
    // TimescaleDB's name for date_bin, with the same arguments.
    let date_bin = datafusion::functions::datetime::date_bin();
    ctx.register_udf(date_bin.as_ref().clone().with_aliases(["time_bucket"]));
}
