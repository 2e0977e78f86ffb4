//! Identifier newtypes. They cannot be mixed up:
//!
//! ```compile_fail
//! use ferry_model::ids::{ChunkId, Attempt};
//! fn takes_chunk(_: ChunkId) {}
//! takes_chunk(Attempt(1));
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_newtype!(
    /// The index of a chunk within its job; zero-based, dense, stable across resumes.
    ChunkId(u32)
);
id_newtype!(
    /// The attempt number of a chunk's copy. Only ever grows; the fence in the target
    /// refuses a commit from an attempt lower than one already committed.
    Attempt(u32)
);

/// The name of a job, unique within a coordination store.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The name of a worker, unique among live workers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(pub String);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
