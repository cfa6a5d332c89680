//! moto's AWS mock server (ECR `GetAuthorizationToken` and friends) behind an in-process
//! counting proxy.
//!
//! Owns the moto process, the proxy that counts and can fail ECR calls, and the environment
//! an AWS SDK needs to talk to it. It must not know imagewatch's ECR provider.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::WorkDir;
use crate::http::{ServerThread, Upstream, answers_http};
use crate::process::{ChildProcess, MOTO_SERVER, find_program, free_port, startup_failure};

/// The `X-Amz-Target` of ECR's GetAuthorizationToken.
pub const GET_AUTHORIZATION_TOKEN_TARGET: &str = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";

/// One AWS API call seen by the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCall {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The `X-Amz-Target` header (JSON 1.1 protocols), if any.
    pub target: Option<String>,
    /// Status answered to the client.
    pub status: u16,
    /// True when the proxy answered an injected failure instead of forwarding.
    pub injected: bool,
}

impl AwsCall {
    /// True for ECR GetAuthorizationToken.
    pub fn is_get_authorization_token(&self) -> bool {
        self.target
            .as_deref()
            .is_some_and(|t| t.ends_with("GetAuthorizationToken"))
    }
}

struct ProxyState {
    upstream: Upstream,
    calls: Mutex<Vec<AwsCall>>,
    auth_token_faults: Mutex<VecDeque<u16>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running `moto_server` on 127.0.0.1 with a counting proxy in front (both on OS-picked
/// ports); killed on drop.
///
/// Why the proxy: moto keeps no per-call log a test can rely on, and tests must assert how
/// often imagewatch asks ECR for a token (caching, half-life refresh, fallback on errors).
pub struct Moto {
    proxy: ServerThread,
    state: Arc<ProxyState>,
    moto_port: u16,
    child: ChildProcess,
    _work_dir: WorkDir,
}

impl std::fmt::Debug for Moto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moto")
            .field("endpoint", &self.endpoint_url())
            .field("moto", &self.direct_url())
            .field("pid", &self.child.id())
            .finish()
    }
}

impl Moto {
    /// The account moto answers for (set explicitly through `MOTO_ACCOUNT_ID`).
    pub const ACCOUNT_ID: &'static str = "123456789012";
    /// The region the environment from [`aws_env`](Self::aws_env) selects.
    pub const REGION: &'static str = "us-east-1";

