//! The control plane: the admin API, on its own listener, behind its own token.

pub mod admin;
