//! Backstop's data path, run inside mover pods: what is on a volume, and how the outcome is reported
//! back to the controller without anyone reading pod logs.

pub mod inventory;
pub mod report;
