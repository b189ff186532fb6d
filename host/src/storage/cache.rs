//! The watch cache (placeholder while it is written).
