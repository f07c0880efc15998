//! [`TestRegistry`]: a real registry (Debian's `docker-registry`, CNCF
//! distribution 2.8) started for one test on `127.0.0.1` and a free port, with
//! its storage, configuration and log in a temporary directory.
//!
//! The registry runs in one of four modes: anonymous plain HTTP, htpasswd
//! (Basic) auth, token (Bearer) auth against a [`TokenServer`], or TLS with an
//! optional client certificate requirement; [`RegistryOptions`] combines
//! them. Deletion is enabled so tests can make the registry lose a blob or a
//! manifest.
//!
//! The child process is killed when the [`TestRegistry`] drops. If the test
//! is panicking at that point, the registry log is printed to stderr, since a
//! failed pull is usually explained there.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::certificates::TestCertificates;
use super::token_server::{TokenMinter, TokenServer};

/// Overrides the registry binary, for machines where it is not in `/usr/bin`.
pub const REGISTRY_BINARY_ENV: &str = "CRI_IMAGED_TEST_REGISTRY_BINARY";
pub const DEFAULT_REGISTRY_BINARY: &str = "/usr/bin/docker-registry";

/// The realm the registry names in its Basic challenge in htpasswd mode.
pub const HTPASSWD_REALM: &str = "cri-imaged-test-registry";

/// A port picked by binding `127.0.0.1:0` may be taken again before the
/// registry binds it, so starting is retried on a fresh port this many times.
const START_ATTEMPTS_MAX: u32 = 5;
const READY_TIMEOUT_MS: u64 = 15_000;
const READY_POLL_INTERVAL_MS: u64 = 10;
const READY_PROBE_TIMEOUT_MS: u64 = 1_000;
const HTTP_TIMEOUT_MS: u64 = 30_000;
/// bcrypt's minimum cost: the registry accepts it and tests stay fast.
const HTPASSWD_BCRYPT_COST: u32 = 4;

/// How the registry authenticates clients.
#[derive(Clone)]
pub enum RegistryAuth {
    Anonymous,
    Htpasswd {
        user: String,
        password: String,
    },
    Token {
        realm: String,
        service: String,
        issuer: String,
        root_certificate_bundle_pem: String,
        /// Lets harness code mint push tokens without going through HTTP.
        minter: TokenMinter,
    },
}

/// TLS for the registry's listener.
#[derive(Clone)]
pub struct RegistryTls {
    pub certificates: TestCertificates,
    pub require_client_certificate: bool,
}

/// Everything that selects a registry mode; the `start_with_*` constructors
/// of [`TestRegistry`] are shorthands for one field each.
#[derive(Clone)]
pub struct RegistryOptions {
    pub auth: RegistryAuth,
    pub tls: Option<RegistryTls>,
}

/// A running registry. Dropping it kills the process and removes its storage.
pub struct TestRegistry {
    child: Option<Child>,
    host: String,
    directory: TempDir,
    options: RegistryOptions,
}

impl RegistryOptions {
    pub fn anonymous() -> RegistryOptions {
        RegistryOptions {
            auth: RegistryAuth::Anonymous,
            tls: None,
        }
    }

    pub fn with_htpasswd(mut self, user: &str, password: &str) -> RegistryOptions {
        self.auth = RegistryAuth::Htpasswd {
            user: user.to_owned(),
            password: password.to_owned(),
        };
        self
    }

    pub fn with_token_auth(mut self, token_server: &TokenServer) -> RegistryOptions {
        self.auth = RegistryAuth::Token {
            realm: token_server.realm(),
            service: token_server.service().to_owned(),
            issuer: token_server.issuer().to_owned(),
            root_certificate_bundle_pem: token_server.root_certificate_bundle_pem().to_owned(),
            minter: token_server.minter(),
        };
        self
    }

    pub fn with_tls(
        mut self,
        certificates: &TestCertificates,
        require_client_certificate: bool,
    ) -> RegistryOptions {
        self.tls = Some(RegistryTls {
            certificates: certificates.clone(),
            require_client_certificate,
        });
        self
    }
}

impl TestRegistry {
    /// Anonymous access over plain HTTP.
    pub fn start() -> TestRegistry {
        TestRegistry::start_with_options(RegistryOptions::anonymous())
    }

    /// Basic auth with one user, over plain HTTP.
    pub fn start_with_htpasswd(user: &str, password: &str) -> TestRegistry {
        TestRegistry::start_with_options(RegistryOptions::anonymous().with_htpasswd(user, password))
    }

    /// Bearer tokens issued by `token_server`, over plain HTTP.
    pub fn start_with_token_auth(token_server: &TokenServer) -> TestRegistry {
        TestRegistry::start_with_options(RegistryOptions::anonymous().with_token_auth(token_server))
    }

