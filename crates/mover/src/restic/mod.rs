//! Backups in the restic repository format.

pub mod backend;
