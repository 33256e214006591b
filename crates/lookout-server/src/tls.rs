//! TLS for client connections, from PEM files.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Accepts TLS with the certificate chain and private key in these PEM files.
pub fn tls_acceptor(cert: &Path, key: &Path) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    let invalid = |what: &Path, e: &dyn std::fmt::Display| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: {e}", what.display()),
        )
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| invalid(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(cert, &e))?;
    if certs.is_empty() {
        return Err(invalid(cert, &"no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(key, &e))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(cert, &e))?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)
    .map_err(|e| invalid(key, &e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The `tls-server-end-point` channel binding data of the certificate chain
/// in this PEM file (RFC 5929): the hash of the first (the server's)
/// certificate with the hash function of its signature, SHA-256 for MD5 and
/// SHA-1. `None` for a signature without such a hash (Ed25519, RSA-PSS),
/// for which PostgreSQL does not offer channel binding either.
pub fn tls_server_end_point(cert: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let first = CertificateDer::pem_file_iter(cert)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?
        .next()
        .transpose()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let Some(first) = first else {
        return Ok(None);
    };
    let algorithm = match signature_algorithm(first.as_ref()) {
        Some(oid) => hash_of_signature(oid),
        None => None,
    };
    Ok(algorithm.map(|a| ring::digest::digest(a, first.as_ref()).as_ref().to_vec()))
}

/// One DER element: its tag, its contents and what follows it.
fn der_element(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The OID of a certificate's `signatureAlgorithm` (X.509: SEQUENCE {
/// tbsCertificate, signatureAlgorithm SEQUENCE { OID, .. }, signature }).
fn signature_algorithm(certificate: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (SEQUENCE, body, _) = der_element(certificate)? else {
        return None;
    };
    let (SEQUENCE, _, rest) = der_element(body)? else {
        return None;
    };
    let (SEQUENCE, algorithm, _) = der_element(rest)? else {
        return None;
    };
    match der_element(algorithm)? {
        (OID, oid, _) => Some(oid),
        _ => None,
    }
}

/// RFC 5929's hash for a signature algorithm OID (its DER contents).
fn hash_of_signature(oid: &[u8]) -> Option<&'static ring::digest::Algorithm> {
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    use ring::digest::{SHA256, SHA384, SHA512};
    if let Some(last) = oid.strip_prefix(RSA) {
        return match last {
            // md5, sha1, sha256 WithRSAEncryption
            [0x04] | [0x05] | [0x0b] => Some(&SHA256),
            [0x0c] => Some(&SHA384),
            [0x0d] => Some(&SHA512),
            _ => None,
        };
    }
    match oid.strip_prefix(ECDSA)? {
        // ecdsa-with-SHA1, -SHA256
        [0x01] | [0x03, 0x02] => Some(&SHA256),
        [0x03, 0x03] => Some(&SHA384),
        [0x03, 0x04] => Some(&SHA512),
        _ => None,
    }
}
