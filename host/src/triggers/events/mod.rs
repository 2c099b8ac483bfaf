//! Events between components: each publisher's outbox moved to the bus ([`relay`]), and
//! each subscribing group's messages delivered to its component ([`delivery`]).

pub mod delivery;
pub mod relay;
