//! The webhook's own TLS: a CA and a serving certificate generated with rcgen, kept in one
//! Secret that every replica reads, renewed before expiry, and served through a resolver that
//! swaps certificates without restarting the listener.
//!
//! Secret layout (`kubernetes.io/tls`): `tls.crt`/`tls.key` the serving certificate, `ca.crt`
//! the CA bundle the API server must trust (current CA first, then the previous one while a CA
//! rotation is under way), `ca.key` the current CA's key. Expiry dates and the certificate's
//! names are kept in annotations, so deciding on renewal needs no X.509 parser.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How long a generated CA is valid.
pub const CA_LIFETIME: SignedDuration = SignedDuration::from_hours(24 * 3650);
/// A CA is rotated when less than this is left (the old one stays trusted until it expires).
pub const CA_RENEW_BEFORE: SignedDuration = SignedDuration::from_hours(24 * 365);
/// How long a serving certificate is valid.
pub const CERT_LIFETIME: SignedDuration = SignedDuration::from_hours(24 * 365);
/// A serving certificate is renewed when less than this is left.
pub const CERT_RENEW_BEFORE: SignedDuration = SignedDuration::from_hours(24 * 120);
/// Certificates start an hour in the past, so a node whose clock is a little behind accepts them.
const CLOCK_SKEW: SignedDuration = SignedDuration::from_hours(1);

const KEY_CA_BUNDLE: &str = "ca.crt";
const KEY_CA_KEY: &str = "ca.key";
const KEY_CERT: &str = "tls.crt";
const KEY_KEY: &str = "tls.key";
const ANNOTATION_CA_NAME: &str = "flmon.io/ca-name";
const ANNOTATION_CA_NOT_AFTER: &str = "flmon.io/ca-not-after";
const ANNOTATION_PREVIOUS_CA_NOT_AFTER: &str = "flmon.io/previous-ca-not-after";
const ANNOTATION_CERT_NOT_AFTER: &str = "flmon.io/cert-not-after";
const ANNOTATION_CERT_NAMES: &str = "flmon.io/cert-names";

/// What went wrong with the webhook's certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen could not generate or sign.
    #[error("failed to generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A date is out of range.
    #[error("certificate date out of range: {0}")]
    Date(String),
    /// The Secret lacks a key or holds something unreadable.
    #[error("Secret {secret} is unusable: {problem}")]
    Unusable {
        /// `namespace/name` of the Secret.
        secret: String,
        /// What is wrong.
        problem: String,
    },
    /// rustls rejected the certificate or key.
    #[error("failed to load the serving certificate: {0}")]
    Rustls(#[from] rustls::Error),
    /// The API server refused a read or write.
    #[error("failed to {action} Secret {secret}: {cause}")]
    Kube {
        /// What was attempted.
        action: &'static str,
        /// `namespace/name` of the Secret.
        secret: String,
        /// The API error.
        cause: kube::Error,
    },
    /// Other writers kept winning.
    #[error("Secret {0} kept changing under concurrent writers; giving up for now")]
    Contended(String),
    /// A certificate file (mounted by cert-manager) could not be read.
    #[error("failed to read {path}: {cause}")]
    File {
        /// The file.
        path: String,
        /// The I/O error.
        cause: std::io::Error,
    },
}

/// Names the serving certificate must be valid for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateRequest {
    /// DNS names, e.g. `flmon-webhook.flmon-system.svc`.
    pub dns_names: Vec<String>,
    /// IP addresses (a test server on `127.0.0.1`).
    pub ip_addresses: Vec<IpAddr>,
}

impl CertificateRequest {
    /// The names of Service `service` in `namespace`, as the API server dials it.
    pub fn for_service(service: &str, namespace: &str) -> Self {
        Self {
            dns_names: vec![
                service.to_owned(),
                format!("{service}.{namespace}"),
                format!("{service}.{namespace}.svc"),
                format!("{service}.{namespace}.svc.cluster.local"),
            ],
            ip_addresses: Vec::new(),
        }
    }

