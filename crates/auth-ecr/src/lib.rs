//! auth-ecr: AWS ECR private registries as one more [`TokenProvider`]. ECR has no token
//! realm: the registry takes `Basic base64(AWS:<password>)`, the password coming from the ECR
//! API's `GetAuthorizationToken`. This crate calls that API with AWS credentials from the
//! default chain, caches the answer per registry and hands the same Basic credentials to the
//! registry client and to the Docker Engine.
//!
//! It must not: require static keys, call the API once per check, loop on a stale token, or
//! print a secret.
//!
//! # Configuration
//!
//! - **AWS credentials** come from the AWS SDK's default chain, in its order: the environment
//!   (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), the shared profile
//!   (`AWS_PROFILE`, `~/.aws/credentials`, `~/.aws/config`, or `AWS_SHARED_CREDENTIALS_FILE` /
//!   `AWS_CONFIG_FILE`; SSO and `credential_process` profiles too), web identity
//!   (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`, which EKS IRSA sets), ECS container
//!   credentials and EC2 instance metadata (`AWS_EC2_METADATA_DISABLED=true` turns it off).
//!   No static keys are needed on AWS compute.
//! - **Account and region** come from the registry host
//!   (`ACCOUNT.dkr.ecr.REGION.amazonaws.com`, FIPS `dkr.ecr-fips` hosts call the API's FIPS
//!   endpoint, dual-stack `dkr-ecr` hosts, China and GovCloud partitions). The account is sent
//!   as `registryIds`, so a registry in another account than the credentials' works when that
//!   account's repository policy grants access.
//! - **A mirror or test registry** whose name is not an ECR host is declared with
//!   `IMAGEWATCH_PROVIDERS=HOST=ecr:ACCOUNT:REGION` (parsed by registry-auth);
//!   the caller passes the result to [`EcrProvider::add_registry`].
//! - **The API endpoint** is AWS's for the region unless `AWS_ENDPOINT_URL_ECR` (or
//!   `AWS_ENDPOINT_URL`, or a profile's `endpoint_url`) names another, e.g. a local moto
//!   server; the SDK reads these itself. With a configured endpoint the FIPS and dual-stack
//!   variants are not applied (the SDK refuses to combine them).
//! - **Time limits**: a GetAuthorizationToken attempt may take [`API_ATTEMPT_TIMEOUT`] (10 s)
//!   and a call with its retries [`API_OPERATION_TIMEOUT`] (30 s), unless the SDK
//!   configuration given to [`EcrProvider::with_sdk_config`] sets its own.
//!
//! # Caching
//!
//! One GetAuthorizationToken call per registry (account, region, FIPS) serves every check
//! until the token's half-life (six hours of ECR's twelve); concurrent callers wait for one
//! call. A token whose `expiresAt` is already past on arrival (a skewed clock; moto answers a
//! date in 2015) is used and reused for [`RefreshPolicy::min_reuse`] (five minutes), never
//! fetched per check. When a refresh fails while the cached token is still usable, the token
//! keeps serving and a warning is logged; the API is asked again after
//! [`RefreshPolicy::retry_after_error`] (30 s), and an error with no usable token is repeated
//! for that long without a call. [`TokenProvider::reject`] drops the cached token of a host,
//! unless it was fetched less than `retry_after_error` ago: a registry refusing fresh tokens
//! must not cost an API call per check.

mod errors;
pub mod registry;
pub mod token;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ecr::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_smithy_types::timeout::TimeoutConfig;
use aws_types::service_config::ServiceConfigKey;
use registry_core::{AuthError, AuthScheme, Authorization, Challenge, Credentials, RegistryHost, Scope, TokenProvider};

pub use registry::EcrRegistry;
pub use token::{RefreshPolicy, TokenError};

use errors::{Target, provider_error};

/// Answers ECR registries' challenges with Basic credentials from GetAuthorizationToken.
pub struct EcrProvider {
    sdk: SdkConfig,
    policy: RefreshPolicy,
    /// Hosts declared by the operator; other hosts are recognised by name.
    hosts: RwLock<HashMap<RegistryHost, EcrRegistry>>,
    slots: Mutex<HashMap<EcrRegistry, Arc<Slot>>>,
}

