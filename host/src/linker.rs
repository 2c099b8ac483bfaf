//! The one list of host interfaces, linked once per process. Which of them a component may
//! use is decided when it loads (see `components::grants`), not here.

use wasmtime::component::Linker;

use crate::bindings::{key_value, sqlite, variables};
use crate::capabilities::key_value::{KeyValue, KeyValueView};
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
    Ok(linker)
}
