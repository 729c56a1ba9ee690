//! Backstop reconcilers.