impl fmt::Debug for EcrProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcrProvider")
            .field("endpoint_url", &configured_endpoint(&self.sdk))
            .field("policy", &self.policy)
            .field("hosts", &*read(&self.hosts))
            .finish_non_exhaustive()
    }
}

impl EcrProvider {
    /// A provider with the AWS SDK's default configuration: the default credential chain,
    /// `AWS_ENDPOINT_URL_ECR`, retries and timeouts, which the SDK reads from its environment
    /// and profile (the one configuration imagewatch leaves to a library).
    pub async fn from_default_chain() -> EcrProvider {
        EcrProvider::with_sdk_config(aws_config::defaults(BehaviorVersion::latest()).load().await)
    }

    /// A provider with an explicit SDK configuration (credentials, endpoint, HTTP client). The
    /// region is always the registry's.
    pub fn with_sdk_config(sdk: SdkConfig) -> EcrProvider {
        EcrProvider {
            sdk,
            policy: RefreshPolicy::default(),
            hosts: RwLock::default(),
            slots: Mutex::default(),
        }
    }

    /// Replaces the refresh policy (tests shorten it; the default suits production).
    pub fn with_policy(mut self, policy: RefreshPolicy) -> EcrProvider {
        self.policy = policy;
        self
    }

    /// Declares `host` an ECR registry of `registry`'s account and region (from
    /// `IMAGEWATCH_PROVIDERS=HOST=ecr:ACCOUNT:REGION`), whatever its name.
    pub fn with_registry(self, host: RegistryHost, registry: EcrRegistry) -> EcrProvider {
        self.add_registry(host, registry);
        self
    }

    /// See [`EcrProvider::with_registry`].
    pub fn add_registry(&self, host: RegistryHost, registry: EcrRegistry) {
        write(&self.hosts).insert(host, registry);
    }

    /// The ECR registry `host` stands for: declared, or recognised from an ECR host name.
    pub fn registry_for(&self, host: &RegistryHost) -> Option<EcrRegistry> {
        read(&self.hosts)
            .get(host)
            .cloned()
            .or_else(|| EcrRegistry::from_host(host))
    }

    /// The ECR API endpoint GetAuthorizationToken is sent to for `host`.
    pub async fn api_endpoint(&self, host: &RegistryHost) -> Result<String, AuthError> {
        let registry = self.require_registry(host)?;
        Api::endpoint(&self.sdk, &registry)
            .await
            .map(|(url, _)| url)
            .map_err(|message| provider_error(host, message))
    }

