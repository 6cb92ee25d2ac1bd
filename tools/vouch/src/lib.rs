//! The parts of the `vouch` CLI other tools and tests reuse.

pub mod image;
pub mod reference;
pub mod signature;
