//! ferry's worker side: [`agent`] takes assignments through the cluster protocol and
//! runs each with [`runner::ChunkRunner`], which copies one chunk with overwrite and
//! verifies it; [`server::serve`] is a whole `ferry-worker` process. `ferryctl local`
//! runs N agents in its own process on the in-process protocol.

pub mod agent;
pub mod config;
pub mod metrics;
pub mod runner;
pub mod server;
mod sync_chunk;
