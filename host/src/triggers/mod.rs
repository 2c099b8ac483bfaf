//! What starts an invocation: the HTTP gateway ([`http`]) and event delivery ([`events`]).
//! Each looks its component up in the registry per request or message and never holds a
//! version itself, so a swap is one pointer update.

pub mod events;
pub mod http;
