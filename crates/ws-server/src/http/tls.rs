//! TLS for the listener (rustls through tokio-rustls, with the ring
//! provider): the certificate chain and key come from PEM files. HTTP/2 is
//! offered by ALPN before HTTP/1.1; a client that names neither gets HTTP/1.1.

use std::io::{Error, ErrorKind};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The ALPN name of HTTP/2 over TLS.
pub(super) const H2: &[u8] = b"h2";

/// The settings of a server that presents the chain in `cert` with the key in `key`.
pub(super) fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, Error> {
    let invalid = |path: &Path, e: &dyn std::fmt::Display| {
        Error::new(ErrorKind::InvalidInput, format!("{}: {e}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(cert, &e))?;
    if chain.is_empty() {
        return Err(invalid(cert, &"no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(key, &e))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key_der))
        .map_err(|e| invalid(key, &e))?;
    config.alpn_protocols = vec![H2.to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
