//! Serving and fault helpers shared by both fakes.

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::Router;
use tokio::net::TcpListener;

/// Serves `app` on a fresh loopback port; returns the base URL (`http://127.0.0.1:PORT`).
pub async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A JSON answer.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("valid response")
}

/// A 200 whose body stops after `keep` of `full`'s bytes and then breaks the connection:
/// with `keep = 0`, a connection dropped before any of the answer arrives.
pub fn broken(full: String, keep: usize) -> Response {
    let len = full.len();
    let head = Bytes::from(full.into_bytes()).slice(..keep.min(len));
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(head),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected fault",
        )),
    ];
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, len)
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .expect("valid response")
}
