//! The control plane: deployments ([`deployments`], shared by a fleet through [`fleet`]),
//! manifest reloads ([`reload`]), and the admin API that drives them, on its own listener,
//! behind its own token.

pub mod admin;
mod dashboard;
pub mod deployments;
pub mod fleet;
pub mod reload;
