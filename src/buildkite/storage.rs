//! Artifact storage: where an artifact's `/download` redirect may lead, and the HTTP client
//! that follows it (without the token).
//!
//! Anyone who can run a build can make its artifacts point anywhere, and a redirect is only
//! a URL: so every hop is checked *before* anything connects to it. A hop must be `https`
//! (or the API's own scheme), must not be a link-local or cloud metadata address however the
//! IP literal is written, and there are at most [`MAX_HOPS`] of them. On a direct connection
//! the addresses a host name resolves to are checked too; through a proxy the proxy resolves
//! the name, so only the URL can be checked.

use std::error::Error;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect::Policy;
use reqwest::ClientBuilder;
use url::{Host, Url};

/// Redirects followed from an artifact's `/download`, Buildkite's own answer included.
pub(crate) const MAX_HOPS: usize = 3;

/// Why a storage location is refused, before any connection to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("its storage location is {host}, a link-local or cloud metadata address")]
    Metadata { host: String },
    #[error(
        "its storage location {host} resolves to {address}, a link-local or cloud metadata address"
    )]
    Resolved { host: String, address: IpAddr },
    #[error("its storage location {host} is {scheme}://, neither https:// nor the API's {api}://")]
    Scheme {
        host: String,
        scheme: String,
        api: String,
    },
    #[error("its storage location redirects more than {MAX_HOPS} times (at {host})")]
    TooManyHops { host: String },
}

/// Checks hop number `hop` (1 for the location Buildkite's `/download` answered) of an
/// artifact download, from its URL alone: nothing has connected to it yet.
pub(crate) fn check(url: &Url, api_scheme: &str, hop: usize) -> Result<(), Refused> {
    let host = url.host_str().unwrap_or("?").to_string();
    if hop > MAX_HOPS {
        return Err(Refused::TooManyHops { host });
    }
    let scheme = url.scheme();
    if scheme != "https" && scheme != api_scheme {
        let (scheme, api) = (scheme.to_string(), api_scheme.to_string());
        return Err(Refused::Scheme { host, scheme, api });
    }
    // The URL parser has already read every spelling of an IPv4 address (decimal, octal,
    // hex, fewer than four parts, a trailing dot) into the address itself.
    let ip = match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(Host::Domain(_)) | None => return Ok(()),
    };
    if forbidden(ip) {
        return Err(Refused::Metadata { host });
    }
    Ok(())
}

/// True for addresses an artifact download must never reach: IPv4 and IPv6 link-local
/// (169.254.0.0/16, where AWS, GCP, Azure and OpenStack serve instance metadata and
/// credentials; fe80::/10), AWS's IPv6 metadata address fd00:ec2::254, Alibaba Cloud's
/// 100.100.100.200, and any of these IPv4 addresses inside an IPv6 one.
pub(crate) fn forbidden(ip: IpAddr) -> bool {
    const AWS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    const ALIBABA: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
    match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4 == ALIBABA,
        IpAddr::V6(v6) => {
            v6 == AWS_V6
                || v6.segments()[0] & 0xffc0 == 0xfe80
                || embedded_ipv4(v6)
                    .iter()
                    .any(|&v4| forbidden(IpAddr::V4(v4)))
        }
    }
}

/// The IPv4 addresses an IPv6 address may carry to an IPv4 host: mapped (`::ffff:a.b.c.d`),
/// compatible (`::a.b.c.d`), translated (`::ffff:0:a.b.c.d`), NAT64 (`64:ff9b::/96` and the
/// local-use `64:ff9b:1::/48`), 6to4 (`2002:AABB:CCDD::/48`) and Teredo (server and client).
fn embedded_ipv4(v6: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = v6.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    let mut found = Vec::new();
    // Mapped and compatible.
    found.extend(v6.to_ipv4());
    match s {
        [0, 0, 0, 0, 0xffff, 0, hi, lo] | [0x64, 0xff9b, _, _, _, _, hi, lo] => {
            found.push(v4(hi, lo));
        }
        [0x2002, hi, lo, ..] => found.push(v4(hi, lo)),
        [0x2001, 0, server_hi, server_lo, _, _, client_hi, client_lo] => {
            found.push(v4(server_hi, server_lo));
            found.push(v4(!client_hi, !client_lo));
        }
        _ => {}
    }
    found
}

/// The first address of `host`'s `addresses` that a download must not reach, as a refusal.
pub(crate) fn check_resolved(host: &str, addresses: &[SocketAddr]) -> Result<(), Refused> {
    match addresses.iter().find(|a| forbidden(a.ip())) {
        Some(a) => Err(Refused::Resolved {
            host: host.to_string(),
            address: a.ip(),
        }),
        None => Ok(()),
    }
}

