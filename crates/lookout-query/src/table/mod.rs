//! Lookout's tables as DataFusion sees them: the schemas that list them, the
//! provider that scans and writes them, versioned tables, the scan node, and
//! the kinds of derived tables.

#[cfg(test)]
mod cache_tests;
pub(crate) mod cached_scan;
pub(crate) mod catalog;
pub(crate) mod column_cache;
pub(crate) mod derived;
pub(crate) mod external;
pub(crate) mod file_filter;
#[cfg(test)]
mod join_tests;
pub(crate) mod partition_aggregate;
pub(crate) mod provider;
pub(crate) mod returning;
pub(crate) mod scan_exec;
pub(crate) mod state_exchange;
pub(crate) mod status;
pub(crate) mod versions;
pub(crate) mod write_check;
