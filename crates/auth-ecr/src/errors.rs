//! What went wrong with GetAuthorizationToken, said in one line an operator can act on: no
//! AWS credentials (and where they were looked for), access denied (for which account and
//! region), an unknown region, an unreachable endpoint. Built from the SDK's error kinds,
//! `ProvideErrorMetadata::code()` and the credential error types, never from a status alone.
//!
//! Must not: put a secret in a message. Neither the SDK's errors nor the credential providers'
//! carry key material; messages are still cut to one bounded line.

use std::error::Error as StdError;

use aws_config::imds::client::error::ImdsError;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecr::operation::get_authorization_token::GetAuthorizationTokenError;
use registry_core::{AuthError, RegistryHost};

use crate::registry::EcrRegistry;

/// The provider name every ECR error carries.
pub(crate) const PROVIDER: &str = "ecr";

/// The longest detail taken from an underlying error.
const MAX_DETAIL: usize = 400;

/// Where the failed call went: the registry it was for and the API endpoint it was sent to.
#[derive(Clone, Debug)]
pub(crate) struct Target<'a> {
    pub registry: &'a EcrRegistry,
    /// The API endpoint URL, as resolved for the call.
    pub endpoint: &'a str,
    /// Whether the endpoint was configured (`AWS_ENDPOINT_URL_ECR`, `AWS_ENDPOINT_URL`,
    /// a profile's `endpoint_url` or the SDK config) rather than AWS's own for the region.
    pub configured_endpoint: bool,
}

impl Target<'_> {
    /// What to check when a configured endpoint answered something that is not ECR.
    pub(crate) fn endpoint_hint(&self) -> &'static str {
        if self.configured_endpoint {
            "; check that AWS_ENDPOINT_URL_ECR / AWS_ENDPOINT_URL points at an ECR API"
        } else {
            ""
        }
    }
}

pub(crate) fn provider_error(host: &RegistryHost, message: impl Into<String>) -> AuthError {
    AuthError::Provider {
        provider: PROVIDER,
        host: host.to_string(),
        message: message.into(),
    }
}

/// Where the default AWS credential chain looks, for the "no credentials" message.
pub(crate) const CREDENTIAL_SOURCES: &str = "environment (AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY), \
shared profile (AWS_PROFILE in ~/.aws/credentials and ~/.aws/config, or AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE), \
web identity (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN, as EKS IRSA sets), \
ECS container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI / _FULL_URI) \
and EC2 instance metadata (unless AWS_EC2_METADATA_DISABLED=true)";

/// One line describing a failed GetAuthorizationToken call.
pub(crate) fn describe(error: &SdkError<GetAuthorizationTokenError>, target: &Target<'_>) -> String {
    if let Some(credentials) = find_in_chain::<CredentialsError>(error) {
        return describe_credentials(credentials);
    }
    // An SDK config built without any credentials provider fails before dispatch with "no
    // identity resolver"; to the operator that is the same as finding no credentials.
    if chain(error).contains("identity resolver") {
        return format!("no AWS credentials configured; imagewatch looks in the {CREDENTIAL_SOURCES}");
    }
    let registry = target.registry;
    let account = &registry.account;
    let region = &registry.region;
    let endpoint = target.endpoint;
    let timed_out = || {
        format!(
            "the ECR API at {endpoint} did not answer in time (account {account}, region {region}): {}",
            chain(error)
        )
    };
    match error {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            describe_service_error(context.err(), status, target)
        }
        SdkError::TimeoutError(_) => timed_out(),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => timed_out(),
        SdkError::DispatchFailure(_) => {
            let detail = chain(error);
            if !target.configured_endpoint && looks_like_dns_failure(&detail) {
                format!(
                    "cannot resolve the ECR API host of region {region:?} ({endpoint}): is {region:?} a real AWS region? \
                     It comes from the registry host or from IMAGEWATCH_PROVIDERS=HOST=ecr:ACCOUNT:REGION; detail: {detail}"
                )
            } else {
                format!("cannot reach the ECR API at {endpoint} (account {account}, region {region}): {detail}")
            }
        }
        SdkError::ResponseError(context) => format!(
            "the ECR API at {endpoint} answered something that is not a GetAuthorizationToken response \
             (HTTP {}; account {account}, region {region}){}: {}",
            context.raw().status().as_u16(),
            target.endpoint_hint(),
            chain(error)
        ),
        SdkError::ConstructionFailure(_) => format!(
            "cannot build the GetAuthorizationToken request for account {account} in region {region}: {}",
            chain(error)
        ),
        _ => format!(
            "GetAuthorizationToken for account {account} in region {region} failed: {}",
            chain(error)
        ),
    }
}

