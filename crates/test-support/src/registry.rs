//! The real CNCF distribution registry (Debian's `docker-registry`), started with a config
//! written here, and the request records parsed from its JSON log.
//!
//! Owns the config file (auth modes, TLS, notifications), the process lifecycle (start, kill,
//! restart on the same port and storage) and the log parser. It must not mint tokens (that is
//! [`TokenServer`](crate::TokenServer)) nor push images (that is [`skopeo`](crate::skopeo)).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::http::{READINESS_USER_AGENT, answers_http};
use crate::process::{ChildProcess, DOCKER_REGISTRY, HTPASSWD, find_program, free_port, run_checked, startup_failure};
use crate::{TestCa, TokenServer, WorkDir};

/// What a token-mode registry needs to know about its token server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAuth {
    /// The realm URL put into the `Bearer` challenge (the registry never calls it).
    pub realm: String,
    /// The service name: challenge `service=` and the JWT `aud` the registry demands.
    pub service: String,
    /// The JWT `iss` the registry demands.
    pub issuer: String,
    /// PEM bundle of certificates the token signer's `x5c` must chain to.
    pub rootcertbundle: PathBuf,
}

/// How the registry authenticates clients.
#[derive(Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    /// No auth: every request is served.
    Anonymous,
    /// `htpasswd` (bcrypt) users; answers `401` with `Basic realm="<realm>"`.
    Htpasswd {
        /// The realm in the challenge.
        realm: String,
        /// (user, password) pairs.
        users: Vec<(String, String)>,
    },
    /// Distribution token auth; answers `401` with `Bearer realm=..,service=..`.
    Token(TokenAuth),
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryAuth::Anonymous => write!(f, "Anonymous"),
            RegistryAuth::Htpasswd { realm, users } => f
                .debug_struct("Htpasswd")
                .field("realm", realm)
                .field("users", &users.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>())
                .finish(),
            RegistryAuth::Token(t) => f.debug_tuple("Token").field(t).finish(),
        }
    }
}

/// Everything that goes into a registry's config file.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The auth mode.
    pub auth: RegistryAuth,
    /// Serve https with the CA's server certificate (else plain http).
    pub tls: Option<TestCa>,
    /// URL the registry POSTs its notification events to (a webhook receiver).
    pub notifications: Option<String>,
}

impl RegistryConfig {
    /// No auth, plain http, no notifications.
    pub fn anonymous() -> RegistryConfig {
        RegistryConfig {
            auth: RegistryAuth::Anonymous,
            tls: None,
            notifications: None,
        }
    }

    /// htpasswd mode with realm `imagewatch-test` and these users.
    pub fn htpasswd(users: &[(&str, &str)]) -> RegistryConfig {
        RegistryConfig {
            auth: RegistryAuth::Htpasswd {
                realm: "imagewatch-test".to_string(),
                users: users.iter().map(|(u, p)| (u.to_string(), p.to_string())).collect(),
            },
            ..RegistryConfig::anonymous()
        }
    }

    /// Token mode pointing at `server` (realm, service, issuer, rootcertbundle).
    pub fn token(server: &TokenServer) -> RegistryConfig {
        RegistryConfig {
            auth: server.registry_auth(),
            ..RegistryConfig::anonymous()
        }
    }

    /// Any auth mode.
    pub fn with_auth(auth: RegistryAuth) -> RegistryConfig {
        RegistryConfig {
            auth,
            ..RegistryConfig::anonymous()
        }
    }

    /// Serves https with `ca`'s server certificate.
    pub fn tls(mut self, ca: &TestCa) -> RegistryConfig {
        self.tls = Some(ca.clone());
        self
    }

    /// Sends notification events to `url`.
    pub fn notifications(mut self, url: &str) -> RegistryConfig {
        self.notifications = Some(url.to_string());
        self
    }
}

/// A running `docker-registry serve` bound to 127.0.0.1 on an OS-picked port, killed on drop.
///
/// Why the real one: manifest negotiation, digests, challenges and token validation are what
/// imagewatch must get right, and a fake would only echo our own understanding of them.
#[derive(Debug)]
pub struct Registry {
    work_dir: WorkDir,
    config: RegistryConfig,
    dir: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    port: u16,
    child: Option<ChildProcess>,
}

