//! Answers every request with what `hello` answers a GET from it, over service chaining
//! (`http://hello.spin.internal/`): one chained call per request, and nothing else.
//!
//! A good answer from `hello` becomes 200 with its body; anything else is passed on as it
//! came (the mesh's own 503 or 504 included), and a call that never got an answer is 502,
//! so the load generator counts each as a failure.

use spin_sdk::http::{Request, Response, send};
use spin_sdk::http_component;

const HELLO: &str = "http://hello.spin.internal/";

#[http_component]
async fn handle(_request: Request) -> Response {
    match send::<_, Response>(Request::get(HELLO).build()).await {
        Ok(response) if (200..300).contains(response.status()) => text(200, response.into_body()),
        Ok(response) => text(*response.status(), response.into_body()),
        Err(e) => text(502, format!("calling {HELLO}: {e}")),
    }
}

fn text(status: u16, body: impl Into<Vec<u8>>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(body.into())
        .build()
}