    fn names(&self) -> Vec<String> {
        self.dns_names
            .iter()
            .cloned()
            .chain(self.ip_addresses.iter().map(IpAddr::to_string))
            .collect()
    }
}

/// The CA and serving certificate, as kept in the Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsMaterial {
    /// PEM bundle of the CAs the API server must trust (the caBundle).
    pub ca_bundle: String,
    /// PEM of the serving certificate.
    pub cert: String,
    /// PEM of the serving certificate's key.
    pub key: String,
    ca_key: String,
    ca_name: String,
    ca_not_after: Timestamp,
    previous_ca_not_after: Option<Timestamp>,
    cert_not_after: Timestamp,
    cert_names: Vec<String>,
}

/// What a Secret's material needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Nothing.
    Keep,
    /// A new serving certificate from the same CA (close to expiry, names changed, or an expired
    /// previous CA to drop from the bundle).
    Certificate,
    /// A new CA (the old one stays in the bundle until it expires) and serving certificate.
    Ca,
}

fn add(ts: Timestamp, duration: SignedDuration) -> Result<Timestamp, TlsError> {
    ts.checked_add(duration)
        .map_err(|e| TlsError::Date(e.to_string()))
}

fn to_time(ts: Timestamp) -> Result<time::OffsetDateTime, TlsError> {
    time::OffsetDateTime::from_unix_timestamp(ts.as_second()).map_err(|e| TlsError::Date(e.to_string()))
}

fn ca_params(name: &str, not_before: Timestamp, not_after: Timestamp) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "flmon");
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = to_time(not_before)?;
    params.not_after = to_time(not_after)?;
    Ok(params)
}

fn issue_certificate(
    request: &CertificateRequest,
    ca_name: &str,
    ca_key_pem: &str,
    now: Timestamp,
) -> Result<(String, String, Timestamp), TlsError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    // Only the issuer's name, key and key identifier go into a signature: the same parameters
    // rebuilt from the stored name and key sign exactly as the original CA did.
    let issuer = Issuer::new(ca_params(ca_name, now, now)?, ca_key);
    let mut params = CertificateParams::new(request.names())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        request.dns_names.first().map_or("flmon-webhook", String::as_str),
    );
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let not_after = add(now, CERT_LIFETIME)?;
    params.not_before = to_time(add(now, -CLOCK_SKEW)?)?;
    params.not_after = to_time(not_after)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem(), not_after))
}

fn new_ca(now: Timestamp) -> Result<(String, String, String, Timestamp), TlsError> {
    let name = format!("flmon-webhook-ca-{}", now.as_second());
    let not_after = add(now, CA_LIFETIME)?;
    let key = KeyPair::generate()?;
    let cert = ca_params(&name, add(now, -CLOCK_SKEW)?, not_after)?.self_signed(&key)?;
    Ok((name, cert.pem(), key.serialize_pem(), not_after))
}

impl TlsMaterial {
    /// A new CA and a serving certificate for `request`.
    ///
    /// # Errors
    /// [`TlsError::Generate`] if key generation or signing fails.
    pub fn generate(request: &CertificateRequest, now: Timestamp) -> Result<Self, TlsError> {
        let (ca_name, ca_cert, ca_key, ca_not_after) = new_ca(now)?;
        let (cert, key, cert_not_after) = issue_certificate(request, &ca_name, &ca_key, now)?;
        Ok(Self {
            ca_bundle: ca_cert,
            cert,
            key,
            ca_key,
            ca_name,
            ca_not_after,
            previous_ca_not_after: None,
            cert_not_after,
            cert_names: request.names(),
        })
    }

    /// What this material needs at `now` to serve `request`.
    pub fn renewal(&self, request: &CertificateRequest, now: Timestamp) -> Renewal {
        let left = |until: Timestamp| now.duration_until(until);
        if left(self.ca_not_after) < CA_RENEW_BEFORE {
            Renewal::Ca
        } else if left(self.cert_not_after) < CERT_RENEW_BEFORE
            || self.cert_names != request.names()
            || self.previous_ca_not_after.is_some_and(|t| t <= now)
        {
            Renewal::Certificate
        } else {
            Renewal::Keep
        }
    }

