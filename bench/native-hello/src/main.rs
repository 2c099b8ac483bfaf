//! `native-hello [ADDR]`: the ceiling berth is measured against. The same hyper-util
//! connection builder, runtime flavour and socket options as berth's gateway, answering
//! every request with 200 `hello` and nothing else; prints `listening on <addr>` when ready.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = match TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("native-hello: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    match listener.local_addr() {
        Ok(bound) => println!("listening on {bound}"),
        Err(e) => {
            eprintln!("native-hello: cannot read the bound address: {e}");
            std::process::exit(1);
        }
    }
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper::service::service_fn(|_: Request<hyper::body::Incoming>| async {
            let mut response = Response::new(Full::new(Bytes::from_static(b"hello")));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain"),
            );
            Ok::<_, Infallible>(response)
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(connection);
    }
}