    /// Anonymous access over HTTPS with the server certificate of
    /// `certificates`; with `require_client_certificate`, the handshake fails
    /// unless the client presents a certificate signed by the test CA.
    pub fn start_with_tls(
        certificates: &TestCertificates,
        require_client_certificate: bool,
    ) -> TestRegistry {
        TestRegistry::start_with_options(
            RegistryOptions::anonymous().with_tls(certificates, require_client_certificate),
        )
    }

    pub fn start_with_options(options: RegistryOptions) -> TestRegistry {
        let directory = TempDir::new().expect("create the registry directory");
        write_auth_files(directory.path(), &options);
        let mut registry = TestRegistry {
            child: None,
            host: String::new(),
            directory,
            options,
        };
        for attempt in 1..=START_ATTEMPTS_MAX {
            let port = free_loopback_port();
            registry.host = format!("127.0.0.1:{port}");
            fs::write(registry.config_path(), registry.config_yaml())
                .expect("write the registry config");
            match registry.spawn_and_wait() {
                Ok(()) => return registry,
                Err(StartFailure::PortTaken) if attempt < START_ATTEMPTS_MAX => {}
                // Dropping `registry` while panicking prints its log.
                Err(failure) => panic!(
                    "docker-registry did not start on {} ({failure:?}); its log follows on stderr",
                    registry.host
                ),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.host
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .expect("host ends with a port")
    }

    pub fn scheme(&self) -> &'static str {
        if self.options.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.host)
    }

    /// `base_url()` followed by `path`, which starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    /// The htpasswd user and password, in htpasswd mode.
    pub fn basic_credentials(&self) -> Option<(&str, &str)> {
        match &self.options.auth {
            RegistryAuth::Htpasswd { user, password } => Some((user, password)),
            _ => None,
        }
    }

    /// An HTTP client that trusts the test CA and presents the client
    /// certificate when this registry is on TLS; a plain client otherwise.
    pub fn http_agent(&self) -> ureq::Agent {
        http_agent(
            self.options
                .tls
                .as_ref()
                .map(|tls| tls.certificates.ureq_tls_config(true)),
        )
    }

    /// The filesystem driver's root directory.
    pub fn storage_root(&self) -> PathBuf {
        self.directory.path().join("storage")
    }