    /// The material after `renewal`.
    ///
    /// # Errors
    /// [`TlsError::Generate`] if key generation or signing fails.
    pub fn renewed(
        &self,
        renewal: Renewal,
        request: &CertificateRequest,
        now: Timestamp,
    ) -> Result<Self, TlsError> {
        match renewal {
            Renewal::Keep => Ok(self.clone()),
            Renewal::Certificate => {
                let (cert, key, cert_not_after) =
                    issue_certificate(request, &self.ca_name, &self.ca_key, now)?;
                let previous_alive = self.previous_ca_not_after.filter(|t| *t > now);
                let ca_bundle = if previous_alive.is_some() {
                    self.ca_bundle.clone()
                } else {
                    current_ca_pem(&self.ca_bundle).unwrap_or_else(|| self.ca_bundle.clone())
                };
                Ok(Self {
                    ca_bundle,
                    cert,
                    key,
                    previous_ca_not_after: previous_alive,
                    cert_not_after,
                    cert_names: request.names(),
                    ..self.clone()
                })
            }
            Renewal::Ca => {
                let (ca_name, ca_cert, ca_key, ca_not_after) = new_ca(now)?;
                let (cert, key, cert_not_after) = issue_certificate(request, &ca_name, &ca_key, now)?;
                // The old CA stays trusted until it expires: API servers that have not yet seen
                // the new caBundle keep accepting replicas still serving the old certificate.
                let old = current_ca_pem(&self.ca_bundle).unwrap_or_default();
                Ok(Self {
                    ca_bundle: format!("{ca_cert}{old}"),
                    cert,
                    key,
                    ca_key,
                    ca_name,
                    ca_not_after,
                    previous_ca_not_after: Some(self.ca_not_after),
                    cert_not_after,
                    cert_names: request.names(),
                })
            }
        }
    }

