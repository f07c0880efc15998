//! Registry host configuration read from a containerd-compatible `certs.d`
//! directory, so that a node already configured for containerd (mirrors,
//! private CAs, client certificates, extra headers) pulls through cri-imaged
//! with the same files. For a registry host such as `docker.io` or
//! `localhost:5000` the lookup picks the first directory that exists among
//! `<root>/<host>_<port>_`, `<root>/<host>:<port>` (or `<root>/<host>` without a
//! port) and `<root>/_default`, then reads its `hosts.toml`; a directory without
//! one is read the way Docker's `certs.d` is (`*.crt` CAs, `*.cert` + `*.key`
//! client pairs). The answer is an ordered list of [`RegistryEndpoint`]s: the
//! `[host."<url>"]` mirrors in file order, then the upstream server last.
//!
//! The file is parsed in two steps, "as written" (`RawHostsFile`: the TOML
//! values picked out by key) and "validated" (`HostsConfig`: URLs, paths and
//! capabilities checked), like the rest of the crate's configuration. Invalid
//! values are errors that name the file, the key and the value; keys containerd
//! would ignore are kept as [`HostsNote`]s so an operator can see them.
//!
//! Nothing is cached: like containerd, every lookup reads the directory again so
//! an edit to `hosts.toml` takes effect on the next pull without a restart.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use toml::Value;
use url::Url;

/// The largest `hosts.toml` read by default. Real files are a few hundred
/// bytes; the bound keeps a stray large file from being read into memory on
/// every pull.
pub const HOSTS_TOML_BYTES_MAX_DEFAULT: u64 = 1024 * 1024;

/// A `certs.d`-style directory of per-registry host configuration.
#[derive(Debug, Clone)]
pub struct HostsDirectory {
    root: PathBuf,
    hosts_toml_bytes_max: u64,
}

/// One place to send registry requests to, with the TLS material and headers
/// to use there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEndpoint {
    /// Scheme, host and port of the endpoint; the path is the API root
    /// (`/v2` for a compliant registry), so a manifest lives at
    /// `<url>/<repository>/manifests/<reference>`.
    pub url: Url,
    pub capabilities: Capabilities,
    /// PEM files with extra trusted CAs, added to the system roots.
    pub ca_files: Vec<PathBuf>,
    pub client_certs: Vec<ClientCertificate>,
    /// Skip verification of the server's certificate chain and host name.
    pub skip_verify: bool,
    /// Extra request headers, in file order; a name may carry several values.
    pub headers: Vec<(String, Vec<String>)>,
    /// True for a `[host."<url>"]` entry, false for the upstream server (even
    /// when `server` itself points at a mirror).
    pub is_mirror: bool,
}

/// What an endpoint may be trusted to do.
///
/// Resolving a tag to a digest is the trusted step; a public mirror should be
/// given `pull` only, so that it can serve content by digest but never decide
/// which digest a tag means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Fetch manifests and blobs by digest.
    pub pull: bool,
    /// Fetch manifests by tag (resolve a name to a digest).
    pub resolve: bool,
    /// Upload blobs and manifests.
    pub push: bool,
}

/// A TLS client certificate. Without `key` the private key is expected in
/// the same PEM file as the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    pub cert: PathBuf,
    pub key: Option<PathBuf>,
}

/// Everything one lookup found: the endpoints, where they came from, and the
/// notes about keys that were ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsLookup {
    pub endpoints: Vec<RegistryEndpoint>,
    pub source: HostsSource,
    pub notes: Vec<HostsNote>,
}

/// Which configuration a lookup used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostsSource {
    /// No host directory matched (or the root does not exist).
    Defaults,
    /// A `hosts.toml` file.
    HostsToml { path: PathBuf },
    /// A host directory without `hosts.toml` (or with an empty one), read as
    /// Docker's `certs.d` layout.
    CertificateFiles { directory: PathBuf },
}

/// Something in a `hosts.toml` that was accepted but has no effect. These are
/// warnings, not errors, because containerd ignores the same things and a
/// node's existing files must keep working.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostsNote {
    /// A key neither containerd nor cri-imaged knows.
    UnknownKey { file: PathBuf, key: String },
    /// A key newer containerd releases understand (`dial_timeout`, `proxy`)
    /// that cri-imaged does not implement yet.
    UnsupportedKey { file: PathBuf, key: String },
    /// A top-level key that containerd only applies to an explicit `server`;
    /// without one the default upstream gets every capability and `/v2`.
    IgnoredWithoutServer { file: PathBuf, key: String },
    /// Credentials, a query or a fragment in a URL, which containerd drops.
    IgnoredUrlParts {
        file: PathBuf,
        key: String,
        value: String,
    },
}

/// Why the host configuration for a registry could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostsError {
    #[error("registry host {registry_host:?} is not a host[:port] that can name a hosts directory")]
    InvalidRegistryHost { registry_host: String },

    #[error("cannot inspect hosts directory entry {path}")]
    InspectHostDirectory {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("hosts directory entry {path} is not a directory")]
    HostDirectoryNotADirectory { path: PathBuf },

    #[error("cannot read {path}")]
    ReadHostsToml {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{path} is larger than {hosts_toml_bytes_max} bytes")]
    HostsTomlTooLarge {
        path: PathBuf,
        hosts_toml_bytes_max: u64,
    },

    #[error("{path} is not utf-8")]
    HostsTomlNotUtf8 { path: PathBuf },

    #[error("{path} is not valid toml")]
    ParseHostsToml {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },

    #[error("{file}: key {key} is {found} {value}, expected {expected}")]
    WrongType {
        file: PathBuf,
        key: String,
        expected: &'static str,
        found: &'static str,
        value: String,
    },

    #[error("{file}: key {key} has unknown capability {value:?}, expected pull, resolve or push")]
    UnknownCapability {
        file: PathBuf,
        key: String,
        value: String,
    },

    #[error("{file}: key {key} has invalid url {value:?}")]
    InvalidUrl {
        file: PathBuf,
        key: String,
        value: String,
        #[source]
        source: url::ParseError,
    },

    #[error("{file}: key {key} has url {value:?} with scheme {scheme:?}, expected http or https")]
    UnsupportedUrlScheme {
        file: PathBuf,
        key: String,
        value: String,
        scheme: String,
    },

    #[error("{file}: key {key} has url {value:?} without a host")]
    UrlWithoutHost {
        file: PathBuf,
        key: String,
        value: String,
    },

    #[error("{file}: key {key} has invalid http header name or value {value:?}")]
    InvalidHeader {
        file: PathBuf,
        key: String,
        value: String,
    },

    #[error("{file}: key {key} has an empty path")]
    EmptyPath { file: PathBuf, key: String },

    #[error(
        "{file}: key {key} has client pair {value} with {entries} entries, expected [cert, key]"
    )]
    InvalidClientPair {
        file: PathBuf,
        key: String,
        value: String,
        entries: usize,
    },

    #[error("{file}: key {key} names {value:?}, and {path} cannot be read")]
    UnreadableFile {
        file: PathBuf,
        key: String,
        value: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot list certificate directory {path}")]
    ListCertificateDirectory {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot read certificate file {path}")]
    UnreadableCertificateFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

const HOSTS_TOML_FILE_NAME: &str = "hosts.toml";
const DEFAULT_HOST_DIRECTORY_NAME: &str = "_default";
const DOCKER_HUB_REGISTRY_HOST: &str = "docker.io";
const DOCKER_HUB_SERVER: &str = "registry-1.docker.io";
const API_ROOT_PATH: &str = "/v2";
/// Values quoted in errors are cut to this many characters so that a huge
/// array in a bad file does not become a huge log line.
const ERROR_VALUE_CHARS_MAX: usize = 120;

/// Keys of an entry, whether the top level or a `[host."<url>"]` table.
const ENTRY_KEYS: &[&str] = &[
    "capabilities",
    "ca",
    "client",
    "skip_verify",
    "header",
    "override_path",
];
/// Keys only the top level has.
const TOP_LEVEL_KEYS: &[&str] = &["server", "host"];
/// Keys newer containerd releases read and cri-imaged does not implement.
const UNSUPPORTED_CONTAINERD_KEYS: &[&str] = &["dial_timeout", "proxy"];

/// A `hosts.toml` as written: the values picked out by key, not yet checked.
#[derive(Debug)]
struct RawHostsFile<'a> {
    server: Option<&'a Value>,
    server_entry: RawHostEntry<'a>,
    /// `[host."<url>"]` tables in file order (the `toml` crate's
    /// `preserve_order` feature keeps it).
    mirrors: Vec<(&'a str, RawHostEntry<'a>)>,
}

/// One entry's settings as written.
#[derive(Debug)]
struct RawHostEntry<'a> {
    capabilities: Option<&'a Value>,
    ca: Option<&'a Value>,
    client: Option<&'a Value>,
    skip_verify: Option<&'a Value>,
    header: Option<&'a Value>,
    override_path: Option<&'a Value>,
}

/// A validated `hosts.toml`.
#[derive(Debug)]
struct HostsConfig {
    /// `[host."<url>"]` entries in file order.
    mirrors: Vec<(Url, HostEntry)>,
    /// `None` when the file has no `server`: the registry's default upstream.
    server_url: Option<Url>,
    /// The top-level settings, which belong to the upstream.
    server_entry: HostEntry,
}

