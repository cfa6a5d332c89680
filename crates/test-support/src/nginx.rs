//! An nginx TLS front: one https host:port that routes path prefixes to plain-http upstreams.
//!
//! Owns the nginx config and process. Why: some registries serve the token realm on their own
//! host (`https://host/v2/token`, Gitea) — a registry and a token server on ONE origin over TLS
//! is only possible with a front. It must not know registry or token semantics.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::http::answers_http;
use crate::process::{ChildProcess, NGINX, find_program, free_port, startup_failure};
use crate::{TestCa, WorkDir};

/// A running nginx (single process, `daemon off`) terminating TLS with a [`TestCa`] server
/// certificate on 127.0.0.1; killed on drop.
#[derive(Debug)]
pub struct NginxFront {
    port: u16,
    ca_pem: String,
    access_log: PathBuf,
    child: ChildProcess,
    _work_dir: WorkDir,
}

impl NginxFront {
    /// Starts on a free port. `routes` are `(path prefix, upstream base URL)`, e.g.
    /// `("/v2/token", token.base_url())`, `("/v2/", registry.base_url())`; nginx picks the
    /// longest matching prefix and passes the URI unchanged.
    ///
    /// # Panics
    /// When nginx is missing or does not answer within 15 s, with the log tail.
    pub fn start(work_dir: &WorkDir, ca: &TestCa, routes: &[(&str, &str)]) -> NginxFront {
        NginxFront::start_on(work_dir, ca, free_port(), routes)
    }

    /// Like [`start`](Self::start) on a given port: pick it first with
    /// [`free_port`](crate::free_port) when the upstream's config must name the front's URL
    /// (a registry whose token realm lives on the front).
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_on(work_dir: &WorkDir, ca: &TestCa, port: u16, routes: &[(&str, &str)]) -> NginxFront {
        NginxFront::start_with(work_dir, ca, port, routes, false)
    }

    /// Like [`start`](Self::start), serving HTTP/2 (ALPN `h2`, HTTP/1.1 still offered) as
    /// GHCR, Docker Hub and ECR do: one multiplexed connection instead of a pool.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_http2(work_dir: &WorkDir, ca: &TestCa, routes: &[(&str, &str)]) -> NginxFront {
        NginxFront::start_with(work_dir, ca, free_port(), routes, true)
    }

    fn start_with(work_dir: &WorkDir, ca: &TestCa, port: u16, routes: &[(&str, &str)], http2: bool) -> NginxFront {
        let binary = find_program(NGINX);
        let dir = work_dir.fresh_dir("nginx");
        for sub in ["tmp", "logs"] {
            std::fs::create_dir_all(dir.join(sub))
                .unwrap_or_else(|e| panic!("test-support: mkdir in {}: {e}", dir.display()));
        }
        let error_log = dir.join("logs/error.log");
        let access_log = dir.join("logs/access.log");
        let conf = dir.join("nginx.conf");
        let mut locations = String::new();
        for (prefix, upstream) in routes {
            assert!(
                prefix.starts_with('/'),
                "nginx route prefix must start with '/': {prefix:?}"
            );
            let upstream = upstream.trim_end_matches('/');
            locations.push_str(&format!(
                "    location ^~ {prefix} {{\n      proxy_pass {upstream};\n    }}\n"
            ));
        }
        let d = dir.display();
        let text = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {err} info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             \x20 access_log {acc};\n\
             \x20 client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n\
             \x20 fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n\
             \x20 scgi_temp_path {d}/tmp/scgi;\n\
             \x20 client_max_body_size 0;\n  proxy_http_version 1.1;\n  proxy_buffering off;\n\
             \x20 proxy_request_buffering off;\n  proxy_set_header Host $http_host;\n\
             \x20 proxy_set_header X-Forwarded-Proto $scheme;\n\
             \x20 proxy_set_header X-Forwarded-For $remote_addr;\n\
             \x20 proxy_ssl_verify off;\n\
             \x20 server {{\n    listen 127.0.0.1:{port} ssl{h2};\n    server_name localhost;\n\
             \x20   ssl_certificate {cert};\n    ssl_certificate_key {key};\n{locations}  }}\n}}\n",
            h2 = if http2 { " http2" } else { "" },
            err = error_log.display(),
            acc = access_log.display(),
            cert = ca.server_cert_path.display(),
            key = ca.server_key_path.display(),
        );
        std::fs::write(&conf, text).unwrap_or_else(|e| panic!("test-support: write {}: {e}", conf.display()));
        let mut cmd = Command::new(binary);
        cmd.arg("-p").arg(&dir).arg("-e").arg(&error_log).arg("-c").arg(&conf);
        let mut child = ChildProcess::spawn(cmd, NGINX, &dir.join("logs/stderr.log"));
        let url = format!("https://127.0.0.1:{port}/");
        if let Err(reason) = child.try_wait_ready(&mut || answers_http(&url, Some(&ca.ca_cert_pem))) {
            child.kill();
            startup_failure("the nginx TLS front", NGINX, &reason, &error_log)
        }
        NginxFront {
            port,
            ca_pem: ca.ca_cert_pem.clone(),
            access_log,
            child,
            _work_dir: work_dir.clone(),
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `https://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// `base_url() + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// The CA PEM clients must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// nginx's access log (combined format).
    pub fn access_log(&self) -> &Path {
        &self.access_log
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}