fn describe_credentials(error: &CredentialsError) -> String {
    match error {
        CredentialsError::CredentialsNotLoaded(_) => {
            format!("no AWS credentials found; tried the {CREDENTIAL_SOURCES}: configure one of them")
        }
        CredentialsError::ProviderTimedOut(timeout) => format!(
            "loading AWS credentials timed out after {:?}: a credential source (instance metadata, the container \
             endpoint, STS for web identity, SSO) did not answer",
            timeout.timeout_duration()
        ),
        // The chain's last source, instance metadata, answered with an error (a host that is
        // not EC2 but where something answers 169.254.169.254, or IMDS hop-limit issues in a
        // container): still "no credentials" to the operator.
        _ if find_in_chain::<ImdsError>(error).is_some() => format!(
            "no AWS credentials found; tried the {CREDENTIAL_SOURCES}; the last, EC2 instance metadata, failed ({}): \
             configure one of them (set AWS_EC2_METADATA_DISABLED=true where there is no instance metadata)",
            chain(error)
        ),
        CredentialsError::InvalidConfiguration(_) => {
            format!("the AWS credential configuration is invalid: {}", chain(error))
        }
        _ => format!("an AWS credential source failed: {}", chain(error)),
    }
}

fn describe_service_error(error: &GetAuthorizationTokenError, status: u16, target: &Target<'_>) -> String {
    let account = &target.registry.account;
    let region = &target.registry.region;
    let code = error.code().unwrap_or("");
    let aws_message = error
        .message()
        .map(|message| format!(": {}", one_line(message)))
        .unwrap_or_default();
    match code {
        "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation" | "UnauthorizedException" => format!(
            "access denied to ecr:GetAuthorizationToken for account {account} in region {region} ({code}{aws_message}); \
             allow ecr:GetAuthorizationToken for the AWS identity (and ecr:BatchGetImage, \
             ecr:GetDownloadUrlForLayer on the repositories it pulls)"
        ),
        "UnrecognizedClientException" | "InvalidClientTokenId" | "InvalidAccessKeyId" => format!(
            "AWS does not recognise the access key ({code}{aws_message}) in region {region}: check the key \
             (AWS_ACCESS_KEY_ID or the profile) and that region {region} is enabled for the account"
        ),
        "InvalidSignatureException" | "SignatureDoesNotMatch" | "IncompleteSignature" => format!(
            "the AWS secret access key does not match the access key ID ({code}): check AWS_SECRET_ACCESS_KEY \
             or the profile"
        ),
        "ExpiredTokenException" | "ExpiredToken" | "RequestExpired" | "TokenRefreshRequired" => format!(
            "the AWS session credentials have expired ({code}): renew them (aws sso login, a new role session) \
             or use a source that refreshes itself (instance or container role, IRSA)"
        ),
        "ThrottlingException" | "Throttling" | "TooManyRequestsException" | "RequestLimitExceeded" => format!(
            "ECR throttled GetAuthorizationToken for account {account} in region {region} ({code}{aws_message})"
        ),
        "" => format!(
            "GetAuthorizationToken for account {account} in region {region} failed with HTTP {status} and no \
             error code{aws_message}"
        ),
        _ => format!(
            "GetAuthorizationToken for account {account} in region {region} failed: {code} (HTTP {status}){aws_message}"
        ),
    }
}

fn looks_like_dns_failure(detail: &str) -> bool {
    let detail = detail.to_ascii_lowercase();
    detail.contains("dns error")
        || detail.contains("failed to lookup address")
        || detail.contains("name or service not known")
}

/// The first error of type `T` in `error`'s source chain (itself included).
fn find_in_chain<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        current = error.source();
    }
    None
}

