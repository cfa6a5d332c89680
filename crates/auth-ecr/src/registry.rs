//! Recognising AWS ECR private registry hosts, so the provider kind and the account and region
//! to ask GetAuthorizationToken with come from the host alone. Lookalikes such as
//! `…amazonaws.com.evil.example` must not match: credentials for ECR are AWS credentials.

use std::fmt;

use registry_core::RegistryHost;

/// An ECR private registry: the account that owns it and the region it lives in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EcrRegistry {
    pub account: String,
    pub region: String,
    /// `dkr.ecr-fips`: the API must be called on its FIPS endpoint too.
    pub fips: bool,
}

/// DNS suffixes of the AWS partitions ECR serves from (amazon-ecr-credential-helper's list).
const ECR_SUFFIXES: &[&str] = &[
    "amazonaws.com",
    "amazonaws.com.cn",
    "amazonaws.eu",
    "on.aws",
    "on.amazonwebservices.com.cn",
    "sc2s.sgov.gov",
    "c2s.ic.gov",
    "cloud.adc-e.uk",
    "csp.hci.ic.gov",
];

impl EcrRegistry {
    /// The account and region of an ECR private registry host, or `None` for any other host.
    pub fn from_host(host: &RegistryHost) -> Option<EcrRegistry> {
        if host.port().is_some() {
            return None;
        }
        let name = host.name();
        let rest = ECR_SUFFIXES
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix).and_then(|rest| rest.strip_suffix('.')))
            .next()?;
        // rest = ACCOUNT.dkr(.|-)ecr[-fips].REGION
        let (account, rest) = rest.split_once('.')?;
        let (service, region) = rest.rsplit_once('.')?;
        let fips = match service {
            "dkr.ecr" | "dkr-ecr" => false,
            "dkr.ecr-fips" | "dkr-ecr-fips" => true,
            _ => return None,
        };
        let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
        let region_ok = region.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
            && region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        (account_ok && region_ok).then(|| EcrRegistry {
            account: account.to_owned(),
            region: region.to_owned(),
            fips,
        })
    }
}

impl fmt::Display for EcrRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ECR account {} in {}", self.account, self.region)?;
        if self.fips {
            f.write_str(" (FIPS)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::standard("004947743811.dkr.ecr.us-east-2.amazonaws.com", "004947743811", "us-east-2", false)]
    #[case::fips(
        "004947743811.dkr.ecr-fips.us-gov-west-1.amazonaws.com",
        "004947743811",
        "us-gov-west-1",
        true
    )]
    #[case::dual_stack("004947743811.dkr-ecr.eu-west-1.on.aws", "004947743811", "eu-west-1", false)]
    #[case::dual_stack_fips("004947743811.dkr-ecr-fips.us-east-1.on.aws", "004947743811", "us-east-1", true)]
    #[case::china(
        "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
        "123456789012",
        "cn-north-1",
        false
    )]
    #[case::china_dual_stack(
        "123456789012.dkr-ecr.cn-north-1.on.amazonwebservices.com.cn",
        "123456789012",
        "cn-north-1",
        false
    )]
    #[case::iso(
        "123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov",
        "123456789012",
        "us-iso-east-1",
        false
    )]
    #[case::isob(
        "123456789012.dkr.ecr.us-isob-east-1.sc2s.sgov.gov",
        "123456789012",
        "us-isob-east-1",
        false
    )]
    #[case::eusc(
        "123456789012.dkr.ecr.eusc-de-east-1.amazonaws.eu",
        "123456789012",
        "eusc-de-east-1",
        false
    )]
    #[case::uppercase("004947743811.DKR.ECR.US-EAST-2.AMAZONAWS.COM", "004947743811", "us-east-2", false)]
    fn ecr_hosts_are_recognised(#[case] host: &str, #[case] account: &str, #[case] region: &str, #[case] fips: bool) {
        let ecr = EcrRegistry::from_host(&host.parse().expect("valid host")).expect("is ECR");
        assert_eq!(
            ecr,
            EcrRegistry {
                account: account.into(),
                region: region.into(),
                fips
            }
        );
    }

    #[rstest]
    #[case::lookalike_suffix("004947743811.dkr.ecr.us-east-2.amazonaws.com.fake.example.com")]
    #[case::lookalike_prefix("004947743811.dkr.ecr.us-east-2.notamazonaws.com")]
    #[case::short_account("04947743811.dkr.ecr.us-east-2.amazonaws.com")]
    #[case::letters_in_account("00494774381a.dkr.ecr.us-east-2.amazonaws.com")]
    #[case::wrong_service("004947743811.ecr.us-east-2.amazonaws.com")]
    #[case::extra_label("004947743811.x.dkr.ecr.us-east-2.amazonaws.com")]
    #[case::public("public.ecr.aws")]
    #[case::with_port("004947743811.dkr.ecr.us-east-2.amazonaws.com:443")]
    #[case::ghcr("ghcr.io")]
    #[case::bare_suffix("amazonaws.com")]
    fn other_hosts_are_not_ecr(#[case] host: &str) {
        assert_eq!(EcrRegistry::from_host(&host.parse().expect("valid host")), None);
    }
}
