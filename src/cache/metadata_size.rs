//! How much metadata a cache needs.
