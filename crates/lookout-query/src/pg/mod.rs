//! PostgreSQL compatibility: the emulated catalogs, the rewrites that make
//! clients' catalog queries plannable, PostgreSQL's functions, and comments.

pub(crate) mod comments;
pub(crate) mod compat;
pub(crate) mod dialect;
pub(crate) mod float_arrays;
pub(crate) mod function_catalog;
pub(crate) mod functions;
pub(crate) mod rewrite;
pub(crate) mod to_char;
