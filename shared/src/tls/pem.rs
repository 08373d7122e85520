//! PEM parsing of certificate chains, CA bundles and private keys (from bytes, so that a
//! reload compares and parses the very same contents).

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// Every certificate of a PEM file (a chain: leaf first).
pub fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{what}: not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{what}: no certificate in the file")));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1). The error never quotes it.
pub fn private_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|_| TlsError(format!("{what}: no PEM private key in the file")))
}

/// A root store of every certificate of a CA bundle.
pub fn roots(pem: &[u8], what: &str) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certs(pem, what)? {
        store
            .add(cert)
            .map_err(|e| TlsError(format!("{what}: unusable CA certificate ({e})")))?;
    }
    Ok(store)
}
