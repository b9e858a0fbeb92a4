//! TLS to the upstream on the lean path: one client configuration per route (the system roots
//! plus the route's `ca_file`, ALPN `http/1.1` only, a session store of its own, see
//! [`super::tickets`]), the handshake, and the stream the lean path and its pool hold, plain TCP
//! or TLS over it.
//!
//! A configuration, and so a session cache, belongs to one route's target: a session or a
//! connection verified under one set of trust roots never serves another route.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, HandshakeKind, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tracing::warn;

use super::tickets::RouteSessions;
use crate::config::CaFile;

/// How the lean path speaks TLS to one route's upstream.
pub struct LeanTls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

/// How a handshake went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    Full,
    Resumed,
}

impl LeanTls {
    /// The configuration for `host` (the SNI and the name the certificate must carry), trusting
    /// the system roots and `ca`. `None` when `host` is not a name TLS can verify (the route then
    /// stays on pingora's path).
    pub fn new(host: &str, ca: Option<&CaFile>) -> Option<Self> {
        let server_name = ServerName::try_from(host.to_string()).ok()?;
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(system_roots().iter().cloned());
        if let Some(ca) = ca {
            roots.add_parsable_certificates(ca.certs.iter().cloned());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // The lean path speaks HTTP/1.1 only; h2 upstreams are pingora's (see `crate::upstream`).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = Resumption::store(Arc::new(RouteSessions::new(server_name.clone())));
        Some(LeanTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// Runs the TLS handshake over `tcp`.
    pub async fn handshake(&self, tcp: TcpStream) -> io::Result<(UpStream, Handshake)> {
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await?;
        let kind = match tls.get_ref().1.handshake_kind() {
            Some(HandshakeKind::Resumed) => Handshake::Resumed,
            _ => Handshake::Full,
        };
        Ok((UpStream::Tls(Box::new(tls)), kind))
    }
}

/// The system's trust roots, loaded once (as pingora does): rustls-native-certs, which honours
/// `SSL_CERT_FILE` and `SSL_CERT_DIR`.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| match pingora::tls::load_native_certs() {
        Ok(certs) => certs,
        Err(e) => {
            warn!(error = %e, "cannot load the system trust roots; trusting only each route's ca_file");
            Vec::new()
        }
    })
}

/// A connection to an upstream: plain, or TLS (boxed: a TLS session is large, and pooled
/// connections move).
pub enum UpStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl UpStream {
    /// Whether an idle connection can carry another request: nothing to read on it (a byte, an
    /// EOF or an error means the upstream closed it or broke the protocol) and, for TLS, no
    /// close_notify and no unread data already taken in by the TLS session. A readiness check,
    /// not a system call, when nothing arrived.
    pub fn idle_and_open(&mut self) -> bool {
        let tcp = match self {
            UpStream::Plain(s) => &*s,
            UpStream::Tls(s) => {
                let (tcp, session) = s.get_mut();
                match session.process_new_packets() {
                    Ok(io) if !io.peer_has_closed() && io.plaintext_bytes_to_read() == 0 => {}
                    _ => return false,
                }
                &*tcp
            }
        };
        let mut byte = [0u8; 1];
        matches!(tcp.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

impl AsyncRead for UpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
