//! `imagewatch verify REF --key PATH`: whether the digest a reference points at now (or the one
//! it pins) carries a cosign signature by one of the keys, found as the watcher finds it (the
//! legacy `.sig` tag, then OCI referrers). Exit 0 verified, 1 not verified (and why), 2 bad input.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use registry_core::ImageReference;
use serde::Serialize;
use trust::{PublicKey, Verifier};

use crate::exit::Failure;
use crate::settings::Settings;
use crate::transport::TransportArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image: `[host[:port]/]path[:tag][@sha256:...]`; a pinned digest is the one verified.
    reference: String,
    /// A cosign public key PEM (`cosign.pub`); repeatable: any of them will do.
    #[arg(long = "key", value_name = "PATH", required = true)]
    keys: Vec<PathBuf>,
    /// Print JSON (`reference`, `digest`, `verified`, `key_fingerprint`, `key`, `found`,
    /// `reason_kind`, `reason`).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    transport: TransportArgs,
}

#[derive(Debug, Default, Serialize)]
struct Answer {
    reference: String,
    digest: String,
    verified: bool,
    key_fingerprint: Option<String>,
    key: Option<String>,
    found: Option<String>,
    /// `no_signature`, `wrong_key`, `other_digest`, `wrong_repository`, `malformed`, `registry`.
    reason_kind: Option<&'static str>,
    reason: Option<String>,
}

pub async fn run(args: Args) -> Result<ExitCode, Failure> {
    let reference: ImageReference = args.reference.trim().parse().map_err(Failure::config)?;
    let keys = args
        .keys
        .iter()
        .map(|path| PublicKey::load(path).map_err(Failure::config))
        .collect::<Result<Vec<_>, _>>()?;
    let settings = Settings::from_env()?;
    let transport = args.transport.transport()?;
    let host = reference.host().clone();
    let client = Arc::new(
        registry_auth::wire(&settings.auth, transport, std::slice::from_ref(&host))
            .await
            .map_err(Failure::config)?
            .client,
    );
    let digest = client.manifest_digest(&reference).await.map_err(Failure::check)?;
    let outcome = Verifier::new(client).verify(&reference, &digest, &keys).await;
    let mut answer = Answer {
        reference: reference.to_string(),
        digest: digest.to_string(),
        ..Answer::default()
    };
    match &outcome {
        Ok(verification) => {
            answer.verified = true;
            answer.key_fingerprint = Some(verification.key_fingerprint.clone());
            answer.key = Some(verification.key_origin.clone());
            answer.found = Some(verification.location.to_string());
        }
        Err(failure) => {
            answer.reason_kind = Some(failure.kind());
            answer.reason = Some(failure.detail().to_owned());
        }
    }
    if args.json {
        let json = serde_json::to_string(&answer).map_err(|e| Failure::Internal(e.to_string()))?;
        println!("{json}");
    } else {
        match &outcome {
            Ok(verification) => {
                println!("verified {} {}", answer.reference, answer.digest);
                println!("key: {} ({})", verification.key_fingerprint, verification.key_origin);
                println!("found: {}", verification.location);
            }
            Err(failure) => println!("not verified {} {}: {failure}", answer.reference, answer.digest),
        }
    }
    Ok(if outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
