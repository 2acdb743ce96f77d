//! A minimal Kafka protocol client for what librdkafka has no API for:
//! creating and listing ACLs. It speaks the same security settings as
//! every other client ([`Kafka`]): plaintext or TLS (CA from
//! `ssl.ca.location`, else the system roots; the broker's name is always
//! verified), then SASL PLAIN or SCRAM as `security.protocol` and
//! `sasl.mechanism` say. Requests and responses are encoded by the
//! `kafka-protocol` crate; versions are negotiated with ApiVersions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::{
    ApiVersionsRequest, CreateAclsRequest, DescribeAclsRequest, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::acl::Binding;
use crate::kafka::Kafka;
use crate::scram;

const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest response accepted: ACL listings of a big cluster stay far below.
const MAX_RESPONSE: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("unsupported setting {0}={1}")]
    Unsupported(&'static str, String),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("broker error {code}: {message}")]
    Broker { code: i16, message: String },
}

/// Kafka's SECURITY_DISABLED: the cluster has no authorizer.
pub const SECURITY_DISABLED: i16 = 54;

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    async fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Plain(s) => s.write_all(b).await,
            Self::Tls(s) => {
                s.write_all(b).await?;
                s.flush().await
            }
        }
    }

    async fn read_exact(&mut self, b: &mut [u8]) -> std::io::Result<()> {
        match self {
            Self::Plain(s) => s.read_exact(b).await.map(|_| ()),
            Self::Tls(s) => s.read_exact(b).await.map(|_| ()),
        }
    }
}

/// One authenticated connection to a broker.
pub struct Connection {
    stream: Stream,
    correlation: i32,
    versions: HashMap<i16, (i16, i16)>,
}

fn protocol_err(e: impl std::fmt::Display) -> WireError {
    WireError::Protocol(e.to_string())
}