impl Registry {
    /// Writes the config (storage, htpasswd file, TLS, token settings) into a fresh
    /// `registry*/` dir of `work_dir`, starts the registry and waits until `/v2/` answers.
    ///
    /// # Panics
    /// When `docker-registry` (or `htpasswd`) is missing or the registry does not answer within
    /// 15 s, with the package to install and the log tail.
    pub fn start(work_dir: &WorkDir, config: RegistryConfig) -> Registry {
        let binary = find_program(DOCKER_REGISTRY);
        let dir = work_dir.fresh_dir("registry");
        let log_path = dir.join("registry.log");
        let config_path = dir.join("config.yml");
        if let RegistryAuth::Htpasswd { users, .. } = &config.auth {
            write_htpasswd(&dir.join("htpasswd"), users);
        }
        let mut registry = Registry {
            work_dir: work_dir.clone(),
            config,
            dir,
            config_path,
            log_path,
            port: 0,
            child: None,
        };
        let mut last_reason = String::new();
        for _attempt in 0..3 {
            registry.port = free_port();
            registry.write_config();
            match registry.spawn(&binary) {
                Ok(()) => return registry,
                Err(reason) => {
                    let port_race = crate::process::log_tail(&registry.log_path, 5).contains("address already in use");
                    last_reason = reason;
                    if !port_race {
                        break;
                    }
                }
            }
        }
        startup_failure("the registry", DOCKER_REGISTRY, &last_reason, &registry.log_path)
    }

    /// Shorthand: anonymous, plain http.
    pub fn anonymous(work_dir: &WorkDir) -> Registry {
        Registry::start(work_dir, RegistryConfig::anonymous())
    }

    fn spawn(&mut self, binary: &Path) -> Result<(), String> {
        let mut cmd = Command::new(binary);
        cmd.arg("serve").arg(&self.config_path);
        let mut child = ChildProcess::spawn(cmd, DOCKER_REGISTRY, &self.log_path);
        let url = format!("{}/v2/", self.base_url());
        let ca = self.config.tls.as_ref().map(|c| c.ca_cert_pem.clone());
        let result = child.try_wait_ready(&mut || answers_http(&url, ca.as_deref()));
        if result.is_ok() {
            self.child = Some(child);
        }
        result
    }

    fn write_config(&self) {
        let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
        let p = |p: &Path| q(&p.to_string_lossy());
        let mut yaml = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: json\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: imagewatch-test-secret\n",
            storage = p(&self.dir.join("storage")),
            port = self.port,
        );
        if let Some(ca) = &self.config.tls {
            yaml.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                p(&ca.server_cert_path),
                p(&ca.server_key_path)
            ));
        }
        match &self.config.auth {
            RegistryAuth::Anonymous => {}
            RegistryAuth::Htpasswd { realm, .. } => yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: {}\n    path: {}\n",
                q(realm),
                p(&self.dir.join("htpasswd"))
            )),
            RegistryAuth::Token(t) => yaml.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                q(&t.realm),
                q(&t.service),
                q(&t.issuer),
                p(&t.rootcertbundle)
            )),
        }
        if let Some(url) = &self.config.notifications {
            yaml.push_str(&format!(
                "notifications:\n  endpoints:\n    - name: imagewatch-test\n      url: {}\n      \
                 timeout: 2s\n      threshold: 3\n      backoff: 1s\n",
                q(url)
            ));
        }
        self.work_dir.write(&self.config_path, yaml);
    }

    /// `127.0.0.1:PORT`: the host part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` or `https://...` when TLS is on.
    pub fn base_url(&self) -> String {
        let scheme = if self.config.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// `host()/name:tag`, a reference for skopeo or imagewatch.
    pub fn image_ref(&self, name: &str, tag: &str) -> String {
        format!("{}/{name}:{tag}", self.host())
    }

    /// The config it runs with.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// PEM of the CA to trust when TLS is on.
    pub fn ca_pem(&self) -> Option<&str> {
        self.config.tls.as_ref().map(|c| c.ca_cert_pem.as_str())
    }

    /// The JSON log (appended to across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The generated config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Whether the process is running (not stopped, not crashed).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.exited().is_none(),
            None => false,
        }
    }

    /// Kills the registry (SIGKILL, like a crash). The port is then refused; storage is kept.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Starts it again on the SAME port with the same storage and config (stopping it first
    /// if it runs), and waits for `/v2/`.
    ///
    /// # Panics
    /// When it does not come back (e.g. the port was taken meanwhile), with the log tail.
    pub fn restart(&mut self) {
        self.stop();
        let binary = find_program(DOCKER_REGISTRY);
        if let Err(reason) = self.spawn(&binary) {
            startup_failure("the registry (restart)", DOCKER_REGISTRY, &reason, &self.log_path)
        }
    }

    /// Waits until the log has been quiet for 100 ms (at most 2 s): the registry writes a
    /// request's log line right AFTER sending the response, so a client may be faster.
    pub fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        let size = || std::fs::metadata(&self.log_path).map_or(0, |m| m.len());
        let mut last = size();
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(25));
            let now = size();
            if now != last {
                last = now;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= Duration::from_millis(100) {
                return;
            }
        }
    }

    /// Every request the registry served so far (after [`settle`](Self::settle)).
    pub fn requests(&self) -> RequestLog {
        self.settle();
        parse_log(&std::fs::read_to_string(&self.log_path).unwrap_or_default())
    }

    /// A point in the request log; count from it with
    /// [`requests_since`](Self::requests_since). This is the "reset" for exact counts.
    pub fn mark(&self) -> LogMark {
        LogMark(self.requests().records.len())
    }

    /// The requests after `mark`.
    pub fn requests_since(&self, mark: &LogMark) -> RequestLog {
        let mut all = self.requests();
        let start = mark.0.min(all.records.len());
        all.records.drain(..start);
        all
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_htpasswd(path: &Path, users: &[(String, String)]) {
    let binary = find_program(HTPASSWD);
    let mut contents = Vec::new();
    for (user, password) in users {
        let line = run_checked(
            HTPASSWD,
            Command::new(&binary).args(["-Bbn", "-C", "5", user, password]),
        );
        contents.extend_from_slice(String::from_utf8_lossy(&line).trim_end().as_bytes());
        contents.push(b'\n');
    }
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("test-support: cannot write {}: {e}", path.display()));
}