    /// The Secret holding this material.
    pub fn to_secret(&self, namespace: &str, name: &str) -> Secret {
        let mut annotations = std::collections::BTreeMap::from([
            (ANNOTATION_CA_NAME.to_owned(), self.ca_name.clone()),
            (ANNOTATION_CA_NOT_AFTER.to_owned(), self.ca_not_after.to_string()),
            (
                ANNOTATION_CERT_NOT_AFTER.to_owned(),
                self.cert_not_after.to_string(),
            ),
            (ANNOTATION_CERT_NAMES.to_owned(), self.cert_names.join(",")),
        ]);
        if let Some(previous) = self.previous_ca_not_after {
            annotations.insert(ANNOTATION_PREVIOUS_CA_NOT_AFTER.to_owned(), previous.to_string());
        }
        let data = [
            (KEY_CA_BUNDLE, &self.ca_bundle),
            (KEY_CA_KEY, &self.ca_key),
            (KEY_CERT, &self.cert),
            (KEY_KEY, &self.key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect();
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                annotations: Some(annotations),
                labels: Some(std::collections::BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "flmon-operator".to_owned(),
                )])),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".to_owned()),
            data: Some(data),
            ..Default::default()
        }
    }

    /// Reads the material from a Secret written by [`TlsMaterial::to_secret`].
    ///
    /// # Errors
    /// [`TlsError::Unusable`] naming the missing or unreadable key or annotation.
    pub fn from_secret(secret: &Secret) -> Result<Self, TlsError> {
        let id = format!(
            "{}/{}",
            secret.metadata.namespace.as_deref().unwrap_or_default(),
            secret.metadata.name.as_deref().unwrap_or_default()
        );
        let unusable = |problem: String| TlsError::Unusable {
            secret: id.clone(),
            problem,
        };
        let data = |key: &str| {
            let bytes = secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .ok_or_else(|| unusable(format!("data key {key:?} is missing")))?;
            String::from_utf8(bytes.0.clone())
                .map_err(|_| unusable(format!("data key {key:?} is not PEM text")))
        };
        let annotations = secret.metadata.annotations.clone().unwrap_or_default();
        let annotation = |key: &str| {
            annotations
                .get(key)
                .cloned()
                .ok_or_else(|| unusable(format!("annotation {key:?} is missing")))
        };
        let time = |key: &str| -> Result<Timestamp, TlsError> {
            let text = annotation(key)?;
            text.parse::<Timestamp>()
                .map_err(|_| unusable(format!("annotation {key}={text:?} is not an RFC 3339 time")))
        };
        let previous_ca_not_after = match annotations.get(ANNOTATION_PREVIOUS_CA_NOT_AFTER) {
            Some(_) => Some(time(ANNOTATION_PREVIOUS_CA_NOT_AFTER)?),
            None => None,
        };
        let material = Self {
            ca_bundle: data(KEY_CA_BUNDLE)?,
            cert: data(KEY_CERT)?,
            key: data(KEY_KEY)?,
            ca_key: data(KEY_CA_KEY)?,
            ca_name: annotation(ANNOTATION_CA_NAME)?,
            ca_not_after: time(ANNOTATION_CA_NOT_AFTER)?,
            previous_ca_not_after,
            cert_not_after: time(ANNOTATION_CERT_NOT_AFTER)?,
            cert_names: annotation(ANNOTATION_CERT_NAMES)?
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        material.certified_key().map_err(|e| unusable(e.to_string()))?;
        Ok(material)
    }

    /// The serving certificate and key, loaded for rustls.
    ///
    /// # Errors
    /// [`TlsError::Rustls`] if the PEM does not hold a certificate and a matching key.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        certified_key(&self.cert, &self.key)
    }
}

/// A certificate chain and key in PEM, loaded for rustls.
fn certified_key(cert: &str, key: &str) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| rustls::Error::General(format!("tls.crt: {e}")))?;
    if chain.is_empty() {
        return Err(rustls::Error::General("tls.crt holds no certificate".to_owned()).into());
    }
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| rustls::Error::General(format!("tls.key: {e}")))?;
    Ok(Arc::new(CertifiedKey::from_der(chain, key, &crypto_provider())?))
}

/// `tls.crt` and `tls.key` of `dir` (a Secret cert-manager keeps, mounted into the pod).
fn read_files(dir: &Path) -> Result<(String, String), TlsError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|cause| TlsError::File {
            path: path.display().to_string(),
            cause,
        })
    };
    Ok((read(KEY_CERT)?, read(KEY_KEY)?))
}

fn current_ca_pem(bundle: &str) -> Option<String> {
    const END: &str = "-----END CERTIFICATE-----";
    bundle
        .find(END)
        .map(|i| format!("{}\n", &bundle[..i + END.len()]))
}