/// `builder` made into a storage client: every redirect checked with [`check`] before it is
/// followed, and every host name resolved for a direct connection checked with
/// [`check_resolved`]. `api_scheme` is the scheme of Buildkite's API URL.
pub(crate) fn guarded(builder: ClientBuilder, api_scheme: &str) -> ClientBuilder {
    let api = api_scheme.to_string();
    let policy = Policy::custom(move |attempt| {
        // `previous` holds the URLs asked for so far, the first being hop 1.
        let hop = attempt.previous().len() + 1;
        match check(attempt.url(), &api, hop) {
            Ok(()) => attempt.follow(),
            Err(refused) => attempt.error(refused),
        }
    });
    builder
        .redirect(policy)
        .dns_resolver(Arc::new(Resolver::new()))
}

/// The refusal behind a failed storage request, if one of these checks failed it.
pub(crate) fn refusal(e: &reqwest::Error) -> Option<Refused> {
    std::iter::successors(Some(e as &dyn Error), |&e| e.source())
        .find_map(|e| e.downcast_ref::<Refused>())
        .cloned()
}

/// The system's resolver, refusing a storage host that resolves to a forbidden address.
/// The proxies' own names (from `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`) are the only other
/// names a storage client resolves: those are the operator's, and are not checked.
struct Resolver {
    proxies: Vec<String>,
}

impl Resolver {
    fn new() -> Resolver {
        let proxies = ["https_proxy", "http_proxy", "all_proxy"]
            .iter()
            .flat_map(|name| [name.to_string(), name.to_uppercase()])
            .filter_map(|name| std::env::var(name).ok())
            .filter_map(|value| proxy_host(&value))
            .collect();
        Resolver { proxies }
    }
}

