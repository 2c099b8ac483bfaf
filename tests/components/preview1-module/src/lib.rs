//! A Spin HTTP handler built for `wasm32-wasip1`: a core module whose WASI imports are
//! preview 1 (`wasi_snapshot_preview1`), as Spin SDKs before WASI 0.2 built them and as
//! many published Spin apps still are. The host makes it a component when it loads it.

use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(request: Request) -> Response {
    let what = request.path().rsplit('/').next().unwrap_or_default();
    match what {
        "hello" => text(200, "hello from a WASI preview 1 module"),
        "variable" => match spin_sdk::variables::get("message") {
            Ok(v) => text(200, v),
            Err(e) => text(500, format!("{e:?}")),
        },
        // Through the preview 1 adapter: environ_get, clock_time_get and fd_write.
        "wasi" => {
            let greeting = std::env::var("GREETING").unwrap_or_default();
            let since_epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            println!("a WASI preview 1 module wrote this line");
            text(200, format!("{greeting}; {since_epoch} s since 1970"))
        }
        "kv" => {
            let label = request.query().strip_prefix("store=").unwrap_or("default");
            let store = match spin_sdk::key_value::Store::open(label) {
                Ok(store) => store,
                Err(e) => return text(403, format!("{e:?}")),
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
                Ok(()) => text(200, count.to_string()),
                Err(e) => text(500, format!("{e:?}")),
            }
        }
        _ => text(404, "unknown path"),
    }
}

fn text(status: u16, body: impl Into<Vec<u8>>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(body.into())
        .build()
}
