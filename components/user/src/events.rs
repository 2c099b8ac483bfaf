//! `user.created`, published when someone registers (never with the password hash).

use common::{ApiError, events};

use crate::User;

wit_bindgen::generate!({
    world: "berth:services/publisher",
    path: ["../../wit/deps/messaging@0.2.0", "../../wit/services"],
    generate_all,
});

use wasmcloud::messaging::consumer;
use wasmcloud::messaging::types::BrokerMessage;

pub fn user_created(user: &User) -> Result<(), ApiError> {
    let body = events::envelope("user.created", user).map_err(ApiError::internal)?;
    consumer::publish(&BrokerMessage {
        subject: "user.created".into(),
        body,
        reply_to: None,
    })
    .map_err(|e| ApiError::internal(format!("cannot publish user.created: {e}")))
}