/// The ring provider (the one kube's client uses), so no process-wide default has to be set.
pub fn crypto_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Makes sure Secret `namespace/name` holds usable, current material for `request`, creating
/// or renewing it, and returns what it holds.
///
/// Replicas race safely: a create that finds the Secret already there, or an update that finds
/// it changed, re-reads it and uses the winner's material, so two replicas never make two CAs.
///
/// # Errors
/// [`TlsError::Kube`] when the API server refuses; [`TlsError::Contended`] after repeated
/// conflicts.
pub async fn ensure_secret(
    client: kube::Client,
    namespace: &str,
    name: &str,
    request: &CertificateRequest,
) -> Result<TlsMaterial, TlsError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let id = format!("{namespace}/{name}");
    let kube_error = |action, cause| TlsError::Kube {
        action,
        secret: id.clone(),
        cause,
    };
    for _ in 0..5 {
        let now = Timestamp::now();
        let existing = api.get_opt(name).await.map_err(|e| kube_error("read", e))?;
        let Some(existing) = existing else {
            let material = TlsMaterial::generate(request, now)?;
            match api
                .create(&PostParams::default(), &material.to_secret(namespace, name))
                .await
            {
                Ok(_) => {
                    tracing::info!(secret = %id, "created the webhook's CA and serving certificate");
                    return Ok(material);
                }
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => return Err(kube_error("create", e)),
            }
        };
        let (material, renewal) = match TlsMaterial::from_secret(&existing) {
            Ok(material) => {
                let renewal = material.renewal(request, now);
                (Some(material), renewal)
            }
            Err(problem) => {
                tracing::warn!(%problem, "replacing the webhook's certificate Secret");
                (None, Renewal::Ca)
            }
        };
        let next = match (&material, renewal) {
            (Some(material), Renewal::Keep) => return Ok(material.clone()),
            (Some(material), renewal) => material.renewed(renewal, request, now)?,
            (None, _) => TlsMaterial::generate(request, now)?,
        };
        let mut secret = next.to_secret(namespace, name);
        secret.metadata.resource_version = existing.metadata.resource_version.clone();
        match api.replace(name, &PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(secret = %id, ?renewal, "renewed the webhook's certificate");
                return Ok(next);
            }
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(kube_error("update", e)),
        }
    }
    Err(TlsError::Contended(id))
}

/// The certificate the webhook serves; swapped in place when the Secret changes.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// A store serving `material`.
    ///
    /// # Errors
    /// As [`TlsMaterial::certified_key`].
    pub fn new(material: &TlsMaterial) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            current: RwLock::new(material.certified_key()?),
        }))
    }

    /// A store serving `tls.crt`/`tls.key` of `dir` (cert-manager mode).
    ///
    /// # Errors
    /// [`TlsError::File`] when a file is missing; as [`TlsMaterial::certified_key`] otherwise.
    pub fn from_files(dir: &Path) -> Result<Arc<Self>, TlsError> {
        let (cert, key) = read_files(dir)?;
        Ok(Arc::new(Self {
            current: RwLock::new(certified_key(&cert, &key)?),
        }))
    }

    fn replace_key(&self, key: Arc<CertifiedKey>) {
        if let Ok(mut current) = self.current.write() {
            *current = key;
        }
    }

    /// Serves `material` from the next handshake on.
    ///
    /// # Errors
    /// As [`TlsMaterial::certified_key`]; the old certificate stays in use.
    pub fn replace(&self, material: &TlsMaterial) -> Result<(), TlsError> {
        self.replace_key(material.certified_key()?);
        Ok(())
    }

    /// A rustls server configuration resolving through this store, offering HTTP/2 and 1.1.
    ///
    /// # Errors
    /// [`TlsError::Rustls`] if the provider supports no safe protocol version.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(crypto_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|key| key.clone())
    }
}