/// The messages of `error` and its sources on one line, each said once, bounded.
pub(crate) fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(error) = current {
        let message = one_line(&error.to_string());
        if !message.is_empty() && !parts.iter().any(|part| part.contains(&message)) {
            parts.push(message);
        }
        current = error.source();
    }
    let mut joined = parts.join(": ");
    if joined.len() > MAX_DETAIL {
        let mut cut = MAX_DETAIL;
        while !joined.is_char_boundary(cut) {
            cut -= 1;
        }
        joined.truncate(cut);
        joined.push('…');
    }
    joined
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecr::error::{ConnectorError, ErrorMetadata};
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;
    use rstest::rstest;

    fn registry() -> EcrRegistry {
        EcrRegistry {
            account: "123456789012".into(),
            region: "eu-west-1".into(),
            fips: false,
        }
    }

    fn describe_with(error: SdkError<GetAuthorizationTokenError>, configured_endpoint: bool) -> String {
        let registry = registry();
        let target = Target {
            registry: &registry,
            endpoint: "https://api.ecr.eu-west-1.amazonaws.com",
            configured_endpoint,
        };
        describe(&error, &target)
    }

    fn service_error(code: &str, message: &str, status: u16) -> SdkError<GetAuthorizationTokenError> {
        let metadata = ErrorMetadata::builder().code(code).message(message).build();
        SdkError::service_error(
            GetAuthorizationTokenError::generic(metadata),
            Response::new(StatusCode::try_from(status).expect("status"), SdkBody::empty()),
        )
    }

    #[rstest]
    #[case::access_denied(
        "AccessDeniedException",
        400,
        &["access denied to ecr:GetAuthorizationToken", "123456789012", "eu-west-1"]
    )]
    #[case::unknown_key("UnrecognizedClientException", 400, &["does not recognise the access key", "eu-west-1"])]
    #[case::bad_secret("InvalidSignatureException", 400, &["secret access key does not match"])]
    #[case::expired_session("ExpiredTokenException", 400, &["have expired"])]
    #[case::throttled("ThrottlingException", 400, &["throttled"])]
    #[case::other("ServerException", 500, &["ServerException", "HTTP 500", "123456789012"])]
    fn service_errors_name_the_problem(#[case] code: &str, #[case] status: u16, #[case] expected: &[&str]) {
        let message = describe_with(service_error(code, "detail from AWS", status), false);
        for part in expected {
            assert!(message.contains(part), "{message:?} lacks {part:?}");
        }
        assert!(!message.contains('\n'), "{message:?}");
    }

    #[test]
    fn missing_credentials_list_the_sources_tried() {
        let error = SdkError::dispatch_failure(ConnectorError::other(
            Box::new(CredentialsError::not_loaded(
                "no providers in chain provided credentials",
            )),
            None,
        ));
        let message = describe_with(error, false);
        for part in [
            "no AWS credentials found",
            "AWS_ACCESS_KEY_ID",
            "AWS_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
        ] {
            assert!(message.contains(part), "{message:?} lacks {part:?}");
        }
    }

    #[test]
    fn dns_failure_on_the_default_endpoint_questions_the_region() {
        let io = std::io::Error::other("dns error: failed to lookup address information");
        let error = SdkError::dispatch_failure(ConnectorError::io(Box::new(io)));
        let message = describe_with(error, false);
        assert!(message.contains("real AWS region"), "{message}");
    }

    #[test]
    fn refused_connection_names_the_endpoint() {
        let io = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        let error = SdkError::dispatch_failure(ConnectorError::io(Box::new(io)));
        let message = describe_with(error, true);
        assert!(
            message.contains("cannot reach the ECR API at https://api.ecr.eu-west-1.amazonaws.com")
                && message.contains("Connection refused"),
            "{message}"
        );
    }

    #[test]
    fn chain_is_one_bounded_line() {
        let io = std::io::Error::other(format!("line one\nline two {}", "x".repeat(1000)));
        let error = SdkError::<GetAuthorizationTokenError>::dispatch_failure(ConnectorError::io(Box::new(io)));
        let text = chain(&error);
        assert!(!text.contains('\n') && text.chars().count() <= MAX_DETAIL + 1, "{text}");
    }
}
