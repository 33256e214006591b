//! End-to-end tests: a real Lookout server, real Postgres clients.
//!
//! One test binary (each `tests/*.rs` links separately, and linking
//! DataFusion is slow); the modules group the concerns.

mod alerts;
mod answers;
mod auth;
mod clients;
mod copy;
mod crash;
mod delta;
mod differential;
mod docs;
mod evaluators;
mod fuzz_corpora;
mod harness;
mod http;
mod limits;
mod monitor;
mod psql;
mod replicas;
mod restart;
mod review;
mod rollups;
mod sampling;
mod slt;
mod snapshots;
mod streaming;
mod upgrade;
