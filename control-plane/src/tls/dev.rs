//! Development mode's own PKI: a local CA, a server certificate for the control plane and
//! a client certificate for data planes, written once into `<data dir>/tls/` (files 0600)
//! and reused by later starts, so the one-command start needs no certificate work.
//! Production never comes here: it requires the operator's files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::error::{Error, Result};

/// Sub-directory of the data dir holding the generated files.
pub const DIR: &str = "tls";
/// The CA data planes trust for the control plane (and the control plane for them).
pub const CA_CERT: &str = "ca.crt";
pub const SERVER_CERT: &str = "server.crt";
pub const SERVER_KEY: &str = "server.key";
/// The data planes' client certificate and key.
pub const DATA_PLANE_CERT: &str = "data-plane.crt";
pub const DATA_PLANE_KEY: &str = "data-plane.key";

const FILES: [&str; 5] = [
    CA_CERT,
    SERVER_CERT,
    SERVER_KEY,
    DATA_PLANE_CERT,
    DATA_PLANE_KEY,
];

/// A generated PKI in PEM. The CA key is not kept: nothing is issued after generation.
pub struct DevPki {
    pub ca_cert: String,
    pub server_cert: String,
    pub server_key: String,
    pub data_plane_cert: String,
    pub data_plane_key: String,
}

impl std::fmt::Debug for DevPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevPki").finish_non_exhaustive()
    }
}

impl DevPki {
    /// A fresh CA and leaves; the server certificate names `localhost`, `127.0.0.1`,
    /// `::1` and `extra_names`.
    pub fn generate(extra_names: &[String]) -> Result<Self> {
        let ca_key = KeyPair::generate().map_err(pki_error)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(pki_error)?;
        ca.distinguished_name
            .push(DnType::CommonName, "Tollgate development CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut ca);
        let ca = CertifiedIssuer::self_signed(ca, ca_key).map_err(pki_error)?;

        let mut names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        names.extend(extra_names.iter().cloned());
        let (server_cert, server_key) = leaf(
            &ca,
            names,
            "tollgate-control-plane",
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let (data_plane_cert, data_plane_key) = leaf(
            &ca,
            Vec::new(),
            "tollgate-data-plane",
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        Ok(Self {
            ca_cert: ca.pem(),
            server_cert,
            server_key,
            data_plane_cert,
            data_plane_key,
        })
    }

    /// Writes the five files into `dir` (created), each 0600.
    pub fn write(&self, dir: &Path) -> Result<()> {
        tollgate_shared::private_dir::create(dir)
            .map_err(|e| Error::Config(format!("cannot create {}: {e}", dir.display())))?;
        let contents = [
            &self.ca_cert,
            &self.server_cert,
            &self.server_key,
            &self.data_plane_cert,
            &self.data_plane_key,
        ];
        for (name, text) in FILES.iter().zip(contents) {
            write_private(&dir.join(name), text)?;
        }
        Ok(())
    }
}

/// Paths of the development PKI in `data_dir`, generating it on the first start (or
/// again if a file went missing).
pub fn ensure(data_dir: &Path, extra_names: &[String]) -> Result<DevPaths> {
    let dir = data_dir.join(DIR);
    let paths = DevPaths::in_dir(&dir);
    if FILES.iter().all(|f| dir.join(f).is_file()) {
        return Ok(paths);
    }
    DevPki::generate(extra_names)?.write(&dir)?;
    tracing::info!(dir = %dir.display(), "generated a development CA and certificates");
    Ok(paths)
}

#[derive(Debug, Clone)]
pub struct DevPaths {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub data_plane_cert: PathBuf,
    pub data_plane_key: PathBuf,
}

impl DevPaths {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join(CA_CERT),
            server_cert: dir.join(SERVER_CERT),
            server_key: dir.join(SERVER_KEY),
            data_plane_cert: dir.join(DATA_PLANE_CERT),
            data_plane_key: dir.join(DATA_PLANE_KEY),
        }
    }
}

fn leaf(
    ca: &CertifiedIssuer<'_, KeyPair>,
    names: Vec<String>,
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String)> {
    let key = KeyPair::generate().map_err(pki_error)?;
    let mut params = CertificateParams::new(names).map_err(pki_error)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    set_validity(&mut params);
    let cert = params.signed_by(&key, ca).map_err(pki_error)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn set_validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
}

fn pki_error(e: rcgen::Error) -> Error {
    Error::Config(format!("cannot generate development certificates: {e}"))
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| Error::Config(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(|e| Error::Config(format!("cannot write {}: {e}", path.display())))
}