/// One validated entry, apart from its URL.
#[derive(Debug, Default)]
struct HostEntry {
    /// `None` when the file does not say, which means every capability.
    capabilities: Option<Capabilities>,
    ca_files: Vec<PathBuf>,
    client_certs: Vec<ClientCertificate>,
    skip_verify: Option<bool>,
    headers: Vec<(String, Vec<String>)>,
}

/// Where a value sits, for messages: the file and the dotted key prefix
/// (empty at the top level, `host."<url>"` in a mirror table).
struct KeyContext<'a> {
    file: &'a Path,
    prefix: Option<String>,
}

impl HostsDirectory {
    /// A lookup over `root`, typically `/etc/containerd/certs.d`. A root that
    /// does not exist is not an error: every registry then gets its default
    /// endpoint.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        HostsDirectory {
            root: root.into(),
            hosts_toml_bytes_max: HOSTS_TOML_BYTES_MAX_DEFAULT,
        }
    }

    /// Sets the size above which a `hosts.toml` is refused.
    pub fn with_hosts_toml_bytes_max(mut self, hosts_toml_bytes_max: u64) -> Self {
        self.hosts_toml_bytes_max = hosts_toml_bytes_max;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The endpoints to try for `registry_host` (a reference domain such as
    /// `docker.io`, `localhost:5000` or `[::1]:5000`), mirrors first in file
    /// order and the upstream server last. Notes are logged at warn level; use
    /// [`HostsDirectory::lookup`] to get them as values instead.
    pub fn endpoints_for(&self, registry_host: &str) -> Result<Vec<RegistryEndpoint>, HostsError> {
        let lookup = self.lookup(registry_host)?;
        for note in &lookup.notes {
            tracing::warn!(registry_host, "{note}");
        }
        Ok(lookup.endpoints)
    }

    /// Like [`HostsDirectory::endpoints_for`], but also says which files were
    /// used and returns the notes instead of logging them.
    pub fn lookup(&self, registry_host: &str) -> Result<HostsLookup, HostsError> {
        validate_registry_host(registry_host)?;
        let Some(host_directory) = self.find_host_directory(registry_host)? else {
            return Ok(HostsLookup {
                endpoints: vec![default_server_endpoint(
                    registry_host,
                    HostEntry::default(),
                )?],
                source: HostsSource::Defaults,
                notes: Vec::new(),
            });
        };
        tracing::debug!(registry_host, directory = %host_directory.display(), "loading host directory");

        let hosts_toml_path = host_directory.join(HOSTS_TOML_FILE_NAME);
        let text = self.read_hosts_toml(&hosts_toml_path)?;
        // containerd treats a missing and an empty hosts.toml alike: both fall
        // back to Docker's certificate file layout.
        let Some(text) = text.filter(|text| !text.is_empty()) else {
            let server_entry = load_certificate_files(&host_directory)?;
            return Ok(HostsLookup {
                endpoints: vec![default_server_endpoint(registry_host, server_entry)?],
                source: HostsSource::CertificateFiles {
                    directory: host_directory,
                },
                notes: Vec::new(),
            });
        };

        let table: toml::Table = text.parse().map_err(|source| HostsError::ParseHostsToml {
            path: hosts_toml_path.clone(),
            source,
        })?;
        let mut notes = Vec::new();
        let raw = RawHostsFile::from_table(&table, &hosts_toml_path, &mut notes)?;
        let config = HostsConfig::from_raw(&raw, &hosts_toml_path, &host_directory, &mut notes)?;
        Ok(HostsLookup {
            endpoints: config.into_endpoints(registry_host)?,
            source: HostsSource::HostsToml {
                path: hosts_toml_path,
            },
            notes,
        })
    }

    /// The first existing directory among containerd's candidates. As in
    /// containerd, the first match wins even when it holds no configuration,
    /// so an empty `docker.io/` directory hides `_default/`.
    fn find_host_directory(&self, registry_host: &str) -> Result<Option<PathBuf>, HostsError> {
        for name in host_directory_candidates(registry_host) {
            let path = self.root.join(name);
            match fs::metadata(&path) {
                Ok(metadata) if metadata.is_dir() => return Ok(Some(path)),
                Ok(_) => return Err(HostsError::HostDirectoryNotADirectory { path }),
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(HostsError::InspectHostDirectory { path, source }),
            }
        }
        Ok(None)
    }

    /// The file's text, or `None` when it does not exist.
    fn read_hosts_toml(&self, path: &Path) -> Result<Option<String>, HostsError> {
        let read_error = |source| HostsError::ReadHostsToml {
            path: path.to_path_buf(),
            source,
        };
        let too_large = || HostsError::HostsTomlTooLarge {
            path: path.to_path_buf(),
            hosts_toml_bytes_max: self.hosts_toml_bytes_max,
        };
        let file = match fs::File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(read_error(source)),
        };
        if file.metadata().map_err(read_error)?.len() > self.hosts_toml_bytes_max {
            return Err(too_large());
        }
        // The metadata check is advisory (the file may grow, or be a pipe), so
        // the read itself is bounded too.
        let mut bytes = Vec::new();
        file.take(self.hosts_toml_bytes_max.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() as u64 > self.hosts_toml_bytes_max {
            return Err(too_large());
        }
        let text = String::from_utf8(bytes).map_err(|_| HostsError::HostsTomlNotUtf8 {
            path: path.to_path_buf(),
        })?;
        Ok(Some(text))
    }
}

impl RegistryEndpoint {
    /// May resolve tags to digests here.
    pub fn can_resolve(&self) -> bool {
        self.capabilities.resolve
    }

    /// May fetch content by digest here.
    pub fn can_pull(&self) -> bool {
        self.capabilities.pull
    }

    pub fn can_push(&self) -> bool {
        self.capabilities.push
    }
}

impl Capabilities {
    pub const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
    };
}

impl fmt::Display for HostsNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostsNote::UnknownKey { file, key } => {
                write!(f, "{}: unknown key {key} ignored", file.display())
            }
            HostsNote::UnsupportedKey { file, key } => write!(
                f,
                "{}: key {key} is a containerd setting cri-imaged does not support yet, ignored",
                file.display()
            ),
            HostsNote::IgnoredWithoutServer { file, key } => write!(
                f,
                "{}: key {key} has no effect without a top-level server, ignored as containerd does",
                file.display()
            ),
            HostsNote::IgnoredUrlParts { file, key, value } => write!(
                f,
                "{}: key {key} has url {value:?} whose credentials, query or fragment are ignored",
                file.display()
            ),
        }
    }
}

impl<'a> RawHostsFile<'a> {
    fn from_table(
        table: &'a toml::Table,
        file: &Path,
        notes: &mut Vec<HostsNote>,
    ) -> Result<Self, HostsError> {
        let top = KeyContext { file, prefix: None };
        let server_entry = RawHostEntry::from_table(table, &top, TOP_LEVEL_KEYS, notes);
        let mut mirrors = Vec::new();
        if let Some(hosts) = table.get("host") {
            let hosts = expect_table(hosts, &top.key("host"), file)?;
            for (url, entry) in hosts {
                let context = KeyContext::mirror(file, url);
                let entry = expect_table(entry, &context.entry_key(), file)?;
                mirrors.push((
                    url.as_str(),
                    RawHostEntry::from_table(entry, &context, &[], notes),
                ));
            }
        }
        let server = table.get("server");
        if server.is_none_or(|server| server.as_str() == Some("")) {
            // containerd replaces the default upstream's capabilities and path
            // wholesale, so these two top-level keys only matter with a server.
            for (key, value) in [
                ("capabilities", server_entry.capabilities),
                ("override_path", server_entry.override_path),
            ] {
                if value.is_some() {
                    notes.push(HostsNote::IgnoredWithoutServer {
                        file: file.to_path_buf(),
                        key: key.to_owned(),
                    });
                }
            }
        }
        Ok(RawHostsFile {
            server,
            server_entry,
            mirrors,
        })
    }
}

impl<'a> RawHostEntry<'a> {
    /// Picks out the entry keys and notes every other key, since containerd
    /// decodes without strict mode and ignores what it does not know.
    fn from_table(
        table: &'a toml::Table,
        context: &KeyContext<'_>,
        extra_known_keys: &[&str],
        notes: &mut Vec<HostsNote>,
    ) -> Self {
        for key in table.keys() {
            let key = key.as_str();
            if ENTRY_KEYS.contains(&key) || extra_known_keys.contains(&key) {
                continue;
            }
            let unsupported = UNSUPPORTED_CONTAINERD_KEYS.contains(&key);
            let file = context.file.to_path_buf();
            let key = context.key(key);
            notes.push(if unsupported {
                HostsNote::UnsupportedKey { file, key }
            } else {
                HostsNote::UnknownKey { file, key }
            });
        }
        RawHostEntry {
            capabilities: table.get("capabilities"),
            ca: table.get("ca"),
            client: table.get("client"),
            skip_verify: table.get("skip_verify"),
            header: table.get("header"),
            override_path: table.get("override_path"),
        }
    }
}

