//! Btrees as the kernel's persistent-data library lays them out.

pub mod builder;
pub mod node;
pub mod walk;

pub use node::{NodeError, NodeKind, NodeView};
