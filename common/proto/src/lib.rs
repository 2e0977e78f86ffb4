//! Generated protobuf messages (`proto/ferry/v1`) and their conversions to domain types
//! (`convert`).
#![allow(missing_docs, clippy::all)]

/// `ferry.v1`: values persisted in the coordination store.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/ferry.v1.rs"));
}

pub mod convert;