impl Connection {
    /// Connects to the first reachable bootstrap server and authenticates.
    pub async fn open(kafka: &Kafka) -> Result<Self, WireError> {
        let protocol = kafka
            .get("security.protocol")
            .unwrap_or("plaintext")
            .to_ascii_lowercase();
        let (tls, sasl) = match protocol.as_str() {
            "plaintext" => (false, false),
            "ssl" => (true, false),
            "sasl_plaintext" => (false, true),
            "sasl_ssl" => (true, true),
            _ => return Err(WireError::Unsupported("security.protocol", protocol)),
        };
        let mut last = WireError::Connect(kafka.brokers().into(), "no bootstrap server".into());
        for addr in kafka
            .brokers()
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match Self::open_one(kafka, addr, tls, sasl).await {
                Ok(c) => return Ok(c),
                Err(e @ WireError::Auth(_)) => return Err(e),
                Err(e) => last = WireError::Connect(addr.into(), e.to_string()),
            }
        }
        Err(last)
    }

    async fn open_one(kafka: &Kafka, addr: &str, tls: bool, sasl: bool) -> Result<Self, WireError> {
        let tcp = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| WireError::Timeout)??;
        tcp.set_nodelay(true)?;
        let stream = if tls {
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| WireError::Connect(addr.into(), e.to_string()))?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(kafka)?));
            let s = tokio::time::timeout(IO_TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(|_| WireError::Timeout)??;
            Stream::Tls(Box::new(s))
        } else {
            Stream::Plain(tcp)
        };
        let mut c = Self {
            stream,
            correlation: 0,
            versions: HashMap::new(),
        };
        let v = c
            .call(
                &ApiVersionsRequest::default()
                    .with_client_software_name(StrBytes::from_static_str("licensing"))
                    .with_client_software_version(StrBytes::from_static_str("1")),
                3,
            )
            .await?;
        if v.error_code != 0 {
            return Err(WireError::Broker {
                code: v.error_code,
                message: "ApiVersions".into(),
            });
        }
        c.versions = v
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        if sasl {
            c.authenticate(kafka).await?;
        }
        Ok(c)
    }

    async fn authenticate(&mut self, kafka: &Kafka) -> Result<(), WireError> {
        let mechanism = kafka
            .get("sasl.mechanism")
            .or_else(|| kafka.get("sasl.mechanisms"))
            .unwrap_or("GSSAPI")
            .to_ascii_uppercase();
        let user = kafka.get("sasl.username").unwrap_or_default().to_string();
        let password = kafka.get("sasl.password").unwrap_or_default().to_string();
        let v = self.version::<SaslHandshakeRequest>()?;
        let hs = self
            .call(
                &SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_string(mechanism.clone())),
                v,
            )
            .await?;
        if hs.error_code != 0 {
            return Err(WireError::Auth(format!(
                "mechanism {mechanism} not enabled (broker offers {:?})",
                hs.mechanisms
                    .iter()
                    .map(|m| m.to_string())
                    .collect::<Vec<_>>()
            )));
        }
        if mechanism == "PLAIN" {
            self.sasl_step(format!("\0{user}\0{password}").into_bytes())
                .await?;
            return Ok(());
        }
        let m = scram::Mechanism::parse(&mechanism)
            .ok_or_else(|| WireError::Unsupported("sasl.mechanism", mechanism.clone()))?;
        let mut client = scram::Client::new(m, &user, &password);
        let server_first = self.sasl_step(client.first().into_bytes()).await?;
        let server_first = String::from_utf8(server_first).map_err(protocol_err)?;
        let fin = client
            .respond(&server_first)
            .map_err(|e| WireError::Auth(e.to_string()))?;
        let server_final = self.sasl_step(fin.into_bytes()).await?;
        client
            .verify(&String::from_utf8_lossy(&server_final))
            .map_err(|e| WireError::Auth(e.to_string()))
    }

    async fn sasl_step(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>, WireError> {
        let v = self.version::<SaslAuthenticateRequest>()?;
        let r = self
            .call(
                &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes)),
                v,
            )
            .await?;
        if r.error_code != 0 {
            return Err(WireError::Auth(
                r.error_message
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| format!("error {}", r.error_code)),
            ));
        }
        Ok(r.auth_bytes.to_vec())
    }

    /// The highest version of `R` both sides speak.
    fn version<R: Request>(&self) -> Result<i16, WireError> {
        let (lo, hi) = self
            .versions
            .get(&R::KEY)
            .copied()
            .ok_or_else(|| WireError::Protocol(format!("broker lacks API {}", R::KEY)))?;
        let v = hi.min(R::VERSIONS.max);
        if v < lo.max(R::VERSIONS.min) {
            return Err(WireError::Protocol(format!(
                "no common version of API {} (broker {lo}..{hi})",
                R::KEY
            )));
        }
        Ok(v)
    }

    async fn call<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response, WireError> {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("licensing-admin")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .map_err(protocol_err)?;
        req.encode(&mut body, version).map_err(protocol_err)?;
        let len = i32::try_from(body.len()).map_err(protocol_err)?;
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&body);
        tokio::time::timeout(IO_TIMEOUT, async {
            self.stream.write_all(&frame).await?;
            let mut len = [0u8; 4];
            self.stream.read_exact(&mut len).await?;
            let len = usize::try_from(i32::from_be_bytes(len)).map_err(protocol_err)?;
            if len > MAX_RESPONSE {
                return Err(WireError::Protocol(format!("response of {len} bytes")));
            }
            let mut buf = vec![0u8; len];
            self.stream.read_exact(&mut buf).await?;
            let mut buf = Bytes::from(buf);
            let header = ResponseHeader::decode(&mut buf, R::Response::header_version(version))
                .map_err(protocol_err)?;
            if header.correlation_id != self.correlation {
                return Err(WireError::Protocol("correlation id mismatch".into()));
            }
            let resp = R::Response::decode(&mut buf, version).map_err(protocol_err)?;
            if buf.has_remaining() {
                return Err(WireError::Protocol("trailing bytes in response".into()));
            }
            Ok(resp)
        })
        .await
        .map_err(|_| WireError::Timeout)?
    }

    /// Creates the bindings (an existing one is left as it is).
    pub async fn create_acls(&mut self, bindings: &[Binding]) -> Result<(), WireError> {
        if bindings.is_empty() {
            return Ok(());
        }
        let v = self.version::<CreateAclsRequest>()?;
        let creations = bindings
            .iter()
            .map(|b| {
                AclCreation::default()
                    .with_resource_type(b.resource as i8)
                    .with_resource_name(StrBytes::from_string(b.name.clone()))
                    .with_resource_pattern_type(b.pattern as i8)
                    .with_principal(StrBytes::from_string(b.principal.clone()))
                    .with_host(StrBytes::from_static_str("*"))
                    .with_operation(b.operation as i8)
                    .with_permission_type(ALLOW)
            })
            .collect();
        let r = self
            .call(&CreateAclsRequest::default().with_creations(creations), v)
            .await?;
        if let Some(bad) = r.results.iter().find(|x| x.error_code != 0) {
            return Err(WireError::Broker {
                code: bad.error_code,
                message: bad
                    .error_message
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// Every ALLOW binding of `principal` the broker's authorizer holds.
    pub async fn acls_of(&mut self, principal: &str) -> Result<Vec<Binding>, WireError> {
        let v = self.version::<DescribeAclsRequest>()?;
        let r = self
            .call(
                &DescribeAclsRequest::default()
                    .with_resource_type_filter(ANY)
                    .with_resource_name_filter(None)
                    .with_host_filter(None)
                    .with_pattern_type_filter(ANY)
                    .with_principal_filter(Some(StrBytes::from_string(principal.to_string())))
                    .with_operation(ANY)
                    .with_permission_type(ALLOW),
                v,
            )
            .await?;
        if r.error_code != 0 {
            return Err(WireError::Broker {
                code: r.error_code,
                message: r.error_message.map(|m| m.to_string()).unwrap_or_default(),
            });
        }
        let mut out = Vec::new();
        for res in &r.resources {
            for a in &res.acls {
                let (Some(resource), Some(pattern), Some(operation)) = (
                    crate::acl::Resource::from_code(res.resource_type),
                    crate::acl::Pattern::from_code(res.pattern_type),
                    crate::acl::Operation::from_code(a.operation),
                ) else {
                    continue;
                };
                out.push(Binding {
                    resource,
                    name: res.resource_name.to_string(),
                    pattern,
                    principal: a.principal.to_string(),
                    operation,
                });
            }
        }
        Ok(out)
    }
}

const ANY: i8 = 1;
const ALLOW: i8 = 3;

fn tls_config(kafka: &Kafka) -> Result<rustls::ClientConfig, WireError> {
    let mut roots = rustls::RootCertStore::empty();
    match kafka.get("ssl.ca.location") {
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| WireError::Connect(path.into(), format!("CA file: {e}")))?;
            for c in certs {
                let c = c.map_err(|e| WireError::Connect(path.into(), format!("CA file: {e}")))?;
                roots
                    .add(c)
                    .map_err(|e| WireError::Connect(path.into(), e.to_string()))?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(protocol_err)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