    /// The Basic credentials (`AWS` and the password from GetAuthorizationToken) for `host`,
    /// from the cache while it is fresh.
    pub async fn credentials(&self, host: &RegistryHost) -> Result<Credentials, AuthError> {
        let registry = self.require_registry(host)?;
        let slot = self.slot(&registry);
        if let Some(answer) = slot.decide(Instant::now()) {
            return answer.map_err(|message| provider_error(host, message));
        }
        // One call at a time per registry: whoever waited here finds the fresh token. While a
        // refresh is in flight, a still-usable token answers without waiting for it.
        let _fetching = match slot.fetch.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                if let Some(credentials) = slot.usable(Instant::now()) {
                    return Ok(credentials);
                }
                slot.fetch.lock().await
            }
        };
        if let Some(answer) = slot.decide(Instant::now()) {
            return answer.map_err(|message| provider_error(host, message));
        }
        let result = self.fetch(host, &slot).await;
        slot.settle(host, result, &self.policy, Instant::now())
            .map_err(|message| provider_error(host, message))
    }

    fn require_registry(&self, host: &RegistryHost) -> Result<EcrRegistry, AuthError> {
        let registry = self.registry_for(host).ok_or_else(|| {
            provider_error(
                host,
                format!(
                    "{host} is not an ECR registry host (ACCOUNT.dkr.ecr.REGION.amazonaws.com); for a mirror or \
                     test registry set IMAGEWATCH_PROVIDERS={host}=ecr:ACCOUNT:REGION"
                ),
            )
        })?;
        if registry.region.trim().is_empty() {
            return Err(provider_error(
                host,
                format!(
                    "no AWS region for ECR account {}: name it in the host or in \
                     IMAGEWATCH_PROVIDERS={host}=ecr:ACCOUNT:REGION",
                    registry.account
                ),
            ));
        }
        Ok(registry)
    }

    fn slot(&self, registry: &EcrRegistry) -> Arc<Slot> {
        lock(&self.slots)
            .entry(registry.clone())
            .or_insert_with(|| Arc::new(Slot::new(registry.clone())))
            .clone()
    }

    /// One GetAuthorizationToken call; the error is the one-line message.
    async fn fetch(&self, host: &RegistryHost, slot: &Slot) -> Result<Fetched, String> {
        let api = slot.api.get_or_try_init(|| Api::new(&self.sdk, &slot.registry)).await?;
        let registry = &slot.registry;
        let target = Target {
            registry,
            endpoint: &api.endpoint,
            configured_endpoint: api.configured_endpoint,
        };
        tracing::debug!(%host, account = %registry.account, region = %registry.region, endpoint = %api.endpoint, "calling ECR GetAuthorizationToken");
        // `registryIds` is deprecated by AWS (a token opens every registry the principal may
        // reach) but still honoured; it is sent so the answer is for this account, which
        // cross-account setups have needed.
        #[allow(deprecated)]
        let request = api.client.get_authorization_token().registry_ids(&registry.account);
        let output = request
            .send()
            .await
            .map_err(|error| errors::describe(&error, &target))?;
        let arrived = SystemTime::now();
        let (data, encoded) = output
            .authorization_data()
            .iter()
            .find_map(|data| Some((data, data.authorization_token()?)))
            .ok_or_else(|| {
                format!(
                    "the ECR API at {} answered GetAuthorizationToken for account {} in region {} without an \
                     authorizationToken{}",
                    api.endpoint,
                    registry.account,
                    registry.region,
                    target.endpoint_hint()
                )
            })?;
        let credentials = token::decode(encoded).map_err(|error| {
            format!(
                "ECR answered an unusable token for account {} in region {}: {error}",
                registry.account, registry.region
            )
        })?;
        let expires_at = data.expires_at().and_then(|at| SystemTime::try_from(*at).ok());
        let remaining = expires_at.and_then(|at| at.duration_since(arrived).ok());
        if remaining.is_none() {
            tracing::info!(
                %host,
                account = %registry.account,
                expires_at = ?data.expires_at(),
                reuse_for = ?self.policy.min_reuse,
                "ECR token's expiresAt is missing or already past (clock skew?); using it and reusing it for the minimum interval"
            );
        } else {
            tracing::debug!(%host, account = %registry.account, expires_in = ?remaining, "ECR token fetched");
        }
        Ok(Fetched {
            credentials,
            schedule: self.policy.schedule(remaining),
        })
    }
}

#[async_trait]
impl TokenProvider for EcrProvider {
    /// ECR challenges with Basic; any other challenge is answered with Basic too, since the
    /// registry takes nothing else.
    async fn authorization(
        &self,
        host: &RegistryHost,
        challenge: &Challenge,
        _scopes: &[Scope],
    ) -> Result<Option<Authorization>, AuthError> {
        if challenge.scheme() != &AuthScheme::Basic {
            tracing::debug!(%host, scheme = %challenge.scheme(), "ECR registry sent a non-Basic challenge; answering with Basic");
        }
        let credentials = self.credentials(host).await?;
        Ok(Authorization::from_credentials(&credentials))
    }

