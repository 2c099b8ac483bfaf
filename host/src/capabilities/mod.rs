//! Host capabilities, one module each: the WIT it serves, a small trait, its backends.

pub mod http_outbound;
pub mod key_value;
pub mod messaging;
pub mod sql;
pub mod variables;