/// Keeps `store` serving the Secret's current certificate, renewing it when due; returns only
/// on cancellation. Errors are logged and retried at the next tick.
pub async fn keep_fresh(
    client: kube::Client,
    namespace: String,
    name: String,
    request: CertificateRequest,
    store: Arc<CertStore>,
    every: std::time::Duration,
) {
    let mut last_cert = None;
    loop {
        match ensure_secret(client.clone(), &namespace, &name, &request).await {
            Ok(material) => {
                if last_cert.as_ref() != Some(&material.cert) {
                    if let Err(error) = store.replace(&material) {
                        tracing::warn!(%error, "keeping the previous serving certificate");
                    }
                    last_cert = Some(material.cert.clone());
                }
            }
            Err(error) => tracing::warn!(%error, "failed to refresh the webhook certificate"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Keeps `store` serving the files of `dir` as cert-manager renews them; returns only on
/// cancellation. A half-written or unreadable pair is logged and the previous one kept.
pub async fn keep_files_fresh(dir: PathBuf, store: Arc<CertStore>, every: std::time::Duration) {
    let mut last = read_files(&dir).ok();
    loop {
        tokio::time::sleep(every).await;
        match read_files(&dir) {
            Ok(pair) if last.as_ref() != Some(&pair) => match certified_key(&pair.0, &pair.1) {
                Ok(key) => {
                    store.replace_key(key);
                    tracing::info!(dir = %dir.display(), "loaded the renewed webhook certificate");
                    last = Some(pair);
                }
                Err(error) => tracing::warn!(%error, "keeping the previous serving certificate"),
            },
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "keeping the previous serving certificate"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> CertificateRequest {
        CertificateRequest {
            dns_names: vec!["flmon-webhook.flmon-system.svc".to_owned()],
            ip_addresses: vec!["127.0.0.1".parse().expect("ip")],
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn generated_material_round_trips_through_its_secret() {
        let material = TlsMaterial::generate(&request(), at("2026-01-01T00:00:00Z")).expect("generate");
        let secret = material.to_secret("flmon-system", "flmon-webhook-tls");
        assert_eq!(TlsMaterial::from_secret(&secret).expect("readable"), material);
        assert!(material.ca_bundle.starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn renewal_is_due_before_expiry_and_when_names_change() {
        let now = at("2026-01-01T00:00:00Z");
        let material = TlsMaterial::generate(&request(), now).expect("generate");
        assert_eq!(material.renewal(&request(), now), Renewal::Keep);
        assert_eq!(
            material.renewal(&request(), at("2026-10-01T00:00:00Z")),
            Renewal::Certificate
        );
        let mut other = request();
        other
            .dns_names
            .push("flmon-webhook.flmon-system.svc.cluster.local".to_owned());
        assert_eq!(material.renewal(&other, now), Renewal::Certificate);
        assert_eq!(
            material.renewal(&request(), at("2035-06-01T00:00:00Z")),
            Renewal::Ca
        );
    }

    #[test]
    fn ca_rotation_keeps_the_old_ca_trusted_until_it_expires() {
        let start = at("2026-01-01T00:00:00Z");
        let first = TlsMaterial::generate(&request(), start).expect("generate");
        let rotated = first
            .renewed(Renewal::Ca, &request(), at("2035-06-01T00:00:00Z"))
            .expect("rotate");
        assert_eq!(rotated.ca_bundle.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(rotated.ca_bundle.ends_with(&first.ca_bundle));
        // After the old CA expired, the next certificate renewal drops it from the bundle.
        let later = at("2036-02-01T00:00:00Z");
        assert_eq!(rotated.renewal(&request(), later), Renewal::Certificate);
        let pruned = rotated
            .renewed(Renewal::Certificate, &request(), later)
            .expect("renew");
        assert_eq!(pruned.ca_bundle.matches("BEGIN CERTIFICATE").count(), 1);
        assert!(rotated.ca_bundle.starts_with(&pruned.ca_bundle));
    }

    #[test]
    fn certificate_files_load_and_a_missing_one_is_named() {
        let material = TlsMaterial::generate(&request(), Timestamp::now()).expect("generate");
        let dir = std::env::temp_dir().join(format!("flmon-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("tls.crt"), &material.cert).expect("write");
        let error = CertStore::from_files(&dir).expect_err("tls.key is missing");
        assert!(error.to_string().contains("tls.key"), "{error}");
        std::fs::write(dir.join("tls.key"), &material.key).expect("write");
        assert!(CertStore::from_files(&dir).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_secret_missing_a_key_is_reported_by_name() {
        let material = TlsMaterial::generate(&request(), at("2026-01-01T00:00:00Z")).expect("generate");
        let mut secret = material.to_secret("flmon-system", "flmon-webhook-tls");
        secret.data.as_mut().expect("data").remove("ca.key");
        let error = TlsMaterial::from_secret(&secret).expect_err("unusable");
        assert!(error.to_string().contains("\"ca.key\""), "{error}");
        assert!(
            error.to_string().contains("flmon-system/flmon-webhook-tls"),
            "{error}"
        );
    }
}