/// A position in a registry's request log (see [`Registry::mark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogMark(usize);

/// One request as the registry logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// URI path (no query).
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// Status answered. For requests refused by auth the registry logs no status: those are
    /// recorded as 401 with `auth_refused` set.
    pub status: u16,
    /// The authenticated user (htpasswd user or token `sub`), if the registry logged one: it
    /// does for repository requests, NOT for the `/v2/` probe.
    pub user: Option<String>,
    /// True when the auth layer refused the request (challenge sent).
    pub auth_refused: bool,
}

impl RequestRecord {
    /// True for the `/v2/` probe.
    pub fn is_ping(&self) -> bool {
        self.path == "/v2/" || self.path == "/v2"
    }

    /// `(repository, reference)` for `/v2/<repo>/manifests/<ref>`.
    pub fn manifest(&self) -> Option<(&str, &str)> {
        let rest = self.path.strip_prefix("/v2/")?;
        let (repo, reference) = rest.rsplit_once("/manifests/")?;
        Some((repo, reference))
    }

    /// The repository this request is about, for `/v2/<repo>/(manifests|blobs|tags)/...`.
    pub fn repository(&self) -> Option<&str> {
        let rest = self.path.strip_prefix("/v2/")?;
        ["/manifests/", "/blobs/", "/tags/"]
            .iter()
            .filter_map(|marker| rest.rfind(marker).map(|i| &rest[..i]))
            .next()
    }
}

/// Requests from a registry's log, with the counts tests assert on.
#[derive(Debug, Clone, Default)]
pub struct RequestLog {
    /// The records, in log order.
    pub records: Vec<RequestRecord>,
}

impl RequestLog {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// No records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Number of `/v2/` probes (any method, any status).
    pub fn pings(&self) -> usize {
        self.records.iter().filter(|r| r.is_ping()).count()
    }

