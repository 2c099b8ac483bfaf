//! The guest side: `fermyon:spin/key-value@2.0.0` over [`Store`].

use std::sync::Arc;

use tracing::Instrument as _;
use wasmtime::component::{HasData, Resource, ResourceTable};

use super::{Grants, Store, StoreError};
use crate::bindings::key_value;

/// What a guest holds after `store.open(label)`.
pub struct StoreHandle {
    label: String,
    store: Arc<dyn Store>,
}

/// One invocation's view of its component's stores.
pub struct KvSession {
    component: Arc<str>,
    grants: Grants,
}

impl KvSession {
    pub fn new(component: Arc<str>, grants: Grants) -> KvSession {
        KvSession { component, grants }
    }
}

/// [`HasData`] marker for the linker.
pub struct KeyValue;

impl HasData for KeyValue {
    type Data<'a> = KeyValueView<'a>;
}

pub struct KeyValueView<'a> {
    pub session: &'a mut KvSession,
    pub table: &'a mut ResourceTable,
}

impl KeyValueView<'_> {
    /// The store behind a handle, and a span for one operation on it.
    fn store(
        &self,
        this: &Resource<StoreHandle>,
        op: &'static str,
    ) -> wasmtime::Result<(Arc<dyn Store>, tracing::Span)> {
        let handle = self.table.get(this)?;
        let span = tracing::info_span!("kv", op, store = %handle.label);
        Ok((handle.store.clone(), span))
    }
}

fn to_wit<T>(result: Result<T, StoreError>) -> Result<T, key_value::Error> {
    result.map_err(|e| key_value::Error::Other(e.0))
}

impl key_value::Host for KeyValueView<'_> {}

impl key_value::HostStore for KeyValueView<'_> {
    async fn open(
        &mut self,
        label: String,
    ) -> wasmtime::Result<Result<Resource<StoreHandle>, key_value::Error>> {
        let Some(store) = self.session.grants.get(&label).cloned() else {
            tracing::warn!(
                component = %self.session.component,
                store = label,
                "denied: grant it with `key_value_stores = [\"{label}\"]` in [component.{}]",
                self.session.component
            );
            return Ok(Err(key_value::Error::AccessDenied));
        };
        Ok(Ok(self.table.push(StoreHandle { label, store })?))
    }

    async fn get(
        &mut self,
        this: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, key_value::Error>> {
        let (store, span) = self.store(&this, "get")?;
        Ok(to_wit(store.get(&key).instrument(span).await))
    }

    async fn set(
        &mut self,
        this: Resource<StoreHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), key_value::Error>> {
        let (store, span) = self.store(&this, "set")?;
        Ok(to_wit(store.set(&key, &value).instrument(span).await))
    }

    async fn delete(
        &mut self,
        this: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<(), key_value::Error>> {
        let (store, span) = self.store(&this, "delete")?;
        Ok(to_wit(store.delete(&key).instrument(span).await))
    }

    async fn exists(
        &mut self,
        this: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<bool, key_value::Error>> {
        let (store, span) = self.store(&this, "exists")?;
        Ok(to_wit(store.exists(&key).instrument(span).await))
    }

    async fn get_keys(
        &mut self,
        this: Resource<StoreHandle>,
    ) -> wasmtime::Result<Result<Vec<String>, key_value::Error>> {
        let (store, span) = self.store(&this, "keys")?;
        Ok(to_wit(store.keys().instrument(span).await))
    }

    async fn drop(&mut self, this: Resource<StoreHandle>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
