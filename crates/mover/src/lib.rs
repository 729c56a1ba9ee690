//! Backstop's data path, run inside mover pods: volumes into verifiable archives in a repository,
//! and the outcome reported back to the controller without anyone reading pod logs.

pub mod archive;
pub mod backup;
pub mod catalog;
pub mod commit;
pub mod extract;
pub mod inventory;
pub mod manifest;
pub mod owner;
pub mod report;
pub mod repository;
pub mod restic;
pub mod restore;
pub mod stream;
pub mod walk;
