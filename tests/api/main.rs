//! Integration tests: the real host with the real components, driven over HTTP.

mod cli;
mod crash;
mod deploy;
mod events;
mod gateway;
mod helpers;
mod lifecycle;
mod openapi;
mod orders;
mod payments;
mod saga;
mod sandbox;
mod users;
