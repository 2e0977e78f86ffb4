//! ferry's model: identifiers, the job spec, table schemas and key ranges, the typed column
//! view, the canonical checksum, the throttle policy, the duration syntax and problem lists
//! shared with the configuration, and the scheduler/runner seam. No IO, no etcd, no gRPC:
//! this is what connectors depend on.
#![warn(missing_docs)]

pub mod backoff;
pub mod checksum;
pub mod column;
pub mod decimal;
pub mod duration;
pub mod execution;
pub mod glob;
pub mod ids;
pub mod key;
pub mod memory;
pub mod problems;
pub mod schema;
pub mod spec;
pub mod sync;
pub mod temporal;
#[cfg(feature = "testing")]
pub mod testing;
pub mod text;
pub mod throttle;
