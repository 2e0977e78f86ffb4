//! gRPC services: thin adapters from tonic to the domain traits.

pub mod control;
