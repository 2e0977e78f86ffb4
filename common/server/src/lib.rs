//! What ferry's processes share: the layered configuration loader, the gRPC health
//! service, signals and process setup.
#![warn(missing_docs)]

pub mod config;
pub mod health;
pub mod metrics_http;
pub mod process;
