//! What an operator configures to give imagewatch credentials for a host, worded per provider
//! kind for the registry client's auth errors. Names the settings; holds no credentials.

use registry_core::RegistryHost;

use crate::kind::ProviderKind;
use crate::vars;

/// The hint an auth error for `host` (served by `kind`) gives.
pub fn auth_hint(kind: &ProviderKind, host: &RegistryHost) -> String {
    match kind {
        ProviderKind::Ghcr => format!(
            "set {} and {} (a token with read:packages), or add credentials for {host} to Docker's config.json",
            vars::GHCR_USER,
            vars::GHCR_TOKEN
        ),
        ProviderKind::Ecr(ecr) => format!(
            "give the AWS credential chain (env, profile, IAM role) ecr:GetAuthorizationToken and pull access on {ecr}"
        ),
        ProviderKind::Generic => format!(
            "add credentials for {host} to Docker's config.json (`docker login {host}`) or set {} and {}",
            vars::REGISTRY_USER,
            vars::REGISTRY_PASSWORD
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::ghcr("ghcr.io", "GHCR_USER")]
    #[case::generic("registry.example.com", "IMAGEWATCH_REGISTRY_USER")]
    #[case::generic_docker_login("registry.example.com", "docker login registry.example.com")]
    #[case::ecr("004947743811.dkr.ecr.us-east-2.amazonaws.com", "AWS")]
    fn auth_hint_says_what_to_configure(#[case] host: &str, #[case] expected: &str) {
        let host: RegistryHost = host.parse().expect("valid");
        let hint = auth_hint(&ProviderKind::detect(&host), &host);
        assert!(hint.contains(expected), "{hint}");
    }
}
