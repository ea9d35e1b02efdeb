//! A local CA and the certificates it issues to each role, for `souq up`, `souq certs` and
//! the tests. Keys are ECDSA P-256, made once and kept: a renewed certificate keeps its
//! key, and so a node keeps the identity the control plane pinned.
use std::{
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};

use super::{Role, Transport};

/// The CA's subject; a CA that `souq` made is found again by it and its key.
const CA_NAME: &str = "Souq internal CA";
/// How long the CA is valid, in days.
const CA_DAYS: u32 = 3650;
/// Longest validity of an issued certificate, in days.
pub const MAX_DAYS: u32 = 3650;

/// Where a role's certificate, key and CA are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PEM, mode 0600).
    pub key: PathBuf,
    /// The CA's certificate (PEM).
    pub ca: PathBuf,
}

impl TlsFiles {
    /// Loads and checks the files (see [`Transport::load`]).
    pub fn load(&self) -> Result<Transport, String> {
        Transport::load(&self.cert, &self.key, &self.ca)
    }
}

/// A CA kept in a directory as `ca.pem` and `ca.key`, and the certificates it issues
/// there as `<name>.pem` and `<name>.key`.
pub struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// The proleptic Gregorian date of a day counted from 1970-01-01.
fn civil(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (i32::try_from(year).unwrap_or(i32::MAX), u8::try_from(month).unwrap_or(1), u8::try_from(day).unwrap_or(1))
}

/// Valid from yesterday (clocks drift) for `days` days.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let today = i64::try_from(now.as_secs() / 86_400).unwrap_or(0);
    let date = |d: i64| {
        let (y, m, day) = civil(d);
        rcgen::date_time_ymd(y, m, day)
    };
    params.not_before = date(today - 1);
    params.not_after = date(today + i64::from(days));
    params.serial_number = Some(SerialNumber::from_slice(&now.as_nanos().to_be_bytes()));
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

/// Writes `data` to `path`, readable by the owner only when `secret`; fails if the file
/// exists, so nothing is ever overwritten by accident.
fn write_new(path: &Path, data: &str, secret: bool) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(data.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

/// Replaces `path` with `data` (a certificate: public).
fn replace(path: &Path, data: &str) -> Result<(), String> {
    let tmp = path.with_extension("pem.new");
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, data, false)?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_key(path: &Path) -> Result<KeyPair, String> {
    let pem = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    KeyPair::from_pem(&pem).map_err(|_| format!("{}: not a PEM private key", path.display()))
}

/// The key at `path`, made (mode 0600) if there is none.
fn key_at(path: &Path) -> Result<KeyPair, String> {
    if path.exists() {
        return read_key(path);
    }
    let key = KeyPair::generate().map_err(|e| format!("key generation: {e}"))?;
    write_new(path, &key.serialize_pem(), true)?;
    Ok(key)
}

impl Pki {
    /// The CA in `dir` (made with mode 0700), created on first use: `ca.pem` and
    /// `ca.key` (0600). Only a CA made by Souq can be opened again.
    pub fn open_or_create(dir: &Path) -> Result<Pki, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        let fresh = !cert_path.exists();
        if fresh && key_path.exists() {
            return Err(format!("{}: a CA key without its certificate", key_path.display()));
        }
        let key = key_at(&key_path)?;
        let mut params = ca_params();
        if fresh {
            validity(&mut params, CA_DAYS);
            let cert = params.self_signed(&key).map_err(|e| format!("CA certificate: {e}"))?;
            write_new(&cert_path, &cert.pem(), false)?;
        }
        Ok(Pki { dir: dir.to_owned(), issuer: Issuer::new(params, key) })
    }

    /// The CA's certificate file.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues a certificate for `role`, valid `days` days, as `<name>.pem` with the key
    /// `<name>.key` (kept if it exists, else made with mode 0600), and checks that it
    /// loads. `name` is a file name: `[A-Za-z0-9._-]`, no leading dot.
    pub fn issue(&self, role: Role, name: &str, days: u32) -> Result<TlsFiles, String> {
        let name_ok = !name.is_empty()
            && name.len() <= 128
            && !name.starts_with('.')
            && name != "ca"
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !name_ok {
            return Err("the name must be 1 to 128 characters of [A-Za-z0-9._-], not starting with a dot, not `ca`".into());
        }
        if !(1..=MAX_DAYS).contains(&days) {
            return Err(format!("the validity must be 1 to {MAX_DAYS} days"));
        }
        let files = TlsFiles {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
            ca: self.ca_path(),
        };
        let key = key_at(&files.key)?;
        let mut params =
            CertificateParams::new(vec![role.dns_name()]).map_err(|e| format!("certificate: {e}"))?;
        params.distinguished_name.push(DnType::CommonName, format!("{name} ({role})"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Every role is a client; the control plane and the agents serve as well.
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, days);
        let cert = params.signed_by(&key, &self.issuer).map_err(|e| format!("certificate: {e}"))?;
        replace(&files.cert, &cert.pem())?;
        // A CA file that is not the one whose key signed (say, replaced by hand) shows here.
        files.load().map_err(|e| format!("the issued certificate does not load ({e}): is {} the CA of its key?", files.ca.display()))?;
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_723), (2024, 1, 1));
        assert_eq!(civil(19_782), (2024, 2, 29));
    }

    #[test]
    fn a_ca_issues_certificates_that_load_with_their_role_and_keep_their_key() {
        let dir = std::env::temp_dir().join(format!("souq-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pki = Pki::open_or_create(&dir).expect("ca");
        let mode = |p: &Path| std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).expect("meta").permissions()) & 0o777;
        assert_eq!(mode(&dir.join("ca.key")), 0o600);
        let edge = pki.issue(Role::Edge, "edge", 30).expect("edge");
        assert_eq!(mode(&edge.key), 0o600);
        assert_eq!(edge.load().expect("loads").role(), Some(Role::Edge));
        let key = std::fs::read(&edge.key).expect("key");
        // Opened again, the same CA renews the certificate with the same key.
        let again = Pki::open_or_create(&dir).expect("ca again");
        let renewed = again.issue(Role::Edge, "edge", 30).expect("renewed");
        assert_eq!(std::fs::read(&renewed.key).expect("key"), key);
        assert_eq!(renewed.load().expect("loads").role(), Some(Role::Edge));
        // Another CA's certificate does not load under this CA.
        let other = Pki::open_or_create(&dir.join("other")).expect("other ca");
        let agent = other.issue(Role::Agent, "agent", 30).expect("agent");
        assert!(Transport::load(&agent.cert, &agent.key, &edge.ca).is_err());
        assert!(Transport::load(&edge.cert, &agent.key, &edge.ca).is_err(), "a key that is not the certificate's");
        assert!(pki.issue(Role::Edge, "../x", 30).is_err());
        assert!(pki.issue(Role::Edge, "ca", 30).is_err());
        assert!(pki.issue(Role::Edge, "e", 0).is_err());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