/// The host of a proxy variable's value (`http://proxy:3128`, or `proxy:3128` as reqwest
/// also takes it), in lower case.
fn proxy_host(value: &str) -> Option<String> {
    let url = if value.contains("://") {
        Url::parse(value)
    } else {
        Url::parse(&format!("http://{value}"))
    };
    Some(url.ok()?.host_str()?.to_ascii_lowercase())
}

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let checked = !self.proxies.contains(&host);
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await;
            let addresses: Vec<SocketAddr> = found.map_err(Box::new)?.collect();
            if checked {
                check_resolved(&host, &addresses).map_err(Box::new)?;
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::IntoFuture as _;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("a URL")
    }

    #[test]
    fn link_local_and_metadata_literals_are_refused_however_written() {
        for refused in [
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "http://169.254.0.1/",
            "http://169.254.169.254./",
            "http://2852039166/",
            "http://0xa9fea9fe/",
            "http://0251.0376.0251.0376/",
            "http://169.254.43518/",
            "http://0xA9.0xFE.0xA9.0xFE/",
            "http://100.100.100.200/latest/meta-data/",
            "http://[fd00:ec2::254]/latest/meta-data/",
            "http://[FD00:EC2:0:0:0:0:0:254]/",
            "http://[fe80::1]/",
            "http://[febf::1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[::169.254.169.254]/",
            "http://[::ffff:0:169.254.169.254]/",
            "http://[64:ff9b::169.254.169.254]/",
            "http://[64:ff9b:1::a9fe:a9fe]/",
            "http://[2002:a9fe:a9fe::1]/",
            "http://[2001:0:a9fe:a9fe::5601:5601]/",
            "http://[2001:0:4136:e378:8000:63bf:5601:5601]/",
        ] {
            let err = check(&url(refused), "http", 1).expect_err(refused);
            assert!(matches!(err, Refused::Metadata { .. }), "{refused}: {err}");
            assert!(err.to_string().contains("metadata address"), "{err}");
        }
        // The host is named, never the query (a presigned URL's signature).
        let err = check(
            &url("http://169.254.169.254/x?X-Amz-Signature=s3cr3t"),
            "http",
            1,
        );
        let shown = err.expect_err("refused").to_string();
        assert!(
            shown.contains("169.254.169.254") && !shown.contains("s3cr3t"),
            "{shown}"
        );
    }

    #[test]
    fn ordinary_storage_hosts_pass() {
        for allowed in [
            "https://buildkiteartifacts.com.s3.amazonaws.com/a/b?X-Amz-Signature=x",
            "https://storage.googleapis.com/bucket/junit.xml",
            "http://127.0.0.1:9000/minio/junit.xml",
            "http://10.1.2.3/junit.xml",
            "http://[::1]:9000/junit.xml",
            "http://169.253.255.255/",
            "http://169.255.0.1/",
            "http://[fec0::1]/",
            "http://[fd00:ec2::253]/",
            "http://[::ffff:10.0.0.1]/",
            "http://[2002:0a00:0001::1]/",
            "http://metadata.example/",
        ] {
            assert_eq!(check(&url(allowed), "http", 1), Ok(()), "{allowed}");
        }
    }

    #[test]
    fn https_or_the_apis_own_scheme_only() {
        let s3 = url("https://bucket.s3.amazonaws.com/junit.xml");
        let plain = url("http://bucket.s3.amazonaws.com/junit.xml");
        assert_eq!(check(&s3, "https", 1), Ok(()));
        assert_eq!(check(&s3, "http", 1), Ok(()));
        assert_eq!(check(&plain, "http", 1), Ok(()));
        let err = check(&plain, "https", 1).expect_err("downgraded to http");
        assert!(
            err.to_string()
                .contains("http://, neither https:// nor the API's https://"),
            "{err}"
        );
        for other in [
            "ftp://host/junit.xml",
            "file:///etc/passwd",
            "gopher://host/",
        ] {
            let err = check(&url(other), "http", 1).expect_err(other);
            assert!(matches!(err, Refused::Scheme { .. }), "{other}: {err}");
        }
    }

    #[test]
    fn at_most_three_hops() {
        let s3 = url("https://bucket.s3.amazonaws.com/junit.xml");
        for hop in 1..=MAX_HOPS {
            assert_eq!(check(&s3, "https", hop), Ok(()), "hop {hop}");
        }
        let err = check(&s3, "https", MAX_HOPS + 1).expect_err("a fourth hop");
        assert!(err.to_string().contains("more than 3 times"), "{err}");
    }

    #[test]
    fn resolved_addresses_are_checked() {
        let at = |ip: &str| SocketAddr::new(ip.parse().expect("an address"), 0);
        let fine = [at("52.216.1.2"), at("2600:1f18::1")];
        assert_eq!(check_resolved("bucket.s3.amazonaws.com", &fine), Ok(()));
        let rebound = [at("52.216.1.2"), at("169.254.169.254")];
        let err = check_resolved("evil.example", &rebound).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "its storage location evil.example resolves to 169.254.169.254, a link-local or cloud metadata address"
        );
        let err = check_resolved("evil.example", &[at("fd00:ec2::254")]).expect_err("refused");
        assert!(matches!(err, Refused::Resolved { .. }), "{err}");
    }

    #[test]
    fn proxies_are_named_as_reqwest_reads_them() {
        for (value, host) in [
            ("http://Proxy.Corp:3128", "proxy.corp"),
            ("proxy.corp:3128", "proxy.corp"),
            ("socks5h://user:pw@10.0.0.1:1080", "10.0.0.1"),
            ("http://[fd00::3]:3128/", "[fd00::3]"),
        ] {
            assert_eq!(proxy_host(value).as_deref(), Some(host), "{value}");
        }
        assert_eq!(proxy_host(""), None);
    }

    /// A storage host on 127.0.0.1 whose `/hop/N` redirects to `/hop/N-1`, `/hop/0` being the
    /// file, and whose `/metadata` redirects to the instance metadata address.
    async fn redirecting_storage() -> String {
        use axum::extract::Path;
        use axum::response::{IntoResponse, Redirect, Response};
        async fn hop(Path(n): Path<u32>) -> Response {
            match n {
                0 => "<testsuites/>".into_response(),
                n => Redirect::to(&format!("/hop/{}", n - 1)).into_response(),
            }
        }
        let router = axum::Router::new()
            .route("/hop/{n}", axum::routing::get(hop))
            .route(
                "/metadata",
                axum::routing::get(|| async {
                    Redirect::to("http://169.254.169.254/latest/meta-data/")
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(axum::serve(listener, router).into_future());
        format!("http://{addr}")
    }

    /// A proxy on 127.0.0.1 that answers nothing and counts who came: were a check to fail,
    /// the request would end here rather than at the address refused.
    async fn trap() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let came = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&came);
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(conn);
            }
        });
        (format!("http://{addr}"), came)
    }

    #[tokio::test]
    async fn the_client_follows_three_hops_and_refuses_before_connecting() {
        let storage = redirecting_storage().await;
        let (trap, came) = trap().await;
        let timeout = std::time::Duration::from_secs(10);
        let builder = crate::net::client(timeout, timeout, None)
            .expect("builder")
            // Only the refused address would go through this proxy.
            .proxy(
                reqwest::Proxy::all(&trap)
                    .expect("proxy")
                    .no_proxy(reqwest::NoProxy::from_string("127.0.0.1,localhost")),
            );
        let client = guarded(builder, "http").build().expect("client");
        let get = |path: &str| client.get(format!("{storage}{path}")).send();

        // Hop 1 is the location Buildkite gave; /hop/2 takes two more.
        let mut ok = get("/hop/2").await.expect("three hops are fine");
        let body = crate::net::read_capped(&mut ok, 1024).await.expect("body");
        assert_eq!(body, b"<testsuites/>");
        let err = get("/hop/3").await.expect_err("a fourth hop");
        assert!(
            matches!(refusal(&err), Some(Refused::TooManyHops { .. })),
            "{err:?}"
        );
        let err = get("/metadata").await.expect_err("a metadata redirect");
        assert_eq!(
            refusal(&err),
            Some(Refused::Metadata {
                host: "169.254.169.254".into()
            })
        );
        assert_eq!(came.load(std::sync::atomic::Ordering::SeqCst), 0);
        // Names are resolved and checked: loopback is no metadata address.
        let port = storage.rsplit(':').next().expect("a port");
        let named = client.get(format!("http://localhost:{port}/hop/0")).send();
        assert!(named.await.expect("resolved").status().is_success());
    }
}