    fn reject(&self, host: &RegistryHost, _scopes: &[Scope]) {
        let Some(registry) = self.registry_for(host) else {
            return;
        };
        if let Some(slot) = lock(&self.slots).get(&registry) {
            let mut state = lock(&slot.state);
            let fresh = state
                .token
                .as_ref()
                .is_some_and(|token| token.fetched_at.elapsed() < self.policy.retry_after_error);
            if fresh {
                // A token minted moments ago that the registry refuses will not be accepted
                // either when minted again: asking now would cost an API call per check.
                tracing::warn!(%host, account = %registry.account, "the registry refused a fresh ECR token; keeping it");
                return;
            }
            tracing::debug!(%host, account = %registry.account, "ECR token rejected by the registry; dropping it");
            state.token = None;
            state.failure = None;
        }
    }

    async fn engine_credentials(&self, host: &RegistryHost) -> Result<Option<Credentials>, AuthError> {
        self.credentials(host).await.map(Some)
    }
}

/// The cache and the single-flight lock of one registry.
struct Slot {
    registry: EcrRegistry,
    api: tokio::sync::OnceCell<Api>,
    /// Held while GetAuthorizationToken is in flight.
    fetch: tokio::sync::Mutex<()>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    token: Option<Cached>,
    failure: Option<Failure>,
}

struct Cached {
    credentials: Credentials,
    /// When the API answered: a token rejected sooner than `retry_after_error` after this is
    /// kept, so a registry that keeps refusing costs no API call per check.
    fetched_at: Instant,
    refresh_at: Instant,
    usable_until: Instant,
}

/// The last failed call, repeated without calling until `retry_at`.
struct Failure {
    message: String,
    retry_at: Instant,
}

struct Fetched {
    credentials: Credentials,
    schedule: token::Schedule,
}

impl Slot {
    fn new(registry: EcrRegistry) -> Slot {
        Slot {
            registry,
            api: tokio::sync::OnceCell::new(),
            fetch: tokio::sync::Mutex::new(()),
            state: Mutex::default(),
        }
    }

    /// The answer without calling the API, or `None` when a call is due.
    fn decide(&self, now: Instant) -> Option<Result<Credentials, String>> {
        let state = lock(&self.state);
        let usable = state.token.as_ref().filter(|token| now < token.usable_until);
        if let Some(token) = usable.filter(|token| now < token.refresh_at) {
            return Some(Ok(token.credentials.clone()));
        }
        let failure = state.failure.as_ref().filter(|failure| now < failure.retry_at)?;
        Some(match usable {
            Some(token) => Ok(token.credentials.clone()),
            None => Err(failure.message.clone()),
        })
    }

    /// The cached token if it may still be used, due for refresh or not.
    fn usable(&self, now: Instant) -> Option<Credentials> {
        let state = lock(&self.state);
        state
            .token
            .as_ref()
            .filter(|token| now < token.usable_until)
            .map(|token| token.credentials.clone())
    }

    /// Records a call's outcome and answers with it, falling back to a usable cached token.
    fn settle(
        &self,
        host: &RegistryHost,
        result: Result<Fetched, String>,
        policy: &RefreshPolicy,
        now: Instant,
    ) -> Result<Credentials, String> {
        let mut state = lock(&self.state);
        match result {
            Ok(fetched) => {
                state.failure = None;
                state.token = Some(Cached {
                    credentials: fetched.credentials.clone(),
                    fetched_at: now,
                    refresh_at: now + fetched.schedule.refresh_after,
                    usable_until: now + fetched.schedule.usable_for,
                });
                Ok(fetched.credentials)
            }
            Err(message) => {
                state.failure = Some(Failure {
                    message: message.clone(),
                    retry_at: now + policy.retry_after_error,
                });
                match state.token.as_ref().filter(|token| now < token.usable_until) {
                    Some(token) => {
                        tracing::warn!(
                            %host,
                            account = %self.registry.account,
                            region = %self.registry.region,
                            error = %message,
                            valid_for = ?token.usable_until.saturating_duration_since(now),
                            retry_in = ?policy.retry_after_error,
                            "ECR GetAuthorizationToken failed; still using the cached token"
                        );
                        Ok(token.credentials.clone())
                    }
                    None => {
                        state.token = None;
                        Err(message)
                    }
                }
            }
        }
    }
}

