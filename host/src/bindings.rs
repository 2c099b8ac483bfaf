//! Host bindings for the interfaces in `wit/host.wit` (WASI and wasi:http come from
//! wasmtime-wasi and wasmtime-wasi-http). Every import is async, so a guest waiting on the
//! database does not hold a worker thread, and trappable, so a broken host invariant traps
//! the guest instead of answering it.

mod imports {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "berth:host/host",
        imports: { default: async | trappable },
        with: {
            "fermyon:spin/sqlite.connection": crate::capabilities::sql::ConnectionHandle,
            "fermyon:spin/key-value.store": crate::capabilities::key_value::StoreHandle,
        },
    });
}

/// The export event subscribers have: called once per delivered message.
mod subscriber {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "berth:host/subscriber",
        exports: { default: async },
        with: {
            "wasmcloud:messaging/types": super::imports::wasmcloud::messaging::types,
        },
    });
}

pub use imports::fermyon::spin::{key_value, sqlite, variables};
pub use imports::wasmcloud::messaging::{consumer, types as messaging_types};
pub use subscriber::{Subscriber, SubscriberPre};
