//! Admin mTLS: an internal service authenticates with a client certificate issued by the
//! operator's admin CA instead of a bearer token. The TLS acceptor verifies the chain and
//! puts the peer certificates into the request (tonic's `TlsConnectInfo`); here the
//! leaf's subject common name is mapped to a scope by `TOLLGATE_ADMIN_CERT_SCOPES`
//! (`billing-svc=keys,reporting=read`). A certificate whose CN is not mapped grants nothing.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use tollgate_shared::domain::AdminScope;
use tonic::transport::CertificateDer;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use x509_parser::prelude::{FromDer, X509Certificate};

/// `CN → scope` for admin client certificates. Empty: certificates grant nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertScopes(BTreeMap<String, AdminScope>);

impl CertScopes {
    pub fn scope_of(&self, common_name: &str) -> Option<AdminScope> {
        self.0.get(common_name).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for CertScopes {
    type Err = String;

    /// `cn=scope` pairs separated by commas; blanks ignored; a CN given twice is an error.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut map = BTreeMap::new();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (cn, scope) = pair
                .split_once('=')
                .ok_or_else(|| format!("expected CN=SCOPE, got {pair:?}"))?;
            let cn = cn.trim();
            if cn.is_empty() {
                return Err(format!("empty common name in {pair:?}"));
            }
            let scope: AdminScope = scope.trim().parse().map_err(|e| format!("{e}"))?;
            if map.insert(cn.to_owned(), scope).is_some() {
                return Err(format!("common name {cn:?} is mapped twice"));
            }
        }
        Ok(Self(map))
    }
}

/// The peer's certificate chain (leaf first) of a TLS connection, when the client sent one.
pub fn peer_certs(extensions: &http::Extensions) -> Option<Arc<Vec<CertificateDer<'static>>>> {
    extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
}

/// The subject common name of a DER certificate (the first CN when there are several).
pub fn subject_cn(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_mapping() {
        let m: CertScopes = " billing-svc=keys, reporting = read ,".parse().unwrap();
        assert_eq!(m.scope_of("billing-svc"), Some(AdminScope::Keys));
        assert_eq!(m.scope_of("reporting"), Some(AdminScope::Read));
        assert_eq!(m.scope_of("other"), None);
        assert!("".parse::<CertScopes>().unwrap().is_empty());
        for bad in ["billing", "=read", "a=owner", "a=read,a=keys"] {
            assert!(bad.parse::<CertScopes>().is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_the_subject_common_name() {
        let mut params = rcgen::CertificateParams::new(vec!["billing.internal".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "billing-svc");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(subject_cn(cert.der()).as_deref(), Some("billing-svc"));
        assert_eq!(subject_cn(b"not a certificate"), None);
    }

    #[test]
    fn no_tls_means_no_certificate() {
        assert!(peer_certs(&http::Extensions::new()).is_none());
    }
}