    /// Starts `moto_server -H 127.0.0.1 -p PORT` (log in `work_dir/moto*/moto.log`) and the
    /// proxy, and waits until moto answers HTTP.
    ///
    /// # Panics
    /// When `moto_server` is missing (install PyPI `moto[server]`) or does not answer within
    /// 15 s, with the log tail.
    pub fn start(work_dir: &WorkDir) -> Moto {
        let binary = find_program(MOTO_SERVER);
        let dir = work_dir.fresh_dir("moto");
        let log = dir.join("moto.log");
        let mut last_reason = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let mut cmd = std::process::Command::new(&binary);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("MOTO_ACCOUNT_ID", Self::ACCOUNT_ID)
                .env("PYTHONUNBUFFERED", "1");
            let mut child = ChildProcess::spawn(cmd, MOTO_SERVER, &log);
            let url = format!("http://127.0.0.1:{port}/");
            match child.try_wait_ready(&mut || answers_http(&url, None)) {
                Ok(()) => {
                    let state = Arc::new(ProxyState {
                        upstream: Upstream::new(&format!("http://127.0.0.1:{port}"), false),
                        calls: Mutex::new(Vec::new()),
                        auth_token_faults: Mutex::new(VecDeque::new()),
                    });
                    let router = Router::new().fallback(forward).with_state(state.clone());
                    let proxy = ServerThread::spawn("moto-proxy", router);
                    return Moto {
                        proxy,
                        state,
                        moto_port: port,
                        child,
                        _work_dir: work_dir.clone(),
                    };
                }
                Err(reason) => {
                    child.kill();
                    last_reason = reason;
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if !text.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        startup_failure("moto", MOTO_SERVER, &last_reason, &log)
    }

    /// The endpoint to give the AWS SDK: the counting proxy, `http://127.0.0.1:PORT`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.proxy.addr())
    }

    /// An AWS SDK configuration that reaches this moto through the counting proxy with test
    /// keys (moto accepts any), as a caller that was given explicit configuration would.
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        let keys = aws_credential_types::Credentials::new("testing", "testing", None, None, "test-support-moto");
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .endpoint_url(self.endpoint_url())
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(keys))
            .build()
    }

    /// moto itself, bypassing the counter.
    pub fn direct_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.moto_port)
    }

    /// Every call that went through the proxy, in order.
    pub fn calls(&self) -> Vec<AwsCall> {
        lock(&self.state.calls).clone()
    }

    /// How many ECR GetAuthorizationToken calls reached the proxy (including injected
    /// failures).
    pub fn get_authorization_token_calls(&self) -> usize {
        lock(&self.state.calls)
            .iter()
            .filter(|c| c.is_get_authorization_token())
            .count()
    }

    /// Forgets the recorded calls.
    pub fn clear(&self) {
        lock(&self.state.calls).clear();
    }

    /// The next `times` GetAuthorizationToken calls are answered by the proxy with `status`
    /// and an AWS JSON error (`ServerException` for 5xx, `ThrottlingException` for 429 and 400,
    /// `AccessDeniedException` otherwise) instead of reaching moto.
    pub fn fail_get_authorization_token(&self, times: usize, status: u16) {
        let mut faults = lock(&self.state.auth_token_faults);
        faults.extend(std::iter::repeat_n(status, times));
    }

    /// The password moto puts in every ECR token: `<account>-auth-token`.
    pub fn expected_password() -> String {
        format!("{}-auth-token", Self::ACCOUNT_ID)
    }

    /// The `authorizationToken` moto answers: base64 of `AWS:<password>`.
    pub fn expected_authorization_token() -> String {
        STANDARD.encode(format!("AWS:{}", Self::expected_password()))
    }

    /// The ECR registry host of the account in `region`
    /// (`123456789012.dkr.ecr.<region>.amazonaws.com`).
    pub fn ecr_host(region: &str) -> String {
        format!("{}.dkr.ecr.{region}.amazonaws.com", Self::ACCOUNT_ID)
    }

    /// Environment for a child process using the AWS SDK against this moto: fixed test
    /// credentials, region, the ECR endpoint override, and no config files or instance
    /// metadata from the machine.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("AWS_SESSION_TOKEN", "testing".to_string()),
            ("AWS_REGION", Self::REGION.to_string()),
            ("AWS_DEFAULT_REGION", Self::REGION.to_string()),
            ("AWS_ENDPOINT_URL_ECR", self.endpoint_url()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
            ("AWS_CONFIG_FILE", "/dev/null".to_string()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

fn aws_error(status: u16) -> Response {
    let kind = match status {
        500..=599 => "ServerException",
        429 | 400 => "ThrottlingException",
        _ => "AccessDeniedException",
    };
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({"__type": kind, "message": "injected by test-support"});
    (code, [("content-type", "application/x-amz-json-1.1")], body.to_string()).into_response()
}

async fn forward(State(state): State<Arc<ProxyState>>, req: Request) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut call = AwsCall {
        method: req.method().to_string(),
        path,
        target,
        status: 0,
        injected: false,
    };
    if call.is_get_authorization_token()
        && let Some(status) = lock(&state.auth_token_faults).pop_front()
    {
        call.status = status;
        call.injected = true;
        lock(&state.calls).push(call);
        return aws_error(status);
    }

    let response = state.upstream.forward(req).await.unwrap_or_else(|refusal| refusal);
    call.status = response.status().as_u16();
    lock(&state.calls).push(call);
    response
}
