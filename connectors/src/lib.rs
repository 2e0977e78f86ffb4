//! ferry's connectors: the [`Source`] and [`Sink`] traits every engine implements, the
//! registry that opens one from a job spec endpoint, and the engines themselves, each
//! in its own folder behind a cargo feature.
//!
//! The contract (also in `docs/connector-spec.md`):
//! - ranges are half-open and compared as row values; a chunk's batches come in key
//!   order; dropping a batch stream cancels the read and releases its connection;
//! - a sink writes a chunk as one transaction: delete the chunk's range, insert the rows,
//!   check the fence, commit; a failure leaves the target as it was;
//! - source and sink checksums of the same rows are equal ([`ferry_model::checksum`]).

pub mod carrier;
#[cfg(feature = "clickhouse")]
pub mod clickhouse;
mod compat;
#[cfg(feature = "testing")]
pub mod conformance;
pub mod error;
#[cfg(feature = "mysql")]
pub mod mysql;
pub mod opener;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod registry;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod tls;
pub mod traits;

pub use error::{ConnectorError, ErrorKind, Failure};
pub use opener::{JobOpener, OpenJobError, OpenedJob, PreparedOpener, SpecOpener};
pub use registry::{available_kinds, open_sink, open_source, parse_spec};
pub use traits::{
    BatchStream, ChunkWrite, ExportedSnapshot, Fence, NativeChecksum, NativeRead, NativeStream,
    PrepareOptions, PrepareOutcome, PullRead, PullSource, Sink, Source, UpsertSummary,
    WatermarkStats, WriteSummary,
};
