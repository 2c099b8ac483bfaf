//! Integration tests: the real host with the real components, driven over HTTP.

mod cli;
mod gateway;
mod helpers;
mod openapi;
mod orders;
mod payments;
mod sandbox;
mod users;