impl HostsConfig {
    fn from_raw(
        raw: &RawHostsFile<'_>,
        file: &Path,
        base_directory: &Path,
        notes: &mut Vec<HostsNote>,
    ) -> Result<Self, HostsError> {
        let mut mirrors = Vec::with_capacity(raw.mirrors.len());
        for (url, entry) in &raw.mirrors {
            let context = KeyContext::mirror(file, url);
            let validated = HostEntry::from_raw(entry, &context, base_directory)?;
            let override_path = optional_bool(entry.override_path, &context, "override_path")?;
            let url = endpoint_url(url, override_path, &context.entry_key(), file, notes)?;
            mirrors.push((url, validated));
        }

        let top = KeyContext { file, prefix: None };
        let server_entry = HostEntry::from_raw(&raw.server_entry, &top, base_directory)?;
        let override_path = optional_bool(raw.server_entry.override_path, &top, "override_path")?;
        let server_url = match raw.server.map(|server| expect_str(server, "server", file)) {
            // An empty server means "not set" to containerd, not "no upstream".
            None | Some(Ok("")) => None,
            Some(server) => Some(endpoint_url(server?, override_path, "server", file, notes)?),
        };
        Ok(HostsConfig {
            mirrors,
            server_url,
            server_entry,
        })
    }

    fn into_endpoints(self, registry_host: &str) -> Result<Vec<RegistryEndpoint>, HostsError> {
        let mut endpoints: Vec<RegistryEndpoint> = self
            .mirrors
            .into_iter()
            .map(|(url, entry)| entry.into_endpoint(url, true))
            .collect();
        endpoints.push(match self.server_url {
            Some(url) => self.server_entry.into_endpoint(url, false),
            None => default_server_endpoint(registry_host, self.server_entry)?,
        });
        Ok(endpoints)
    }
}

impl HostEntry {
    /// Validates everything but the URL, which depends on where the entry sits.
    fn from_raw(
        raw: &RawHostEntry<'_>,
        context: &KeyContext<'_>,
        base_directory: &Path,
    ) -> Result<Self, HostsError> {
        Ok(HostEntry {
            capabilities: raw
                .capabilities
                .map(|value| parse_capabilities(value, context))
                .transpose()?,
            ca_files: raw
                .ca
                .map(|value| parse_ca(value, context, base_directory))
                .transpose()?
                .unwrap_or_default(),
            client_certs: raw
                .client
                .map(|value| parse_client(value, context, base_directory))
                .transpose()?
                .unwrap_or_default(),
            skip_verify: optional_bool(raw.skip_verify, context, "skip_verify")?,
            headers: raw
                .header
                .map(|value| parse_headers(value, context))
                .transpose()?
                .unwrap_or_default(),
        })
    }

    fn tls_configured(&self) -> bool {
        !self.ca_files.is_empty() || !self.client_certs.is_empty() || self.skip_verify.is_some()
    }

    fn into_endpoint(self, url: Url, is_mirror: bool) -> RegistryEndpoint {
        RegistryEndpoint {
            url,
            capabilities: self.capabilities.unwrap_or(Capabilities::ALL),
            ca_files: self.ca_files,
            client_certs: self.client_certs,
            skip_verify: self.skip_verify.unwrap_or(false),
            headers: self.headers,
            is_mirror,
        }
    }
}

impl<'a> KeyContext<'a> {
    /// The context of a `[host."<url>"]` table.
    fn mirror(file: &'a Path, url: &str) -> Self {
        KeyContext {
            file,
            prefix: Some(format!("host.{}", quote_key(url))),
        }
    }

    /// The dotted key of `field` in this entry.
    fn key(&self, field: &str) -> String {
        match &self.prefix {
            Some(prefix) => format!("{prefix}.{}", quote_key(field)),
            None => quote_key(field),
        }
    }

    /// The key of the entry itself (`host."<url>"`).
    fn entry_key(&self) -> String {
        self.prefix.clone().unwrap_or_default()
    }

    fn wrong_type(&self, key: String, expected: &'static str, value: &Value) -> HostsError {
        HostsError::WrongType {
            file: self.file.to_path_buf(),
            key,
            expected,
            found: value.type_str(),
            value: render_value(value),
        }
    }
}

/// The registry's own endpoint, used when nothing in the host directory names
/// a server. `entry` carries the top-level (or certificate file) TLS settings,
/// which containerd applies to this default too.
fn default_server_endpoint(
    registry_host: &str,
    entry: HostEntry,
) -> Result<RegistryEndpoint, HostsError> {
    let (scheme, authority, loopback) = if registry_host == DOCKER_HUB_REGISTRY_HOST {
        ("https", DOCKER_HUB_SERVER, false)
    } else if let Some(port) = loopback_port(registry_host) {
        // Docker and containerd treat loopback registries as insecure: a local
        // test registry (docker-registry on 127.0.0.1:5000) speaks plain HTTP.
        // containerd now tries TLS first and falls back to HTTP on a handshake
        // failure; without a fallback we pick one scheme up front, and take
        // TLS only where the port or the operator's TLS settings ask for it.
        let https = port == Some("443") || (port != Some("80") && entry.tls_configured());
        (if https { "https" } else { "http" }, registry_host, true)
    } else {
        ("https", registry_host, false)
    };
    // validate_registry_host has parsed the same authority already, so this
    // only fails if that check and this one drift apart.
    let mut url = Url::parse(&format!("{scheme}://{authority}")).map_err(|_| {
        HostsError::InvalidRegistryHost {
            registry_host: registry_host.to_owned(),
        }
    })?;
    url.set_path(API_ROOT_PATH);
    // containerd skips certificate verification for a defaulted loopback
    // host, whose certificate is almost always self-signed; an explicit
    // skip_verify still wins.
    let skip_verify = entry
        .skip_verify
        .unwrap_or(loopback && url.scheme() == "https");
    Ok(RegistryEndpoint {
        url,
        // containerd gives the default upstream every capability, whatever
        // the top level says.
        capabilities: Capabilities::ALL,
        ca_files: entry.ca_files,
        client_certs: entry.client_certs,
        skip_verify,
        headers: entry.headers,
        is_mirror: false,
    })
}

/// Refuses anything that is not a plain `host[:port]`, since the value is
/// joined onto the hosts directory path and must not climb out of it.
fn validate_registry_host(registry_host: &str) -> Result<(), HostsError> {
    let invalid = || HostsError::InvalidRegistryHost {
        registry_host: registry_host.to_owned(),
    };
    if registry_host.is_empty()
        || registry_host == "."
        || registry_host == ".."
        || registry_host.contains(['/', '\\', '\0', '@', '?', '#'])
    {
        return Err(invalid());
    }
    let url = Url::parse(&format!("https://{registry_host}")).map_err(|_| invalid())?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid());
    }
    Ok(())
}

/// containerd's directory names for a host, in lookup order: `host_port_`
/// (the spelling that also works where `:` cannot be in a file name), then the
/// host as written, then `_default`.
///
/// containerd derives the first name from the last `:` even for a bracketed
/// IPv6 address without a port (`[::1]` becomes `[:_1]_`); here only a real
/// port is rewritten, so `[::1]` is looked up as `[::1]` and `_default`.
fn host_directory_candidates(registry_host: &str) -> Vec<String> {
    let mut candidates = Vec::with_capacity(3);
    if let (_, Some(port)) = split_host_port(registry_host) {
        let host = &registry_host[..registry_host.len() - port.len() - 1];
        candidates.push(format!("{host}_{port}_"));
    }
    candidates.push(registry_host.to_owned());
    candidates.push(DEFAULT_HOST_DIRECTORY_NAME.to_owned());
    candidates
}

/// Splits `host[:port]`, where an IPv6 host is bracketed; the brackets are
/// not part of the returned host.
fn split_host_port(registry_host: &str) -> (&str, Option<&str>) {
    if let Some(rest) = registry_host.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            return (host, after.strip_prefix(':'));
        }
        return (registry_host, None);
    }
    match registry_host.split_once(':') {
        Some((host, port)) if !port.contains(':') => (host, Some(port)),
        _ => (registry_host, None),
    }
}

