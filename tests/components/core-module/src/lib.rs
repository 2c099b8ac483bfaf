//! A Spin HTTP handler written against Spin's own world with wit-bindgen and nothing else,
//! built for `wasm32-unknown-unknown`: a core module that imports only the interfaces it
//! uses and records its component type in a custom section. Spin accepts such a module, and
//! so does berth, which makes it a component when it loads it.

wit_bindgen::generate!({
    path: "../../../wit/targets/spin",
    world: "berth:spin-target/http-trigger",
    generate_all,
});

use exports::wasi::http0_2_0::incoming_handler::Guest;
use fermyon::spin::key_value::Store;
use wasi::http0_2_0::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Handler;

impl Guest for Handler {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let target = request.path_with_query().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let (status, body) = match path.rsplit('/').next().unwrap_or_default() {
            "hello" => (200, "hello from a core module".to_owned()),
            "variable" => match fermyon::spin::variables::get("message") {
                Ok(v) => (200, v),
                Err(e) => (500, format!("{e:?}")),
            },
            "kv" => count(query.strip_prefix("store=").unwrap_or("default")),
            _ => (404, "unknown path".to_owned()),
        };
        respond(out, status, &body);
    }
}

/// Counts calls in the store `label`: what a grant lets a module keep.
fn count(label: &str) -> (u16, String) {
    let store = match Store::open(label) {
        Ok(store) => store,
        Err(e) => return (403, format!("{e:?}")),
    };
    let count = store
        .get("count")
        .ok()
        .flatten()
        .and_then(|v| v.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
        + 1;
    match store.set("count", &count.to_le_bytes()) {
        Ok(()) => (200, count.to_string()),
        Err(e) => (500, format!("{e:?}")),
    }
}

fn respond(out: ResponseOutparam, status: u16, body: &str) {
    let headers = Fields::new();
    headers
        .set("content-type", &[b"text/plain".to_vec()])
        .expect("a new header list takes content-type");
    let response = OutgoingResponse::new(headers);
    response
        .set_status_code(status)
        .expect("the status is a valid code");
    let outgoing = response.body().expect("the body is taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = outgoing.write().expect("the body stream is taken once");
    // A client that hung up is nobody to answer to.
    let _ = stream.blocking_write_and_flush(body.as_bytes());
    drop(stream);
    let _ = OutgoingBody::finish(outgoing, None);
}

export!(Handler);
