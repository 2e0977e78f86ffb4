//! A catalogue of bad input (issue 10, part 5): every case asserts the exact message
//! (or a precise part naming the thing and the fix), the exit code or gRPC code, and
//! that nothing was lost. `docs/errors.md` lists the same cases with what to do.

mod cli;
mod common;
mod control;
mod databases;
mod etcd;
mod spec;
mod state_file;