    /// Where the filesystem driver keeps the bytes of blob `digest`
    /// (`sha256:<hex>`). Overwriting the file makes the registry serve
    /// content that does not match its digest.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest
            .strip_prefix("sha256:")
            .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
        self.storage_root()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn config_path(&self) -> PathBuf {
        self.directory.path().join("config.yml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.directory.path().join("registry.log")
    }

    /// Everything the registry wrote to stdout and stderr, across restarts.
    pub fn log_text(&self) -> String {
        self.log_text_since(0)
    }

    /// The log from byte `offset` on.
    fn log_text_since(&self, offset: usize) -> String {
        let bytes = fs::read(self.log_path()).unwrap_or_default();
        String::from_utf8_lossy(bytes.get(offset..).unwrap_or_default()).into_owned()
    }

    pub fn print_log(&self) {
        eprintln!(
            "----- docker-registry log ({}) -----\n{}----- end of docker-registry log -----",
            self.host,
            self.log_text()
        );
    }

    /// Kills the registry; requests fail with a connection error until
    /// [`TestRegistry::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the registry again on the same port with the same storage.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(failure) = self.spawn_and_wait() {
            panic!(
                "docker-registry did not restart on {} ({failure:?}); its log follows on stderr",
                self.host
            );
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), StartFailure> {
        // Only log lines written after this offset belong to the new child.
        let log_offset = fs::metadata(self.log_path()).map_or(0, |m| m.len() as usize);
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the registry log");
        let log_file_for_stderr = log_file.try_clone().expect("clone the registry log handle");
        let binary = std::env::var_os(REGISTRY_BINARY_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_REGISTRY_BINARY));
        let mut command = Command::new(&binary);
        command
            .arg("serve")
            .arg(self.config_path())
            .current_dir(self.directory.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(log_file_for_stderr));
        // distribution lets REGISTRY_* variables override any config key; the
        // generated config must be the whole truth.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("REGISTRY_") {
                command.env_remove(name);
            }
        }
        let child = command.spawn().unwrap_or_else(|error| {
            panic!(
                "cannot run {} ({error}); install it with `apt-get install docker-registry` \
                 or set {REGISTRY_BINARY_ENV}",
                binary.display()
            )
        });
        self.child = Some(child);
        self.wait_until_ready(log_offset)
    }

    fn wait_until_ready(&mut self, log_offset: usize) -> Result<(), StartFailure> {
        let probe = {
            let tls = self
                .options
                .tls
                .as_ref()
                .map(|tls| tls.certificates.ureq_tls_config(true));
            let mut config = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .proxy(None)
                .timeout_global(Some(Duration::from_millis(READY_PROBE_TIMEOUT_MS)));
            if let Some(tls) = tls {
                config = config.tls_config(tls);
            }
            ureq::Agent::new_with_config(config.build())
        };
        let url = self.url("/v2/");
        let listening_line = format!("listening on {}", self.host);
        let deadline = Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
        loop {
            let child = self.child.as_mut().expect("registry child is running");
            if let Some(status) = child.try_wait().expect("poll the registry process") {
                self.child = None;
                return Err(
                    if self
                        .log_text_since(log_offset)
                        .contains("address already in use")
                    {
                        StartFailure::PortTaken
                    } else {
                        StartFailure::Exited(status.to_string())
                    },
                );
            }
            // Any HTTP answer (200 or 401) means a listener is serving; the log
            // line proves it is this child's, not another process that took
            // the port between our probe and its failed bind.
            let listening = self.log_text_since(log_offset).contains(&listening_line);
            if listening && probe.get(&url).call().is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(StartFailure::NotReady);
            }
            std::thread::sleep(Duration::from_millis(READY_POLL_INTERVAL_MS));
        }
    }

    fn config_yaml(&self) -> String {
        let directory = self.directory.path();
        let mut yaml = format!(
            "version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {host}
  secret: cri-imaged-test-http-secret
",
            storage = yaml_string(&self.storage_root()),
            host = self.host,
        );
        if let Some(tls) = &self.options.tls {
            yaml.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                yaml_string(&directory.join("tls-server.pem")),
                yaml_string(&directory.join("tls-server-key.pem")),
            ));
            if tls.require_client_certificate {
                yaml.push_str(&format!(
                    "    clientcas:\n      - {}\n",
                    yaml_string(&directory.join("tls-client-ca.pem"))
                ));
            }
        }
        match &self.options.auth {
            RegistryAuth::Anonymous => {}
            RegistryAuth::Htpasswd { .. } => yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: {HTPASSWD_REALM}\n    path: {}\n",
                yaml_string(&directory.join("htpasswd"))
            )),
            RegistryAuth::Token {
                realm,
                service,
                issuer,
                ..
            } => yaml.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                serde_json::to_string(realm).expect("encode realm"),
                serde_json::to_string(service).expect("encode service"),
                serde_json::to_string(issuer).expect("encode issuer"),
                yaml_string(&directory.join("token-root.pem")),
            )),
        }
        yaml
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            self.print_log();
        }
    }
}

/// A ureq client for tests: statuses are returned, not turned into errors,
/// no proxy from the environment is used (tests talk to 127.0.0.1 only), and
/// every call has a time limit.
pub fn http_agent(tls_config: Option<ureq::tls::TlsConfig>) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_millis(HTTP_TIMEOUT_MS)));
    if let Some(tls_config) = tls_config {
        config = config.tls_config(tls_config);
    }
    ureq::Agent::new_with_config(config.build())
}

#[derive(Debug)]
enum StartFailure {
    PortTaken,
    Exited(String),
    NotReady,
}

/// Writes the files the config points at, copied into the registry's own
/// directory so that it can restart after the token server or certificates
/// have been dropped.
fn write_auth_files(directory: &Path, options: &RegistryOptions) {
    let write = |name: &str, contents: &str| {
        let path = directory.join(name);
        fs::write(&path, contents)
            .unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
    };
    match &options.auth {
        RegistryAuth::Anonymous => {}
        RegistryAuth::Htpasswd { user, password } => {
            assert!(
                !user.contains(':'),
                "htpasswd user names cannot contain ':'"
            );
            let hash = bcrypt::hash(password, HTPASSWD_BCRYPT_COST).expect("bcrypt the password");
            write("htpasswd", &format!("{user}:{hash}\n"));
        }
        RegistryAuth::Token {
            root_certificate_bundle_pem,
            ..
        } => write("token-root.pem", root_certificate_bundle_pem),
    }
    if let Some(tls) = &options.tls {
        write("tls-server.pem", tls.certificates.server_certificate_pem());
        write("tls-server-key.pem", tls.certificates.server_key_pem());
        write("tls-client-ca.pem", tls.certificates.ca_certificate_pem());
    }
    File::create(directory.join("registry.log")).expect("create the registry log");
}

/// Binds `127.0.0.1:0` and releases the port for the registry to take.
fn free_loopback_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// A YAML double-quoted scalar; JSON string syntax is a subset of it.
fn yaml_string(path: &Path) -> String {
    serde_json::to_string(path.to_str().expect("temporary paths are UTF-8")).expect("encode path")
}
