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

/// An answer with `status` whose body never ends: `head`, then 64 KiB chunks of `filler`
/// again and again, as fast as the client reads them (no `Content-Length`), until it hangs up.
pub fn endless(
    status: StatusCode,
    content_type: &str,
    head: &'static str,
    filler: &str,
) -> Response {
    use futures_util::StreamExt;
    let chunk = Bytes::from(filler.repeat((64 * 1024 / filler.len().max(1)).max(1)));
    let body = futures_util::stream::once(async move { Bytes::from_static(head.as_bytes()) })
        .chain(futures_util::stream::repeat(chunk))
        .map(Ok::<_, std::convert::Infallible>);
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from_stream(body))
        .expect("valid response")
}

/// A TLS certificate made now for 127.0.0.1 and localhost: what serves it, and the
/// certificate (PEM) a client must trust.
pub fn tls_certificate() -> (tokio_rustls::TlsAcceptor, String) {
    use std::sync::Arc;
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("a test certificate");
    let cert_pem = made.cert.pem();
    let cert = made.cert.der().clone();
    let key =
        tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(made.key_pair.serialize_der())
            .expect("a test key");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("a TLS config");
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), cert_pem)
}

/// Serves `app` over TLS on a fresh loopback port, with a certificate made for 127.0.0.1
/// now; returns the base URL (`https://127.0.0.1:PORT`) and the certificate (PEM) a client
/// must trust.
pub async fn serve_tls(app: Router) -> (String, String) {
    let (acceptor, cert_pem) = tls_certificate();
    (serve_tls_with(app, acceptor).await, cert_pem)
}

/// Serves `app` over TLS with `acceptor`'s certificate on a fresh loopback port; returns the
/// base URL (`https://127.0.0.1:PORT`).
pub async fn serve_tls_with(app: Router, acceptor: tokio_rustls::TlsAcceptor) -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            });
        }
    });
    format!("https://{addr}")
}