/// `Some(port)` when the host is loopback (`localhost`, 127.0.0.0/8, `::1`),
/// the way containerd's `IsLocalhost` decides it.
fn loopback_port(registry_host: &str) -> Option<Option<&str>> {
    let (host, port) = split_host_port(registry_host);
    let loopback = host.eq_ignore_ascii_case("localhost")
        || match host.parse::<IpAddr>() {
            Ok(IpAddr::V4(address)) => address.is_loopback(),
            Ok(IpAddr::V6(address)) => {
                address.is_loopback() || address.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
            Err(_) => false,
        };
    loopback.then_some(port)
}

/// Turns a `server` value or `[host."<url>"]` key into the endpoint URL.
///
/// Like containerd: a value without a scheme gets `https://`; the path is
/// cleaned, and unless `override_path` is set `/v2` is appended when the path
/// does not already end in it. Unlike containerd, a bare trailing `/` is
/// treated as no path (containerd would produce `//v2`).
fn endpoint_url(
    value: &str,
    override_path: Option<bool>,
    key: &str,
    file: &Path,
    notes: &mut Vec<HostsNote>,
) -> Result<Url, HostsError> {
    let with_scheme = if value.contains("://") {
        value.to_owned()
    } else {
        format!("https://{value}")
    };
    let mut url = Url::parse(&with_scheme).map_err(|source| HostsError::InvalidUrl {
        file: file.to_path_buf(),
        key: key.to_owned(),
        value: value.to_owned(),
        source,
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(HostsError::UnsupportedUrlScheme {
            file: file.to_path_buf(),
            key: key.to_owned(),
            value: value.to_owned(),
            scheme: url.scheme().to_owned(),
        });
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(HostsError::UrlWithoutHost {
            file: file.to_path_buf(),
            key: key.to_owned(),
            value: value.to_owned(),
        });
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        notes.push(HostsNote::IgnoredUrlParts {
            file: file.to_path_buf(),
            key: key.to_owned(),
            value: value.to_owned(),
        });
        // Cannot fail for http(s) URLs, which always have a host.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_query(None);
        url.set_fragment(None);
    }
    let path = api_root_path(url.path(), override_path.unwrap_or(false));
    url.set_path(&path);
    Ok(url)
}

fn api_root_path(configured: &str, override_path: bool) -> String {
    let cleaned = clean_path(configured);
    if override_path {
        cleaned
    } else if cleaned == "/" {
        API_ROOT_PATH.to_owned()
    } else if cleaned.ends_with(API_ROOT_PATH) {
        cleaned
    } else {
        cleaned + API_ROOT_PATH
    }
}

/// Go's `path.Clean` for an absolute path: no empty or `.` segments, `..`
/// applied, no trailing slash.
fn clean_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    format!("/{}", segments.join("/"))
}

fn parse_capabilities(value: &Value, context: &KeyContext<'_>) -> Result<Capabilities, HostsError> {
    let key = context.key("capabilities");
    let Value::Array(items) = value else {
        return Err(context.wrong_type(key, "array of strings", value));
    };
    // containerd reads an empty list as "not set", which means everything.
    if items.is_empty() {
        return Ok(Capabilities::ALL);
    }
    let mut capabilities = Capabilities {
        pull: false,
        resolve: false,
        push: false,
    };
    for item in items {
        let Value::String(name) = item else {
            return Err(context.wrong_type(key, "string", item));
        };
        match name.to_ascii_lowercase().as_str() {
            "pull" => capabilities.pull = true,
            "resolve" => capabilities.resolve = true,
            "push" => capabilities.push = true,
            // containerd 2 knows "referrers" (the OCI referrers API); it is
            // accepted so such files keep working, and unused here.
            "referrers" => {}
            _ => {
                return Err(HostsError::UnknownCapability {
                    file: context.file.to_path_buf(),
                    key,
                    value: name.clone(),
                });
            }
        }
    }
    Ok(capabilities)
}

/// `ca`: a path or an array of paths.
fn parse_ca(
    value: &Value,
    context: &KeyContext<'_>,
    base_directory: &Path,
) -> Result<Vec<PathBuf>, HostsError> {
    let key = context.key("ca");
    let items: Vec<&Value> = match value {
        Value::String(_) => vec![value],
        Value::Array(items) => items.iter().collect(),
        _ => return Err(context.wrong_type(key, "string or array of strings", value)),
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::String(path) => readable_path(path, &key, context, base_directory),
            _ => Err(context.wrong_type(key.clone(), "string", item)),
        })
        .collect()
}

/// `client`: a path (certificate and key in one file), a `[cert, key]` pair,
/// or an array of either. An empty key in a pair means the key is in the
/// certificate file, as containerd's docs describe.
fn parse_client(
    value: &Value,
    context: &KeyContext<'_>,
    base_directory: &Path,
) -> Result<Vec<ClientCertificate>, HostsError> {
    let key = context.key("client");
    let items = match value {
        Value::String(cert) => {
            return Ok(vec![ClientCertificate {
                cert: readable_path(cert, &key, context, base_directory)?,
                key: None,
            }]);
        }
        Value::Array(items) => items,
        _ => return Err(context.wrong_type(key, "string or array", value)),
    };
    let mut certificates = Vec::with_capacity(items.len());
    for item in items {
        let certificate = match item {
            Value::String(cert) => ClientCertificate {
                cert: readable_path(cert, &key, context, base_directory)?,
                key: None,
            },
            Value::Array(pair) => {
                let [cert, key_file] = pair.as_slice() else {
                    return Err(HostsError::InvalidClientPair {
                        file: context.file.to_path_buf(),
                        key,
                        value: render_value(item),
                        entries: pair.len(),
                    });
                };
                let cert = expect_str(cert, &key, context.file)?;
                let key_file = expect_str(key_file, &key, context.file)?;
                ClientCertificate {
                    cert: readable_path(cert, &key, context, base_directory)?,
                    key: if key_file.is_empty() {
                        None
                    } else {
                        Some(readable_path(key_file, &key, context, base_directory)?)
                    },
                }
            }
            _ => return Err(context.wrong_type(key, "string or [cert, key] array", item)),
        };
        certificates.push(certificate);
    }
    Ok(certificates)
}

/// `header`: a table of name to string or array of strings, in file order.
fn parse_headers(
    value: &Value,
    context: &KeyContext<'_>,
) -> Result<Vec<(String, Vec<String>)>, HostsError> {
    let Value::Table(table) = value else {
        return Err(context.wrong_type(context.key("header"), "table", value));
    };
    let mut headers = Vec::with_capacity(table.len());
    for (name, values) in table {
        let key = format!("{}.{}", context.key("header"), quote_key(name));
        let invalid_header = |value: &str| HostsError::InvalidHeader {
            file: context.file.to_path_buf(),
            key: key.clone(),
            value: value.to_owned(),
        };
        if !is_header_name(name) {
            return Err(invalid_header(name));
        }
        let values: Vec<String> = match values {
            Value::String(single) => vec![single.clone()],
            Value::Array(items) => items
                .iter()
                .map(|item| expect_str(item, &key, context.file).map(str::to_owned))
                .collect::<Result<_, _>>()?,
            _ => return Err(context.wrong_type(key, "string or array of strings", values)),
        };
        // A line break in a value would end the header and start another one
        // (header injection), which no HTTP client should be asked to send.
        if let Some(bad) = values.iter().find(|value| !is_header_value(value)) {
            return Err(invalid_header(bad));
        }
        headers.push((name.clone(), values));
    }
    Ok(headers)
}

/// An RFC 9110 field name: one or more token characters.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

/// An RFC 9110 field value: visible characters, spaces and tabs, no CR, LF
/// or other control characters.
fn is_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|byte| byte == b'\t' || byte == b' ' || (byte >= 0x21 && byte != 0x7f))
}

fn optional_bool(
    value: Option<&Value>,
    context: &KeyContext<'_>,
    field: &str,
) -> Result<Option<bool>, HostsError> {
    value
        .map(|value| match value {
            Value::Boolean(flag) => Ok(*flag),
            _ => Err(context.wrong_type(context.key(field), "boolean", value)),
        })
        .transpose()
}