    /// Manifest requests with `method` (e.g. "HEAD"), any repository, any status.
    pub fn manifests(&self, method: &str) -> usize {
        self.records
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.manifest().is_some())
            .count()
    }

    /// Manifest HEAD requests.
    pub fn manifest_heads(&self) -> usize {
        self.manifests("HEAD")
    }

    /// Manifest GET requests.
    pub fn manifest_gets(&self) -> usize {
        self.manifests("GET")
    }

    /// Manifest HEAD + GET requests (what a digest check costs).
    pub fn manifest_reads(&self) -> usize {
        self.manifest_heads() + self.manifest_gets()
    }

    /// Requests refused by the auth layer (401 challenges).
    pub fn auth_refusals(&self) -> usize {
        self.records.iter().filter(|r| r.auth_refused).count()
    }

    /// Only the requests about `repository`.
    pub fn for_repository(&self, repository: &str) -> RequestLog {
        RequestLog {
            records: self
                .records
                .iter()
                .filter(|r| r.repository() == Some(repository))
                .cloned()
                .collect(),
        }
    }

    /// Only the requests matching `keep`.
    pub fn filter(&self, keep: impl Fn(&RequestRecord) -> bool) -> RequestLog {
        RequestLog {
            records: self.records.iter().filter(|r| keep(r)).cloned().collect(),
        }
    }

    /// `METHOD path status` lines, for assertion messages.
    pub fn summary(&self) -> String {
        self.records
            .iter()
            .map(|r| format!("{} {} {}", r.method, r.path, r.status))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Parses distribution's JSON log (`log.formatter: json`).
///
/// Served requests are `msg: "response completed"` (or `"response completed with error"`)
/// with `http.response.status`; requests refused by the auth layer are logged ONLY as
/// `"error authorizing context: ..."` without a status. Lines are joined per
/// `http.request.id`, so a refused request counts once. test-support's own readiness probes
/// (User-Agent [`READINESS_USER_AGENT`]) are left out, so counts are the test's alone.
pub fn parse_log(text: &str) -> RequestLog {
    let mut records: Vec<RequestRecord> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for line in text.lines() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let field = |k: &str| entry.get(k).and_then(|v| v.as_str());
        let msg = field("msg").unwrap_or("");
        let completed = msg.starts_with("response completed");
        let refused = msg.starts_with("error authorizing context");
        if !completed && !refused {
            continue;
        }
        let (Some(method), Some(uri)) = (field("http.request.method"), field("http.request.uri")) else {
            continue;
        };
        if field("http.request.useragent") == Some(READINESS_USER_AGENT) {
            continue;
        }
        let (path, query) = match uri.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (uri.to_string(), None),
        };
        let status = if completed {
            entry
                .get("http.response.status")
                .and_then(serde_json::Value::as_u64)
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(0)
        } else {
            401
        };
        let record = RequestRecord {
            method: method.to_string(),
            path,
            query,
            status,
            user: field("auth.user.name").map(str::to_string),
            auth_refused: refused,
        };
        match field("http.request.id") {
            Some(id) => match by_id.get(id) {
                // A completed entry wins over an auth note for the same request.
                Some(&i) => {
                    if completed {
                        records[i] = record;
                    }
                }
                None => {
                    by_id.insert(id.to_string(), records.len());
                    records.push(record);
                }
            },
            None => records.push(record),
        }
    }
    RequestLog { records }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = r#"{"level":"info","msg":"listening on 127.0.0.1:1"}
{"http.request.id":"a","http.request.method":"GET","http.request.uri":"/v2/","http.response.status":200,"level":"info","msg":"response completed"}
{"http.request.id":"r","http.request.method":"GET","http.request.uri":"/v2/","http.request.useragent":"test-support-readiness-probe","http.response.status":200,"level":"info","msg":"response completed"}
{"http.request.id":"b","http.request.method":"HEAD","http.request.uri":"/v2/org/img/manifests/latest?x=1","level":"error","msg":"error authenticating user \"alice\": authentication failure"}
{"http.request.id":"b","http.request.method":"HEAD","http.request.uri":"/v2/org/img/manifests/latest?x=1","level":"warning","msg":"error authorizing context: basic authentication challenge"}
{"auth.user.name":"alice","http.request.id":"c","http.request.method":"HEAD","http.request.uri":"/v2/org/img/manifests/latest","http.response.status":404,"msg":"response completed with error"}
not json
"#;

    #[test]
    fn log_lines_become_one_record_per_request() {
        let log = parse_log(LOG);
        assert_eq!(log.len(), 3, "{}", log.summary());
        assert_eq!(log.pings(), 1);
        assert_eq!(log.manifest_heads(), 2);
        assert_eq!(log.auth_refusals(), 1);
        assert_eq!(log.records[1].status, 401);
        assert_eq!(log.records[1].query.as_deref(), Some("x=1"));
        assert_eq!(log.records[2].user.as_deref(), Some("alice"));
        assert_eq!(log.records[2].manifest(), Some(("org/img", "latest")));
        assert_eq!(log.for_repository("org/img").len(), 2);
    }
}
