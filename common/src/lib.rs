//! ferry's shared model: identifiers, the job spec, table schemas and key ranges,
//! the canonical checksum, and the coordination store that the scheduler talks to.
#![warn(missing_docs)]

pub mod backoff;
pub mod checksum;
pub mod config;
pub mod coordination;
pub mod decimal;
pub mod execution;
pub mod glob;
pub mod health;
pub mod ids;
pub mod key;
pub mod process;
pub mod proto;
pub mod schema;
pub mod spec;
pub mod temporal;
pub mod throttle;
