//! Every end-to-end test that shares the cluster and its one operator, in one test binary: cargo
//! runs test binaries one after another, and inside a binary tests run side by side, so the
//! suites here run concurrently (`--test-threads`, set by hack/test) instead of one file after
//! another. Each test works in namespaces of its own; none stops or reconfigures the operator.
//! Those that do (failover, the namespaced install, the Helm release), the one that needs the
//! machine's memory to itself (many_files) and the disaster test stay binaries of their own.

mod backups;
mod cli;
mod faults;
mod helm;
mod isolation;
mod metrics;
mod options;
mod postgres;
mod restic;
mod restore;
mod retention;
mod s3;
mod s3_mover;
mod smoke;
mod snapshots;
mod verification;
mod waiting;
