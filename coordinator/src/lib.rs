//! ferry's coordinator: plans a job's tables into chunks and schedules them onto workers.
//!
//! The planner's decisions are pure functions ([`planner`]); [`plan`] runs them against
//! the connectors; [`scheduler`] drives chunks through their life on a
//! [`ferry_coordination::Coordination`] store.

pub mod cluster;
pub mod config;
pub mod console;
pub mod control;
mod cutting;
pub mod deferred_key;
pub mod diff;
pub mod give_back;
pub mod idle_split;
pub mod in_flight;
pub mod job;
pub mod metrics;
pub mod pacer;
pub mod plan;
pub mod planner;
pub mod scheduler;
pub mod security;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod throttle;
