//! Dirty region logging: the per-volume region log that limits resyncs to what changed.

pub mod regions;
