//! The one list of host interfaces, linked once per process. Which of them a component may
//! use is decided when it loads (see `registry::grants`), not here.

use wasmtime::component::Linker;

use crate::bindings::{consumer, key_value, messaging_types, sqlite, variables};
use crate::capabilities::key_value::{KeyValue, KeyValueView};
use crate::capabilities::messaging::{MessagingCapability, MessagingView};
use crate::capabilities::sql::{Sql, SqlView};
use crate::capabilities::variables::{Variables, VariablesView};
use crate::state::InvocationState;

pub fn build(engine: &wasmtime::Engine) -> anyhow::Result<Linker<InvocationState>> {
    let mut linker = Linker::<InvocationState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    sqlite::add_to_linker::<_, Sql>(&mut linker, |s| SqlView {
        session: &mut s.sql,
        table: &mut s.table,
    })?;
    key_value::add_to_linker::<_, KeyValue>(&mut linker, |s| KeyValueView {
        session: &mut s.kv,
        table: &mut s.table,
    })?;
    variables::add_to_linker::<_, Variables>(&mut linker, |s| VariablesView {
        values: &s.variables,
    })?;
    messaging_types::add_to_linker::<_, MessagingCapability>(&mut linker, |s| MessagingView {
        session: &mut s.messaging,
    })?;
    consumer::add_to_linker::<_, MessagingCapability>(&mut linker, |s| MessagingView {
        session: &mut s.messaging,
    })?;
    Ok(linker)
}