/// How long one GetAuthorizationToken attempt may take, unless the SDK configuration says
/// otherwise: the SDK sets no such limit by itself, and a hanging endpoint must not hold up
/// every check of the registry.
pub const API_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a GetAuthorizationToken call may take with its retries, unless configured.
pub const API_OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The ECR client of one registry and the endpoint it calls.
struct Api {
    client: aws_sdk_ecr::Client,
    endpoint: String,
    configured_endpoint: bool,
}

impl Api {
    async fn new(sdk: &SdkConfig, registry: &EcrRegistry) -> Result<Api, String> {
        let (endpoint, configured) = Api::endpoint(sdk, registry).await?;
        let mut timeouts = sdk
            .timeout_config()
            .cloned()
            .unwrap_or_else(|| TimeoutConfig::builder().build());
        timeouts.take_defaults_from(
            &TimeoutConfig::builder()
                .operation_attempt_timeout(API_ATTEMPT_TIMEOUT)
                .operation_timeout(API_OPERATION_TIMEOUT)
                .build(),
        );
        let mut config = aws_sdk_ecr::config::Builder::from(sdk)
            .region(Region::new(registry.region.clone()))
            .timeout_config(timeouts);
        if configured {
            // The SDK refuses a configured endpoint together with FIPS or dual-stack.
            config = config.use_fips(false).use_dual_stack(false);
        } else if registry.fips {
            config = config.use_fips(true);
        }
        Ok(Api {
            client: aws_sdk_ecr::Client::from_conf(config.build()),
            endpoint,
            configured_endpoint: configured,
        })
    }

    /// The endpoint URL the SDK will call for `registry`, and whether it was configured.
    async fn endpoint(sdk: &SdkConfig, registry: &EcrRegistry) -> Result<(String, bool), String> {
        let configured = configured_endpoint(sdk);
        let mut params = Params::builder().region(registry.region.clone());
        params = match &configured {
            Some(url) => params.endpoint(url.clone()).use_fips(false).use_dual_stack(false),
            None => params
                .use_fips(registry.fips || sdk.use_fips().unwrap_or(false))
                .use_dual_stack(sdk.use_dual_stack().unwrap_or(false)),
        };
        let params = params.build().map_err(|error| {
            format!(
                "region {:?} of ECR account {} is not a valid AWS region name ({error}); expected e.g. us-east-1",
                registry.region, registry.account
            )
        })?;
        let endpoint = DefaultResolver::new()
            .resolve_endpoint(&params)
            .await
            .map_err(|error| {
                format!(
                    "no ECR API endpoint for region {:?} (account {}): {}; expected an AWS region such as us-east-1",
                    registry.region,
                    registry.account,
                    errors::chain(error.as_ref())
                )
            })?;
        Ok((endpoint.url().to_owned(), configured.is_some()))
    }
}

