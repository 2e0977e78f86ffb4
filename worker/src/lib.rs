//! ferry's worker side: [`runner::ChunkRunner`] copies one chunk with overwrite and
//! verifies it. `ferryctl local` runs a pool of them in one process; in distributed mode
//! the same runner runs in each worker process.

pub mod agent;
pub mod config;
pub mod runner;
