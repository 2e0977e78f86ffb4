//! ferry's test helpers