/// The endpoint URL configured for ECR, looked up as the SDK does: the SDK config's own,
/// else `AWS_ENDPOINT_URL_ECR` / a profile's ECR `endpoint_url`, else `AWS_ENDPOINT_URL`.
fn configured_endpoint(sdk: &SdkConfig) -> Option<String> {
    let global = sdk.endpoint_url().map(str::to_owned);
    if sdk.get_origin("endpoint_url").is_client_config() {
        return global;
    }
    let key = ServiceConfigKey::builder()
        .service_id("ECR")
        .env("AWS_ENDPOINT_URL")
        .profile("endpoint_url")
        .build()
        .ok();
    key.and_then(|key| sdk.service_config().and_then(|config| config.load_config(key)))
        .or(global)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn sdk() -> SdkConfig {
        SdkConfig::builder().behavior_version(BehaviorVersion::latest()).build()
    }

    #[rstest]
    #[case::standard(
        "004947743811.dkr.ecr.us-east-2.amazonaws.com",
        "https://api.ecr.us-east-2.amazonaws.com"
    )]
    #[case::fips(
        "004947743811.dkr.ecr-fips.us-gov-west-1.amazonaws.com",
        "https://api.ecr-fips.us-gov-west-1.amazonaws.com"
    )]
    #[case::china(
        "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
        "https://api.ecr.cn-north-1.amazonaws.com.cn"
    )]
    #[tokio::test]
    async fn api_endpoint_follows_the_host(#[case] host: &str, #[case] expected: &str) {
        let provider = EcrProvider::with_sdk_config(sdk());
        let endpoint = provider
            .api_endpoint(&host.parse().expect("valid host"))
            .await
            .expect("resolves");
        assert_eq!(endpoint, expected);
    }

    #[tokio::test]
    async fn configured_endpoint_wins_even_for_fips_hosts() {
        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url("http://127.0.0.1:5999")
            .build();
        let provider = EcrProvider::with_sdk_config(sdk);
        let endpoint = provider
            .api_endpoint(
                &"004947743811.dkr.ecr-fips.us-gov-west-1.amazonaws.com"
                    .parse()
                    .expect("valid"),
            )
            .await
            .expect("resolves");
        assert_eq!(endpoint, "http://127.0.0.1:5999");
    }

    #[tokio::test]
    async fn a_host_that_is_not_ecr_says_how_to_declare_it() {
        let provider = EcrProvider::with_sdk_config(sdk());
        let host: RegistryHost = "127.0.0.1:5000".parse().expect("valid");
        let error = provider.credentials(&host).await.expect_err("not ECR").to_string();
        assert!(
            error.contains("IMAGEWATCH_PROVIDERS=127.0.0.1:5000=ecr:ACCOUNT:REGION"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_invalid_region_is_named() {
        let host: RegistryHost = "127.0.0.1:5000".parse().expect("valid");
        let provider = EcrProvider::with_sdk_config(sdk()).with_registry(
            host.clone(),
            EcrRegistry {
                account: "123456789012".into(),
                region: "not a region!".into(),
                fips: false,
            },
        );
        let error = provider.credentials(&host).await.expect_err("bad region").to_string();
        assert!(
            error.contains("\"not a region!\"") && error.starts_with("ecr credentials"),
            "{error}"
        );
    }

    mod slot {
        use super::*;
        use std::time::Duration;

        const SEC: Duration = Duration::from_secs(1);

        fn policy() -> RefreshPolicy {
            RefreshPolicy {
                min_reuse: 10 * SEC,
                retry_after_error: 3 * SEC,
            }
        }

        fn host() -> RegistryHost {
            "123456789012.dkr.ecr.us-east-1.amazonaws.com".parse().expect("valid")
        }

        fn slot() -> Slot {
            Slot::new(EcrRegistry::from_host(&host()).expect("ECR host"))
        }

        fn fetched(password: &str, remaining: Option<Duration>) -> Result<Fetched, String> {
            Ok(Fetched {
                credentials: Credentials::basic("AWS", password),
                schedule: policy().schedule(remaining),
            })
        }

        fn password(answer: Option<Result<Credentials, String>>) -> Option<Result<String, String>> {
            answer.map(|result| {
                result.map(|credentials| match credentials {
                    Credentials::Basic { password, .. } => password.expose().to_owned(),
                    other => panic!("not basic: {other:?}"),
                })
            })
        }

        #[test]
        fn an_empty_slot_calls() {
            assert!(slot().decide(Instant::now()).is_none());
        }

        #[test]
        fn a_token_serves_until_half_life_then_calls() {
            let slot = slot();
            let t0 = Instant::now();
            let remaining = Some(Duration::from_secs(12 * 3600));
            slot.settle(&host(), fetched("one", remaining), &policy(), t0)
                .expect("stored");
            let half = Duration::from_secs(6 * 3600);
            assert_eq!(password(slot.decide(t0 + half - SEC)), Some(Ok("one".into())));
            assert_eq!(password(slot.decide(t0 + half)), None);
        }

        #[test]
        fn a_past_expiry_serves_for_the_floor() {
            let slot = slot();
            let t0 = Instant::now();
            slot.settle(&host(), fetched("one", None), &policy(), t0)
                .expect("used at once");
            assert_eq!(password(slot.decide(t0 + 9 * SEC)), Some(Ok("one".into())));
            assert_eq!(password(slot.decide(t0 + 10 * SEC)), None);
        }

        #[test]
        fn a_failed_refresh_falls_back_to_the_usable_token_and_waits_before_calling_again() {
            let slot = slot();
            let t0 = Instant::now();
            slot.settle(&host(), fetched("one", None), &policy(), t0)
                .expect("stored");
            // Refresh due at 10 s; usable until 20 s. The call at 11 s fails.
            let t1 = t0 + 11 * SEC;
            let answer = slot.settle(&host(), Err("boom".into()), &policy(), t1);
            assert_eq!(password(Some(answer)), Some(Ok("one".into())));
            // Within retry_after_error: the cached token, no call.
            assert_eq!(password(slot.decide(t1 + 2 * SEC)), Some(Ok("one".into())));
            // After it: a call.
            assert_eq!(password(slot.decide(t1 + 3 * SEC)), None);
            // A success replaces the token and clears the failure.
            let t2 = t1 + 3 * SEC;
            slot.settle(&host(), fetched("two", None), &policy(), t2)
                .expect("stored");
            assert_eq!(password(slot.decide(t2 + SEC)), Some(Ok("two".into())));
        }

        #[test]
        fn a_failure_without_a_usable_token_is_repeated_without_calling() {
            let slot = slot();
            let t0 = Instant::now();
            slot.settle(&host(), fetched("one", None), &policy(), t0)
                .expect("stored");
            // Past usable_until (20 s): the failure is the answer, and the stale token is gone.
            let t1 = t0 + 21 * SEC;
            let answer = slot.settle(&host(), Err("denied".into()), &policy(), t1);
            assert_eq!(answer, Err("denied".into()));
            assert_eq!(password(slot.decide(t1 + SEC)), Some(Err("denied".into())));
            assert_eq!(password(slot.decide(t1 + 3 * SEC)), None);
            assert!(lock(&slot.state).token.is_none());
        }
    }

    #[rstest]
    #[case::defaults_fill_the_gaps(None, Some(API_ATTEMPT_TIMEOUT), Some(API_OPERATION_TIMEOUT))]
    #[case::configured_values_win(
        Some(TimeoutConfig::builder().operation_timeout(Duration::from_secs(3)).build()),
        Some(API_ATTEMPT_TIMEOUT),
        Some(Duration::from_secs(3))
    )]
    #[case::explicitly_disabled_stays_disabled(Some(TimeoutConfig::disabled()), None, None)]
    #[tokio::test]
    async fn api_calls_are_bounded_in_time(
        #[case] configured: Option<TimeoutConfig>,
        #[case] attempt: Option<Duration>,
        #[case] operation: Option<Duration>,
    ) {
        let mut sdk = SdkConfig::builder().behavior_version(BehaviorVersion::latest());
        if let Some(configured) = configured {
            sdk = sdk.timeout_config(configured);
        }
        let registry = EcrRegistry::from_host(&"123456789012.dkr.ecr.us-east-1.amazonaws.com".parse().expect("valid"))
            .expect("ECR host");
        let api = Api::new(&sdk.build(), &registry).await.expect("client");
        let timeouts = api.client.config().timeout_config().expect("timeouts").clone();
        assert_eq!(timeouts.operation_attempt_timeout(), attempt);
        assert_eq!(timeouts.operation_timeout(), operation);
    }

    #[test]
    fn debug_shows_no_credentials() {
        let credentials = aws_sdk_ecr::config::Credentials::new("AKIDEXAMPLE", "s3cr3t-key", None, None, "test");
        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(aws_sdk_ecr::config::SharedCredentialsProvider::new(credentials))
            .build();
        let printed = format!("{:?}", EcrProvider::with_sdk_config(sdk));
        assert!(!printed.contains("s3cr3t-key"), "{printed}");
    }
}