/// Resolves a configured path against the `hosts.toml` directory and checks
/// it can be read now, so a typo fails the lookup with the key that holds it
/// rather than a TLS handshake later.
fn readable_path(
    value: &str,
    key: &str,
    context: &KeyContext<'_>,
    base_directory: &Path,
) -> Result<PathBuf, HostsError> {
    if value.is_empty() {
        return Err(HostsError::EmptyPath {
            file: context.file.to_path_buf(),
            key: key.to_owned(),
        });
    }
    let path = base_directory.join(value);
    check_readable(&path).map_err(|source| HostsError::UnreadableFile {
        file: context.file.to_path_buf(),
        key: key.to_owned(),
        value: value.to_owned(),
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Opens the file and reads one byte, which also rejects a directory.
fn check_readable(path: &Path) -> io::Result<()> {
    let mut file = fs::File::open(path)?;
    // An empty certificate file is still readable (and fails later, in the
    // TLS setup, with a better message), so the count does not matter.
    let _bytes_read = file.read(&mut [0u8; 1])?;
    Ok(())
}

/// Docker's `certs.d` layout, as containerd's `loadCertFiles` reads it:
/// `*.crt` files are CAs, each `*.cert` is a client certificate whose key is
/// the `*.key` file of the same name when there is one. Entries are taken in
/// file name order, the order Go's `os.ReadDir` returns.
fn load_certificate_files(directory: &Path) -> Result<HostEntry, HostsError> {
    let list_error = |source| HostsError::ListCertificateDirectory {
        path: directory.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for entry in fs::read_dir(directory).map_err(list_error)? {
        let entry = entry.map_err(list_error)?;
        if entry.file_type().map_err(list_error)?.is_dir() {
            continue;
        }
        entries.push(entry.file_name());
    }
    entries.sort();

    let unreadable = |path: &Path, source| HostsError::UnreadableCertificateFile {
        path: path.to_path_buf(),
        source,
    };
    let mut server_entry = HostEntry::default();
    for name in entries {
        let name_bytes = name.as_encoded_bytes();
        let path = directory.join(&name);
        if name_bytes.ends_with(b".crt") {
            check_readable(&path).map_err(|source| unreadable(&path, source))?;
            server_entry.ca_files.push(path);
        } else if name_bytes.ends_with(b".cert") {
            check_readable(&path).map_err(|source| unreadable(&path, source))?;
            let key_path = path.with_extension("key");
            let key = match fs::metadata(&key_path) {
                Ok(_) => {
                    check_readable(&key_path).map_err(|source| unreadable(&key_path, source))?;
                    Some(key_path)
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => None,
                Err(source) => return Err(unreadable(&key_path, source)),
            };
            server_entry
                .client_certs
                .push(ClientCertificate { cert: path, key });
        }
    }
    Ok(server_entry)
}

fn expect_table<'a>(
    value: &'a Value,
    key: &str,
    file: &Path,
) -> Result<&'a toml::Table, HostsError> {
    match value {
        Value::Table(table) => Ok(table),
        _ => Err(HostsError::WrongType {
            file: file.to_path_buf(),
            key: key.to_owned(),
            expected: "table",
            found: value.type_str(),
            value: render_value(value),
        }),
    }
}

fn expect_str<'a>(value: &'a Value, key: &str, file: &Path) -> Result<&'a str, HostsError> {
    match value {
        Value::String(text) => Ok(text),
        _ => Err(HostsError::WrongType {
            file: file.to_path_buf(),
            key: key.to_owned(),
            expected: "string",
            found: value.type_str(),
            value: render_value(value),
        }),
    }
}

/// A key segment as TOML would need it written: bare when it can be, quoted
/// otherwise (URLs always are).
fn quote_key(segment: &str) -> String {
    let bare = !segment.is_empty()
        && segment
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if bare {
        segment.to_owned()
    } else {
        format!("{segment:?}")
    }
}

/// A short TOML-like rendering of a value for error messages.
fn render_value(value: &Value) -> String {
    let mut rendered = String::new();
    render_value_into(value, &mut rendered);
    if rendered.chars().count() > ERROR_VALUE_CHARS_MAX {
        rendered = rendered.chars().take(ERROR_VALUE_CHARS_MAX).collect();
        rendered.push_str("...");
    }
    rendered
}

fn render_value_into(value: &Value, out: &mut String) {
    // Stop early: the result is cut to ERROR_VALUE_CHARS_MAX anyway, and a
    // deep or wide value should not cost more than that to describe.
    if out.len() > ERROR_VALUE_CHARS_MAX {
        return;
    }
    match value {
        Value::String(text) => out.push_str(&format!("{text:?}")),
        Value::Integer(number) => out.push_str(&number.to_string()),
        Value::Float(number) => out.push_str(&number.to_string()),
        Value::Boolean(flag) => out.push_str(&flag.to_string()),
        Value::Datetime(datetime) => out.push_str(&datetime.to_string()),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                render_value_into(item, out);
            }
            out.push(']');
        }
        Value::Table(table) => {
            out.push('{');
            for (index, (key, item)) in table.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                out.push_str(&quote_key(key));
                out.push_str(" = ");
                render_value_into(item, out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary hosts root with helpers to lay out files in it.
    struct Fixture {
        root: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                root: tempfile::tempdir().expect("create temporary directory"),
            }
        }

        fn path(&self, relative: &str) -> PathBuf {
            self.root.path().join(relative)
        }

        fn write(&self, relative: &str, contents: &str) -> PathBuf {
            let path = self.path(relative);
            fs::create_dir_all(path.parent().expect("fixture paths have a parent"))
                .expect("create fixture directory");
            fs::write(&path, contents).expect("write fixture file");
            path
        }

        fn mkdir(&self, relative: &str) -> PathBuf {
            let path = self.path(relative);
            fs::create_dir_all(&path).expect("create fixture directory");
            path
        }

        fn hosts(&self) -> HostsDirectory {
            HostsDirectory::new(self.root.path())
        }

        fn lookup(&self, registry_host: &str) -> HostsLookup {
            self.hosts()
                .lookup(registry_host)
                .unwrap_or_else(|error| panic!("lookup {registry_host}: {error}"))
        }

        fn endpoints(&self, registry_host: &str) -> Vec<RegistryEndpoint> {
            self.hosts()
                .endpoints_for(registry_host)
                .unwrap_or_else(|error| panic!("endpoints_for {registry_host}: {error}"))
        }

        fn error(&self, registry_host: &str) -> HostsError {
            match self.hosts().lookup(registry_host) {
                Ok(lookup) => panic!("lookup {registry_host} succeeded: {lookup:?}"),
                Err(error) => error,
            }
        }
    }

    fn urls(endpoints: &[RegistryEndpoint]) -> Vec<String> {
        endpoints
            .iter()
            .map(|endpoint| endpoint.url.to_string())
            .collect()
    }

    fn caps(pull: bool, resolve: bool, push: bool) -> Capabilities {
        Capabilities {
            pull,
            resolve,
            push,
        }
    }

    /// Asserts the error's message names each of `parts`.
    fn assert_names(error: &HostsError, parts: &[&str]) {
        let message = error.to_string();
        for part in parts {
            assert!(message.contains(part), "{message:?} does not name {part:?}");
        }
    }

    #[test]
    fn missing_root_gives_one_default_https_endpoint() {
        let hosts = HostsDirectory::new("/nonexistent/cri-imaged/certs.d");
        let lookup = hosts.lookup("quay.io").unwrap();
        assert_eq!(lookup.source, HostsSource::Defaults);
        assert!(lookup.notes.is_empty());
        assert_eq!(
            lookup.endpoints,
            vec![RegistryEndpoint {
                url: Url::parse("https://quay.io/v2").unwrap(),
                capabilities: Capabilities::ALL,
                ca_files: vec![],
                client_certs: vec![],
                skip_verify: false,
                headers: vec![],
                is_mirror: false,
            }]
        );
    }

    #[test]
    fn empty_root_without_entry_gives_defaults() {
        let fixture = Fixture::new();
        fixture.mkdir("quay.io");
        let lookup = fixture.lookup("ghcr.io");
        assert_eq!(lookup.source, HostsSource::Defaults);
        assert_eq!(urls(&lookup.endpoints), ["https://ghcr.io/v2"]);
    }

    #[test]
    fn docker_io_default_upstream_is_registry_1() {
        let fixture = Fixture::new();
        assert_eq!(
            urls(&fixture.endpoints("docker.io")),
            ["https://registry-1.docker.io/v2"]
        );
        // The same default fills in when hosts.toml has mirrors but no server.
        fixture.write(
            "docker.io/hosts.toml",
            "[host.\"https://mirror.example.com\"]\ncapabilities = [\"pull\"]\n",
        );
        let endpoints = fixture.endpoints("docker.io");
        assert_eq!(
            urls(&endpoints),
            [
                "https://mirror.example.com/v2",
                "https://registry-1.docker.io/v2"
            ]
        );
        assert!(endpoints[0].is_mirror);
        assert!(!endpoints[1].is_mirror);
        assert_eq!(endpoints[1].capabilities, Capabilities::ALL);
    }

    #[test]
    fn non_loopback_host_with_port_defaults_to_https() {
        let fixture = Fixture::new();
        assert_eq!(
            urls(&fixture.endpoints("registry.example.com:5000")),
            ["https://registry.example.com:5000/v2"]
        );
    }

    #[test]
    fn loopback_hosts_default_to_plain_http() {
        let fixture = Fixture::new();
        for (host, url) in [
            ("localhost", "http://localhost/v2"),
            ("localhost:5000", "http://localhost:5000/v2"),
            ("127.0.0.1:35123", "http://127.0.0.1:35123/v2"),
            ("127.1.2.3", "http://127.1.2.3/v2"),
            ("[::1]:5000", "http://[::1]:5000/v2"),
            ("[::1]", "http://[::1]/v2"),
            ("localhost:80", "http://localhost/v2"),
        ] {
            let endpoints = fixture.endpoints(host);
            assert_eq!(urls(&endpoints), [url], "{host}");
            assert!(!endpoints[0].skip_verify, "{host}");
        }
        // Not loopback, so not insecure by default.
        assert_eq!(
            urls(&fixture.endpoints("128.0.0.1:5000")),
            ["https://128.0.0.1:5000/v2"]
        );
        assert_eq!(
            urls(&fixture.endpoints("localhost.example.com:5000")),
            ["https://localhost.example.com:5000/v2"]
        );
    }

    #[test]
    fn loopback_port_443_stays_https_without_verification() {
        let fixture = Fixture::new();
        let endpoints = fixture.endpoints("localhost:443");
        assert_eq!(urls(&endpoints), ["https://localhost/v2"]);
        assert!(endpoints[0].skip_verify);
    }

    #[test]
    fn loopback_with_tls_material_uses_https() {
        let fixture = Fixture::new();
        let ca = fixture.write("localhost:5000/ca.crt", "ca");
        let lookup = fixture.lookup("localhost:5000");
        assert_eq!(
            lookup.source,
            HostsSource::CertificateFiles {
                directory: fixture.path("localhost:5000")
            }
        );
        assert_eq!(urls(&lookup.endpoints), ["https://localhost:5000/v2"]);
        assert_eq!(lookup.endpoints[0].ca_files, [ca]);
        assert!(lookup.endpoints[0].skip_verify);

        // An explicit skip_verify = false is respected.
        fixture.write("127.0.0.1_5000_/hosts.toml", "skip_verify = false\n");
        let endpoints = fixture.endpoints("127.0.0.1:5000");
        assert_eq!(urls(&endpoints), ["https://127.0.0.1:5000/v2"]);
        assert!(!endpoints[0].skip_verify);
    }

    #[test]
    fn docs_example_local_mirror_for_docker() {
        let fixture = Fixture::new();
        let crt = fixture.write("docker.io/docker-mirror.crt", "pem");
        let file = fixture.write(
            "docker.io/hosts.toml",
            r#"
server = "https://registry-1.docker.io"    # Exclude this to not use upstream

[host."https://public-mirror.example.com"]
  capabilities = ["pull"]                  # Requires less trust, won't resolve tag to digest from this host
[host."https://docker-mirror.internal"]
  capabilities = ["pull", "resolve"]
  ca = "docker-mirror.crt"                 # Or absolute path /etc/containerd/certs.d/docker.io/docker-mirror.crt
"#,
        );
        let lookup = fixture.lookup("docker.io");
        assert_eq!(lookup.source, HostsSource::HostsToml { path: file });
        assert!(lookup.notes.is_empty(), "{:?}", lookup.notes);
        let endpoints = lookup.endpoints;
        assert_eq!(
            urls(&endpoints),
            [
                "https://public-mirror.example.com/v2",
                "https://docker-mirror.internal/v2",
                "https://registry-1.docker.io/v2",
            ]
        );
        assert_eq!(endpoints[0].capabilities, caps(true, false, false));
        assert_eq!(endpoints[1].capabilities, caps(true, true, false));
        assert_eq!(endpoints[1].ca_files, [crt]);
        assert_eq!(endpoints[2].capabilities, Capabilities::ALL);
        assert_eq!(
            endpoints.iter().map(|e| e.is_mirror).collect::<Vec<_>>(),
            [true, true, false]
        );
        let resolvers: Vec<_> = endpoints.iter().filter(|e| e.can_resolve()).collect();
        assert_eq!(resolvers.len(), 2);
        assert!(endpoints.iter().all(RegistryEndpoint::can_pull));
    }

    #[test]
    fn docs_example_default_server_is_only_the_mirror() {
        let fixture = Fixture::new();
        fixture.write(
            "_default/hosts.toml",
            "server = \"https://registry.example.com\"\n",
        );
        let endpoints = fixture.endpoints("quay.io");
        assert_eq!(urls(&endpoints), ["https://registry.example.com/v2"]);
        assert!(!endpoints[0].is_mirror);
    }

    #[test]
    fn override_path_and_path_handling() {
        let fixture = Fixture::new();
        fixture.write(
            "example.com/hosts.toml",
            r#"
[host."https://non-compliant-mirror.registry/v2/upstream"]
  capabilities = ["pull"]
  override_path = true
[host."https://mirror-bak.registry/us"]
  capabilities = ["pull"]
[host."https://already.registry/v2"]
[host."https://dotted.registry/a/./b/../c/"]
[host."https://noprefixnoncompliant.registry"]
  override_path = true
[host."mirror-without-scheme.registry:8443"]
[host."http://plain.registry"]
"#,
        );
        assert_eq!(
            urls(&fixture.endpoints("example.com")),
            [
                "https://non-compliant-mirror.registry/v2/upstream",
                "https://mirror-bak.registry/us/v2",
                "https://already.registry/v2",
                "https://dotted.registry/a/c/v2",
                "https://noprefixnoncompliant.registry/",
                "https://mirror-without-scheme.registry:8443/v2",
                "http://plain.registry/v2",
                "https://example.com/v2",
            ]
        );
    }

    #[test]
    fn server_with_override_path_and_no_scheme() {
        let fixture = Fixture::new();
        fixture.write(
            "example.com/hosts.toml",
            "server = \"upstream.example.com/api/registry\"\noverride_path = true\ncapabilities = [\"pull\", \"resolve\"]\n",
        );
        let endpoints = fixture.endpoints("example.com");
        assert_eq!(
            urls(&endpoints),
            ["https://upstream.example.com/api/registry"]
        );
        assert_eq!(endpoints[0].capabilities, caps(true, true, false));
    }

    #[test]
    fn server_with_ca_and_client_pair() {
        let fixture = Fixture::new();
        let ca = fixture.write("certs/ca.pem", "ca");
        let cert = fixture.write("certs/client.cert", "cert");
        let key = fixture.write("certs/client.key", "key");
        fixture.write(
            "registry.example.com:5000/hosts.toml",
            &format!(
                "server = \"https://registry.example.com:5000\"\nca = {:?}\nclient = [[{:?}, {:?}]]\n",
                ca.to_str().unwrap(),
                cert.to_str().unwrap(),
                key.to_str().unwrap()
            ),
        );
        let endpoints = fixture.endpoints("registry.example.com:5000");
        assert_eq!(endpoints.len(), 1);
        assert_eq!(
            endpoints[0].url.as_str(),
            "https://registry.example.com:5000/v2"
        );
        assert_eq!(endpoints[0].ca_files, [ca]);
        assert_eq!(
            endpoints[0].client_certs,
            [ClientCertificate {
                cert,
                key: Some(key)
            }]
        );
        assert!(!endpoints[0].skip_verify);
    }

    #[test]
    fn client_accepts_containerd_forms() {
        let fixture = Fixture::new();
        for name in [
            "one.pem",
            "two.pem",
            "three.pem",
            "pair.cert",
            "pair.key",
            "combined.pem",
        ] {
            fixture.write(&format!("example.com/{name}"), "pem");
        }
        fixture.write(
            "example.com/hosts.toml",
            r#"
[host."https://single.registry"]
  client = "one.pem"
[host."https://list.registry"]
  client = ["two.pem", "three.pem"]
[host."https://pairs.registry"]
  client = [["pair.cert", "pair.key"], ["combined.pem", ""], "one.pem"]
"#,
        );
        let directory = fixture.path("example.com");
        let combined = |name: &str| ClientCertificate {
            cert: directory.join(name),
            key: None,
        };
        let endpoints = fixture.endpoints("example.com");
        assert_eq!(endpoints[0].client_certs, [combined("one.pem")]);
        assert_eq!(
            endpoints[1].client_certs,
            [combined("two.pem"), combined("three.pem")]
        );
        assert_eq!(
            endpoints[2].client_certs,
            [
                ClientCertificate {
                    cert: directory.join("pair.cert"),
                    key: Some(directory.join("pair.key")),
                },
                combined("combined.pem"),
                combined("one.pem"),
            ]
        );
    }

    #[test]
    fn headers_keep_file_order_and_arrays() {
        let fixture = Fixture::new();
        fixture.write(
            "example.com/hosts.toml",
            r#"
server = "https://example.com"
[header]
  x-custom-1 = "custom header"
  a-second = ["part a", "part b"]

[host."https://mirror.registry"]
  [host."https://mirror.registry".header]
    x-custom-2 = ["value1", "value2"]
    b-only = "one"
"#,
        );
        let endpoints = fixture.endpoints("example.com");
        let header = |name: &str, values: &[&str]| {
            (
                name.to_owned(),
                values
                    .iter()
                    .map(|value| value.to_string())
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            endpoints[0].headers,
            [
                header("x-custom-2", &["value1", "value2"]),
                header("b-only", &["one"])
            ]
        );
        assert_eq!(
            endpoints[1].headers,
            [
                header("x-custom-1", &["custom header"]),
                header("a-second", &["part a", "part b"])
            ]
        );
    }

    #[test]
    fn header_names_and_values_must_be_valid_http() {
        let fixture = Fixture::new();
        let file = fixture.write("a.io/hosts.toml", "[header]\n\"x bad\" = \"v\"\n");
        let error = fixture.error("a.io");
        assert!(
            matches!(error, HostsError::InvalidHeader { .. }),
            "{error:?}"
        );
        assert_names(
            &error,
            &[file.to_str().unwrap(), "header.\"x bad\"", "x bad"],
        );

        fixture.write(
            "b.io/hosts.toml",
            "[host.\"https://m.io\".header]\nx-ok = [\"fine\", \"two\\r\\nx-injected: 1\"]\n",
        );
        let error = fixture.error("b.io");
        assert!(
            matches!(error, HostsError::InvalidHeader { .. }),
            "{error:?}"
        );
        assert_names(&error, &["host.\"https://m.io\".header.x-ok", "x-injected"]);
    }

    #[test]
    fn skip_verify_applies_per_entry() {
        let fixture = Fixture::new();
        fixture.write(
            "docker.io/hosts.toml",
            r#"
server = "https://registry-1.docker.io"

[host."http://192.168.31.250:5000"]
  capabilities = ["pull", "resolve", "push"]
  skip_verify = true
"#,
        );
        let endpoints = fixture.endpoints("docker.io");
        assert_eq!(
            urls(&endpoints),
            [
                "http://192.168.31.250:5000/v2",
                "https://registry-1.docker.io/v2"
            ]
        );
        assert!(endpoints[0].skip_verify);
        assert!(endpoints[0].can_push());
        assert!(!endpoints[1].skip_verify);
    }

    #[test]
    fn many_mirrors_keep_file_order() {
        let fixture = Fixture::new();
        let names = ["zulu", "alpha", "mike", "bravo", "yankee", "charlie"];
        let mut text = String::from("server = \"https://upstream.example\"\n");
        for name in names {
            text.push_str(&format!(
                "[host.\"https://{name}.mirror\"]\n  capabilities = [\"pull\"]\n  [host.\"https://{name}.mirror\".header]\n    x-name = \"{name}\"\n"
            ));
        }
        fixture.write("example.com/hosts.toml", &text);
        let endpoints = fixture.endpoints("example.com");
        let mut expected: Vec<String> = names
            .iter()
            .map(|name| format!("https://{name}.mirror/v2"))
            .collect();
        expected.push("https://upstream.example/v2".to_owned());
        assert_eq!(urls(&endpoints), expected);
    }

    #[test]
    fn ca_paths_relative_to_hosts_toml_or_absolute() {
        let fixture = Fixture::new();
        let relative = fixture.write("example.com/certs/relative.pem", "pem");
        let absolute = fixture.write("elsewhere/absolute.pem", "pem");
        fixture.write(
            "example.com/hosts.toml",
            &format!(
                "ca = [\"certs/relative.pem\", {:?}]\n",
                absolute.to_str().unwrap()
            ),
        );
        let endpoints = fixture.endpoints("example.com");
        assert_eq!(endpoints[0].ca_files, [relative, absolute]);
        assert_eq!(urls(&endpoints), ["https://example.com/v2"]);
    }

    #[test]
    fn default_directory_is_the_fallback() {
        let fixture = Fixture::new();
        let default_file = fixture.write(
            "_default/hosts.toml",
            "[host.\"https://registry.example.com\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        );
        let lookup = fixture.lookup("quay.io");
        assert_eq!(lookup.source, HostsSource::HostsToml { path: default_file });
        assert_eq!(
            urls(&lookup.endpoints),
            ["https://registry.example.com/v2", "https://quay.io/v2"]
        );

        // A directory for the host wins over _default, even an empty one.
        fixture.mkdir("quay.io");
        let lookup = fixture.lookup("quay.io");
        assert_eq!(
            lookup.source,
            HostsSource::CertificateFiles {
                directory: fixture.path("quay.io")
            }
        );
        assert_eq!(urls(&lookup.endpoints), ["https://quay.io/v2"]);
    }

    #[test]
    fn host_with_port_prefers_underscore_directory() {
        let fixture = Fixture::new();
        fixture.write(
            "myregistry.io:5000/hosts.toml",
            "server = \"https://colon.example\"\n",
        );
        assert_eq!(
            urls(&fixture.endpoints("myregistry.io:5000")),
            ["https://colon.example/v2"]
        );
        fixture.write(
            "myregistry.io_5000_/hosts.toml",
            "server = \"https://underscore.example\"\n",
        );
        assert_eq!(
            urls(&fixture.endpoints("myregistry.io:5000")),
            ["https://underscore.example/v2"]
        );
        // The port is part of the name: the portless directory does not match.
        fixture.write(
            "other.io/hosts.toml",
            "server = \"https://portless.example\"\n",
        );
        assert_eq!(
            urls(&fixture.endpoints("other.io:5000")),
            ["https://other.io:5000/v2"]
        );
    }

    #[test]
    fn ipv6_host_directories() {
        let fixture = Fixture::new();
        fixture.write(
            "[::1]_5000_/hosts.toml",
            "[host.\"http://[::1]:6000\"]\n  capabilities = [\"pull\"]\n",
        );
        let endpoints = fixture.endpoints("[::1]:5000");
        assert_eq!(
            urls(&endpoints),
            ["http://[::1]:6000/v2", "http://[::1]:5000/v2"]
        );

        fixture.write("[fd00::1]/hosts.toml", "skip_verify = true\n");
        let endpoints = fixture.endpoints("[fd00::1]");
        assert_eq!(urls(&endpoints), ["https://[fd00::1]/v2"]);
        assert!(endpoints[0].skip_verify);

        assert_eq!(
            host_directory_candidates("[::1]:5000"),
            ["[::1]_5000_", "[::1]:5000", "_default"]
        );
        assert_eq!(host_directory_candidates("[::1]"), ["[::1]", "_default"]);
        assert_eq!(
            host_directory_candidates("docker.io"),
            ["docker.io", "_default"]
        );
    }

    #[test]
    fn legacy_certificate_files() {
        let fixture = Fixture::new();
        let ca_b = fixture.write("registry.example.com/b.crt", "ca");
        let ca_a = fixture.write("registry.example.com/a.crt", "ca");
        let cert = fixture.write("registry.example.com/client.cert", "cert");
        let key = fixture.write("registry.example.com/client.key", "key");
        let lone = fixture.write("registry.example.com/lone.cert", "cert and key");
        fixture.write("registry.example.com/README", "ignored");
        fixture.write("registry.example.com/orphan.key", "ignored");
        fixture.mkdir("registry.example.com/nested.crt");
        let lookup = fixture.lookup("registry.example.com");
        assert_eq!(
            lookup.source,
            HostsSource::CertificateFiles {
                directory: fixture.path("registry.example.com")
            }
        );
        let endpoints = lookup.endpoints;
        assert_eq!(urls(&endpoints), ["https://registry.example.com/v2"]);
        assert_eq!(endpoints[0].ca_files, [ca_a, ca_b]);
        assert_eq!(
            endpoints[0].client_certs,
            [
                ClientCertificate {
                    cert,
                    key: Some(key)
                },
                ClientCertificate {
                    cert: lone,
                    key: None
                },
            ]
        );
    }

    #[test]
    fn empty_hosts_toml_falls_back_to_certificate_files() {
        let fixture = Fixture::new();
        fixture.write("example.com/hosts.toml", "");
        let ca = fixture.write("example.com/ca.crt", "ca");
        let lookup = fixture.lookup("example.com");
        assert!(matches!(
            lookup.source,
            HostsSource::CertificateFiles { .. }
        ));
        assert_eq!(lookup.endpoints[0].ca_files, [ca]);
    }

    #[test]
    fn top_level_tls_settings_apply_to_default_server() {
        let fixture = Fixture::new();
        let ca = fixture.write("quay.io/ca.pem", "pem");
        fixture.write(
            "quay.io/hosts.toml",
            "ca = \"ca.pem\"\nskip_verify = true\n[header]\nx-a = \"b\"\n",
        );
        let endpoints = fixture.endpoints("quay.io");
        assert_eq!(urls(&endpoints), ["https://quay.io/v2"]);
        assert_eq!(endpoints[0].ca_files, [ca]);
        assert!(endpoints[0].skip_verify);
        assert_eq!(
            endpoints[0].headers,
            [("x-a".to_owned(), vec!["b".to_owned()])]
        );
    }

    #[test]
    fn capabilities_without_server_are_noted_and_ignored() {
        let fixture = Fixture::new();
        let file = fixture.write(
            "quay.io/hosts.toml",
            "capabilities = [\"pull\"]\noverride_path = true\n",
        );
        let lookup = fixture.lookup("quay.io");
        assert_eq!(urls(&lookup.endpoints), ["https://quay.io/v2"]);
        assert_eq!(lookup.endpoints[0].capabilities, Capabilities::ALL);
        assert_eq!(
            lookup.notes,
            [
                HostsNote::IgnoredWithoutServer {
                    file: file.clone(),
                    key: "capabilities".to_owned()
                },
                HostsNote::IgnoredWithoutServer {
                    file,
                    key: "override_path".to_owned()
                },
            ]
        );
    }

    #[test]
    fn capabilities_are_case_insensitive_and_empty_means_all() {
        let fixture = Fixture::new();
        fixture.write(
            "example.com/hosts.toml",
            r#"
[host."https://a.mirror"]
  capabilities = ["PULL", "Resolve"]
[host."https://b.mirror"]
  capabilities = []
[host."https://c.mirror"]
  capabilities = ["pull", "referrers"]
"#,
        );
        let endpoints = fixture.endpoints("example.com");
        assert_eq!(endpoints[0].capabilities, caps(true, true, false));
        assert_eq!(endpoints[1].capabilities, Capabilities::ALL);
        assert_eq!(endpoints[2].capabilities, caps(true, false, false));
        let pull_only: Vec<_> = endpoints.iter().filter(|e| !e.can_resolve()).collect();
        assert_eq!(pull_only.len(), 1);
    }

    #[test]
    fn unknown_and_unsupported_keys_are_noted() {
        let fixture = Fixture::new();
        let file = fixture.write(
            "example.com/hosts.toml",
            r#"
server = "https://example.com"
colour = "blue"
dial_timeout = "1s"

[host."https://mirror.registry"]
  capabilities = ["pull"]
  server = "https://nested.example"
  proxy = "http://proxy:8080"
"#,
        );
        let lookup = fixture.lookup("example.com");
        assert_eq!(
            urls(&lookup.endpoints),
            ["https://mirror.registry/v2", "https://example.com/v2"]
        );
        assert_eq!(
            lookup.notes,
            [
                HostsNote::UnknownKey {
                    file: file.clone(),
                    key: "colour".to_owned()
                },
                HostsNote::UnsupportedKey {
                    file: file.clone(),
                    key: "dial_timeout".to_owned()
                },
                HostsNote::UnknownKey {
                    file: file.clone(),
                    key: "host.\"https://mirror.registry\".server".to_owned()
                },
                HostsNote::UnsupportedKey {
                    file: file.clone(),
                    key: "host.\"https://mirror.registry\".proxy".to_owned()
                },
            ]
        );
        let message = lookup.notes[2].to_string();
        assert!(message.contains(file.to_str().unwrap()), "{message}");
        assert!(
            message.contains("host.\"https://mirror.registry\".server"),
            "{message}"
        );
        // endpoints_for logs the notes and still answers.
        assert_eq!(fixture.endpoints("example.com").len(), 2);
    }

    #[test]
    fn url_credentials_and_query_are_dropped_with_a_note() {
        let fixture = Fixture::new();
        fixture.write(
            "example.com/hosts.toml",
            "server = \"https://user:secret@example.com/base?x=1#frag\"\n",
        );
        let lookup = fixture.lookup("example.com");
        assert_eq!(urls(&lookup.endpoints), ["https://example.com/base/v2"]);
        assert!(matches!(
            &lookup.notes[..],
            [HostsNote::IgnoredUrlParts { key, .. }] if key == "server"
        ));
    }

    #[test]
    fn unknown_capability_names_key_and_value() {
        let fixture = Fixture::new();
        let file = fixture.write(
            "example.com/hosts.toml",
            "[host.\"https://m.registry\"]\ncapabilities = [\"pull\", \"fetch\"]\n",
        );
        let error = fixture.error("example.com");
        assert!(matches!(&error, HostsError::UnknownCapability { value, .. } if value == "fetch"));
        assert_names(
            &error,
            &[
                file.to_str().unwrap(),
                "host.\"https://m.registry\".capabilities",
                "\"fetch\"",
            ],
        );
    }

    #[test]
    fn wrong_types_name_key_and_value() {
        let cases = [
            (
                "capabilities = \"pull\"\nserver = \"x.io\"\n",
                "capabilities",
                "\"pull\"",
            ),
            ("skip_verify = \"yes\"\n", "skip_verify", "\"yes\""),
            ("override_path = 1\n", "override_path", "1"),
            ("ca = 7\n", "ca", "7"),
            ("ca = [\"a.pem\", 3]\n", "ca", "3"),
            ("client = true\n", "client", "true"),
            ("server = 5000\n", "server", "5000"),
            ("header = \"x\"\n", "header", "\"x\""),
            ("[header]\nx-a = 1\n", "header.x-a", "1"),
            ("[header]\nx-a = [\"ok\", false]\n", "header.x-a", "false"),
            ("host = 3\n", "host", "3"),
            (
                "[host]\n\"https://m.io\" = \"m\"\n",
                "host.\"https://m.io\"",
                "\"m\"",
            ),
            (
                "[host.\"https://m.io\"]\nskip_verify = \"no\"\n",
                "host.\"https://m.io\".skip_verify",
                "\"no\"",
            ),
        ];
        for (text, key, value) in cases {
            let fixture = Fixture::new();
            fixture.write("example.com/a.pem", "pem");
            let file = fixture.write("example.com/hosts.toml", text);
            let error = fixture.error("example.com");
            assert!(
                matches!(&error, HostsError::WrongType { key: k, .. } if k == key),
                "{text:?}: {error:?}"
            );
            assert_names(&error, &[file.to_str().unwrap(), key, value]);
        }
    }

    #[test]
    fn urls_must_be_http_or_https_with_a_host() {
        let fixture = Fixture::new();
        fixture.write("a.io/hosts.toml", "server = \"ftp://files.example.com\"\n");
        let error = fixture.error("a.io");
        assert!(
            matches!(&error, HostsError::UnsupportedUrlScheme { scheme, .. } if scheme == "ftp")
        );
        assert_names(
            &error,
            &["a.io/hosts.toml", "server", "ftp://files.example.com"],
        );

        fixture.write("b.io/hosts.toml", "[host.\"https://bad host\"]\n");
        let error = fixture.error("b.io");
        assert!(matches!(error, HostsError::InvalidUrl { .. }), "{error:?}");
        assert_names(
            &error,
            &[
                "b.io/hosts.toml",
                "host.\"https://bad host\"",
                "https://bad host",
            ],
        );

        fixture.write("c.io/hosts.toml", "[host.\"unix:///run/registry.sock\"]\n");
        let error = fixture.error("c.io");
        assert!(
            matches!(error, HostsError::UnsupportedUrlScheme { .. }),
            "{error:?}"
        );

        fixture.write("d.io/hosts.toml", "[host.\"\"]\n");
        let error = fixture.error("d.io");
        assert!(matches!(error, HostsError::InvalidUrl { .. }), "{error:?}");
    }

    #[test]
    fn unreadable_ca_or_client_file_names_key_and_path() {
        let fixture = Fixture::new();
        fixture.write("a.io/hosts.toml", "ca = \"missing.pem\"\n");
        let error = fixture.error("a.io");
        assert!(
            matches!(&error, HostsError::UnreadableFile { source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
        let missing = fixture.path("a.io/missing.pem");
        assert_names(
            &error,
            &[
                "a.io/hosts.toml",
                "ca",
                "missing.pem",
                missing.to_str().unwrap(),
            ],
        );

        fixture.write("b.io/cert.pem", "pem");
        fixture.write(
            "b.io/hosts.toml",
            "[host.\"https://m.io\"]\nclient = [[\"cert.pem\", \"gone.key\"]]\n",
        );
        let error = fixture.error("b.io");
        assert!(
            matches!(error, HostsError::UnreadableFile { .. }),
            "{error:?}"
        );
        assert_names(&error, &["host.\"https://m.io\".client", "gone.key"]);

        // A directory is not a readable certificate.
        fixture.mkdir("c.io/dir.pem");
        fixture.write("c.io/hosts.toml", "ca = \"dir.pem\"\n");
        assert!(matches!(
            fixture.error("c.io"),
            HostsError::UnreadableFile { .. }
        ));

        fixture.write("d.io/hosts.toml", "client = \"\"\n");
        let error = fixture.error("d.io");
        assert!(matches!(error, HostsError::EmptyPath { .. }), "{error:?}");
        assert_names(&error, &["d.io/hosts.toml", "client"]);
    }

    #[test]
    fn client_pair_must_have_two_entries() {
        let fixture = Fixture::new();
        fixture.write(
            "example.com/hosts.toml",
            "client = [[\"a.cert\", \"a.key\", \"extra\"]]\n",
        );
        let error = fixture.error("example.com");
        assert!(
            matches!(error, HostsError::InvalidClientPair { entries: 3, .. }),
            "{error:?}"
        );
        assert_names(&error, &["client", "\"extra\""]);
    }

    #[test]
    fn invalid_toml_is_an_error() {
        let fixture = Fixture::new();
        let file = fixture.write("example.com/hosts.toml", "server = \"unterminated\n");
        let error = fixture.error("example.com");
        assert!(
            matches!(error, HostsError::ParseHostsToml { .. }),
            "{error:?}"
        );
        assert_names(&error, &[file.to_str().unwrap()]);

        // Duplicate host tables are invalid TOML, not a silent merge.
        fixture.write(
            "example.com/hosts.toml",
            "[host.\"https://m.io\"]\n[host.\"https://m.io\"]\n",
        );
        assert!(matches!(
            fixture.error("example.com"),
            HostsError::ParseHostsToml { .. }
        ));

        fixture.write("bytes.io/hosts.toml", "");
        fs::write(fixture.path("bytes.io/hosts.toml"), [0xff, 0xfe, b'\n']).unwrap();
        assert!(matches!(
            fixture.error("bytes.io"),
            HostsError::HostsTomlNotUtf8 { .. }
        ));
    }

    #[test]
    fn oversized_hosts_toml_is_refused() {
        let fixture = Fixture::new();
        let mut text = String::from("server = \"https://example.com\"\n");
        while text.len() as u64 <= HOSTS_TOML_BYTES_MAX_DEFAULT {
            text.push_str("# padding padding padding padding padding padding padding\n");
        }
        let file = fixture.write("example.com/hosts.toml", &text);
        let error = fixture.error("example.com");
        assert!(
            matches!(&error, HostsError::HostsTomlTooLarge { hosts_toml_bytes_max, .. } if *hosts_toml_bytes_max == HOSTS_TOML_BYTES_MAX_DEFAULT),
            "{error:?}"
        );
        assert_names(&error, &[file.to_str().unwrap(), "1048576"]);

        // The bound is configurable, and a file at the bound is accepted.
        fixture.write("small.io/hosts.toml", "server = \"https://s.io\"\n");
        let exact = fs::metadata(fixture.path("small.io/hosts.toml"))
            .unwrap()
            .len();
        let hosts = fixture.hosts().with_hosts_toml_bytes_max(exact);
        assert_eq!(
            urls(&hosts.endpoints_for("small.io").unwrap()),
            ["https://s.io/v2"]
        );
        let hosts = fixture.hosts().with_hosts_toml_bytes_max(exact - 1);
        assert!(matches!(
            hosts.lookup("small.io"),
            Err(HostsError::HostsTomlTooLarge { .. })
        ));
    }

    #[test]
    fn registry_host_cannot_escape_the_root() {
        let fixture = Fixture::new();
        for host in [
            "",
            ".",
            "..",
            "../etc",
            "a/b",
            "user@host",
            "host?x",
            "a\\b",
            "::1",
        ] {
            let error = fixture.error(host);
            assert!(
                matches!(&error, HostsError::InvalidRegistryHost { registry_host } if registry_host == host),
                "{host:?}: {error:?}"
            );
        }
    }

    #[test]
    fn host_entry_that_is_a_file_is_an_error() {
        let fixture = Fixture::new();
        let path = fixture.write("example.com", "not a directory");
        let error = fixture.error("example.com");
        assert!(
            matches!(&error, HostsError::HostDirectoryNotADirectory { path: p } if *p == path),
            "{error:?}"
        );
    }
}
