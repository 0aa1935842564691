//! placeholder, replaced by the real crate
