//! The guest side: `fermyon:spin/variables@2.0.0` over values resolved at load.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::HasData;

use crate::bindings::variables;

/// [`HasData`] marker for the linker.
pub struct Variables;

impl HasData for Variables {
    type Data<'a> = VariablesView<'a>;
}

pub struct VariablesView<'a> {
    pub values: &'a Arc<HashMap<String, String>>,
}

impl variables::Host for VariablesView<'_> {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, variables::Error>> {
        if !crate::config::is_variable_name(&name) {
            return Ok(Err(variables::Error::InvalidName(format!(
                "`{name}`: names use lowercase letters, digits and `_`"
            ))));
        }
        Ok(self
            .values
            .get(&name)
            .cloned()
            .ok_or(variables::Error::Undefined(format!(
                "`{name}` is not among this component's [component.<id>.variables]"
            ))))
    }
}
