//! The conformance suite every flavour runs, through the real `RegistryClient`, the provider
//! the host maps to, and (for the refresh check) the real `watcher::Watcher`.
//!
//! Each check answers `Ok(note)` or `Err(failure)`; it must not start components (that is
//! `flavours`) nor print (that is the matrix).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use base64::Engine as _;
use refresh::{DockerConfig, DockerRefresher};
use registry_core::{EngineAuthSource, ImageReference, RegistryError};
use test_support::{ImageSpec, ManifestFormat, OCI_INDEX, WorkDir, build_image, build_multi_arch, skopeo};
use tokio::runtime::Runtime;
use watcher::{
    ImageStatus, RefreshError, RefreshEvent, RefreshOutcome, Refresher, RegistrySource, WatchSet, Watcher,
    WatcherConfig,
};

use super::flavours::{Access, Flavour};

/// The checks, in matrix column order.
pub const CHECKS: [&str; 9] = [
    "digest-oci",
    "digest-docker-v2",
    "digest-index",
    "private-no-creds",
    "wrong-creds",
    "push-one-tick",
    "engine-payload",
    "engine-pull",
    "signed",
];

/// A check's verdict.
#[derive(Clone, Debug)]
pub enum Verdict {
    Pass(String),
    Fail(String),
    /// Nothing to verify on this flavour (e.g. credentials on an anonymous registry).
    NotApplicable(String),
}

pub struct Ctx<'a> {
    pub flavour: &'a Flavour,
    pub wd: &'a WorkDir,
    pub rt: &'a Runtime,
}

/// Runs check `name` on a flavour.
pub fn run(name: &str, ctx: &Ctx<'_>) -> Verdict {
    let outcome = match name {
        "digest-oci" => digest(ctx, Kind::Oci),
        "digest-docker-v2" => digest(ctx, Kind::DockerV2),
        "digest-index" => digest(ctx, Kind::Index),
        "private-no-creds" => refused(ctx, Access::Missing),
        "wrong-creds" => refused(ctx, Access::Wrong),
        "push-one-tick" => push_one_tick(ctx),
        "engine-payload" => engine_payload(ctx),
        "engine-pull" => engine_pull(ctx),
        "signed" => signed(ctx),
        other => Err(format!("unknown check {other}")),
    };
    match outcome {
        Ok(Some(note)) => Verdict::Pass(note),
        Ok(None) if name == "engine-pull" => Verdict::NotApplicable(format!(
            "the Engine would have to trust the test CA for {}'s realm",
            ctx.flavour.name
        )),
        Ok(None) => Verdict::NotApplicable(format!("{} has no authentication", ctx.flavour.name)),
        Err(failure) => Verdict::Fail(failure),
    }
}

type CheckResult = Result<Option<String>, String>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Oci,
    DockerV2,
    Index,
}

fn parse(reference: &str) -> Result<ImageReference, String> {
    reference.parse().map_err(|e| format!("{reference}: {e}"))
}

fn as_ref(creds: &Option<(String, String)>) -> Option<(&str, &str)> {
    creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
}

/// Pushes `layout`-like content with skopeo and returns (reference, skopeo's digest).
fn push(ctx: &Ctx<'_>, repository: &str, content: &str, kind: Kind) -> Result<(String, String, String), String> {
    let f = ctx.flavour;
    let layout = match kind {
        Kind::Index => build_multi_arch(ctx.wd, &ImageSpec::with_content(content)),
        _ => build_image(ctx.wd, &ImageSpec::with_content(content)),
    };
    let format = if kind == Kind::DockerV2 {
        ManifestFormat::DockerV2
    } else {
        ManifestFormat::Oci
    };
    let reference = f.image_ref(repository, "latest");
    let creds = f.push_creds();
    let pushed = skopeo::push(&layout, &reference, format, as_ref(&creds), &f.skopeo_tls);
    let inspected = skopeo::inspect_digest(&reference, as_ref(&creds), &f.skopeo_tls);
    if pushed != inspected {
        return Err(format!(
            "skopeo pushed {pushed} but inspects {inspected} for {reference}"
        ));
    }
    if kind == Kind::Index && (layout.media_type != OCI_INDEX || layout.digest != inspected) {
        return Err(format!(
            "the multi-arch tag answers {inspected}, not the index {} ({})",
            layout.digest, layout.media_type
        ));
    }
    Ok((reference, inspected, layout.digest))
}

fn digest(ctx: &Ctx<'_>, kind: Kind) -> CheckResult {
    let f = ctx.flavour;
    let label = match kind {
        Kind::Oci => "oci",
        Kind::DockerV2 => "docker",
        Kind::Index => "index",
    };
    let repository = format!("{}/{label}", f.name);
    let (reference, skopeo_digest, _) = push(ctx, &repository, &format!("{} {label} v1", f.name), kind)?;
    let client = f.wired(ctx.rt, Access::Good)?.client;
    let rewrites_before = f.legacy_rewrites();
    let ours = ctx
        .rt
        .block_on(client.manifest_digest(&parse(&reference)?))
        .map_err(|e| format!("imagewatch: {e}"))?;
    if ours.as_str() != skopeo_digest {
        return Err(format!("imagewatch {ours} != skopeo {skopeo_digest} for {reference}"));
    }
    // On gitea-legacy the read must have met the rewritten challenge, or the flavour tests
    // nothing the plain gitea flavour does not.
    if let (Some(before), Some(after)) = (rewrites_before, f.legacy_rewrites())
        && after == before
    {
        return Err(format!(
            "imagewatch read {reference} without meeting the legacy challenge (no 401 rewritten)"
        ));
    }
    Ok(Some(format!("{} = skopeo", ours.short())))
}

/// The private repository read without (or with wrong) credentials must fail with an `auth`
/// error that names the host, and must not print the secret. The same read with good
/// credentials must succeed, so the refusal is about credentials, not a missing tag.
fn refused(ctx: &Ctx<'_>, access: Access) -> CheckResult {
    let f = ctx.flavour;
    let Some(repository) = f.private_repository() else {
        return Ok(None);
    };
    let (reference, skopeo_digest, _) = push(ctx, &repository, &format!("{} private", f.name), Kind::Oci)?;
    let reference = parse(&reference)?;
    let good = f.wired(ctx.rt, Access::Good)?.client;
    let digest = ctx
        .rt
        .block_on(good.manifest_digest(&reference))
        .map_err(|e| format!("with good credentials: {e}"))?;
    if digest.as_str() != skopeo_digest {
        return Err(format!("with good credentials: {digest} != skopeo {skopeo_digest}"));
    }
    let client = f.wired(ctx.rt, access)?.client;
    let error = match ctx.rt.block_on(client.manifest_digest(&reference)) {
        Ok(digest) => return Err(format!("{access:?} credentials still read {reference} ({digest})")),
        Err(error) => error,
    };
    let message = error.to_string();
    if !matches!(error, RegistryError::Auth { .. }) {
        return Err(format!("expected an auth error, got {}: {message}", error.kind()));
    }
    if !message.contains(f.host.as_str()) {
        return Err(format!("the auth error does not name the host {}: {message}", f.host));
    }
    // The wrong password is `wrong-<secret>`, so this also catches it being printed.
    if let Some(secret) = f.secret()
        && message.contains(&secret)
    {
        return Err(format!("the auth error prints the password: {message}"));
    }
    Ok(Some(message))
}

/// Counts refreshes (the matrix's `Refresher`).
#[derive(Debug, Default)]
struct CountingRefresher {
    calls: AtomicUsize,
    events: Mutex<Vec<RefreshEvent>>,
}

#[async_trait]
impl Refresher for CountingRefresher {
    fn name(&self) -> &'static str {
        "counting"
    }

    async fn refresh(&self, event: &RefreshEvent) -> Result<RefreshOutcome, RefreshError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(event.clone());
        Ok(RefreshOutcome::new("counted"))
    }
}

/// Seed with one tick, push a new version, and ONE tick refreshes exactly once (a third tick
/// then sees it unchanged and refreshes nothing).
fn push_one_tick(ctx: &Ctx<'_>) -> CheckResult {
    let f = ctx.flavour;
    let repository = format!("{}/watched", f.name);
    let (reference, v1, _) = push(ctx, &repository, &format!("{} watched v1", f.name), Kind::Oci)?;
    let image = parse(&reference)?;
    let client = f.wired(ctx.rt, Access::Good)?.client;
    let refresher = Arc::new(CountingRefresher::default());
    let mut set = WatchSet::new();
    set.add_image(image.clone()).map_err(|e| e.to_string())?;
    let config = WatcherConfig {
        concurrency: 1,
        state_file: None,
        ..WatcherConfig::default()
    };
    let mut watcher = Watcher::new(
        set,
        Arc::new(RegistrySource::new(Arc::new(client))),
        refresher.clone(),
        config,
    )
    .map_err(|e| e.to_string())?;

    let seeded = ctx.rt.block_on(watcher.tick());
    match seeded.status_of(&image) {
        Some(ImageStatus::Seeded { digest }) if digest.as_str() == v1 => {}
        other => return Err(format!("first tick: expected seeded {v1}, got {other:?}")),
    }
    let (_, v2, _) = push(ctx, &repository, &format!("{} watched v2", f.name), Kind::Oci)?;
    if v2 == v1 {
        return Err("the second push did not move the digest".into());
    }
    let mark = f.registry.mark();
    let exchanges_before = f.token.as_ref().map(|t| t.exchange_count());
    let moved = ctx.rt.block_on(watcher.tick());
    let reads = f.registry.requests_since(&mark).manifest_reads();
    let exchanges = match (&f.token, exchanges_before) {
        (Some(token), Some(before)) => format!(", {} token exchange(s)", token.exchange_count() - before),
        _ => String::new(),
    };
    match moved.status_of(&image) {
        Some(ImageStatus::Refreshed { old, new, .. }) if old.as_str() == v1 && new.as_str() == v2 => {}
        other => return Err(format!("second tick: expected refreshed {v1} -> {v2}, got {other:?}")),
    }
    let after_one = refresher.calls.load(Ordering::SeqCst);
    let quiet = ctx.rt.block_on(watcher.tick());
    let after_two = refresher.calls.load(Ordering::SeqCst);
    if !matches!(quiet.status_of(&image), Some(ImageStatus::Unchanged { .. })) {
        return Err(format!(
            "third tick: expected unchanged, got {:?}",
            quiet.status_of(&image)
        ));
    }
    if after_one != 1 || after_two != 1 {
        return Err(format!(
            "refresher called {after_one} time(s) by the moving tick, {after_two} in all; expected exactly 1"
        ));
    }
    let events = refresher
        .events
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let event_host = events.first().map(|e| e.host.to_string()).unwrap_or_default();
    if event_host != f.host.as_str() {
        return Err(format!("the refresh event names host {event_host}, not {}", f.host));
    }
    Ok(Some(format!(
        "seeded, pushed, 1 tick -> 1 refresh ({reads} manifest read(s) at the registry{exchanges} in that tick)"
    )))
}

/// The trust gate on this flavour: an unsigned move is held (`unverified`), the same digest
/// signed (by `openssl`, in cosign's legacy layout, pushed by skopeo with the flavour's
/// credentials) is refreshed to at the next tick, the signature requests riding the digest
/// check's auth.
fn signed(ctx: &Ctx<'_>) -> CheckResult {
    use test_support::signing::{KeyAlgorithm, SignatureLayer, SigningKey, digest_tag, legacy_signature_layout};
    let f = ctx.flavour;
    let repository = format!("{}/signed", f.name);
    let (reference, v1, _) = push(ctx, &repository, &format!("{} signed v1", f.name), Kind::Oci)?;
    let image = parse(&reference)?;
    let client = Arc::new(f.wired(ctx.rt, Access::Good)?.client);
    let key = SigningKey::generate(ctx.wd, &format!("{}-cosign", f.name), KeyAlgorithm::EcdsaP256);
    let public = trust::PublicKey::load(key.public_key_path()).map_err(|e| e.to_string())?;
    let refresher = Arc::new(CountingRefresher::default());
    let mut set = WatchSet::new();
    set.add_image(image.clone()).map_err(|e| e.to_string())?;
    let mut watcher = Watcher::new(
        set,
        Arc::new(RegistrySource::new(client.clone())),
        refresher.clone(),
        WatcherConfig::default(),
    )
    .map_err(|e| e.to_string())?
    .with_gate(Arc::new(SignedBy(trust::Verifier::new(client.clone()), vec![public])));
    ctx.rt.block_on(watcher.tick());
    let (_, v2, _) = push(ctx, &repository, &format!("{} signed v2", f.name), Kind::Oci)?;
    let held = ctx.rt.block_on(watcher.tick());
    match held.status_of(&image) {
        Some(ImageStatus::Unverified { new, .. }) if new.as_str() == v2 => {}
        other => return Err(format!("unsigned {v2}: expected unverified, got {other:?}")),
    }
    let docker_reference = format!("{}/{repository}", f.host);
    let layout = legacy_signature_layout(ctx.wd, &[SignatureLayer::new(&key, &docker_reference, &v2)]);
    let creds = f.push_creds();
    let signature_ref = f.image_ref(&repository, &format!("{}.sig", digest_tag(&v2)));
    skopeo::push(
        &layout,
        &signature_ref,
        ManifestFormat::Oci,
        as_ref(&creds),
        &f.skopeo_tls,
    );
    let before = client.stats().snapshot();
    let moved = ctx.rt.block_on(watcher.tick());
    let spent = client.stats().snapshot().since(&before);
    match moved.status_of(&image) {
        Some(ImageStatus::Refreshed { old, new, .. }) if old.as_str() == v1 && new.as_str() == v2 => {}
        other => return Err(format!("signed {v2}: expected refreshed, got {other:?}")),
    }
    let verified = refresher
        .events
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .first()
        .and_then(|event| event.verification.clone());
    if verified.is_none() {
        return Err("the refresh event carries no verification".into());
    }
    Ok(Some(format!(
        "unsigned held, signed refreshed ({} signature request(s), {} token exchange(s) in that tick)",
        spent.artifact_gets, spent.token_requests
    )))
}

/// The trust crate's verifier as a gate requiring one of its keys.
#[derive(Debug)]
struct SignedBy(trust::Verifier, Vec<trust::PublicKey>);

#[async_trait]
impl watcher::Gate for SignedBy {
    async fn admit(&self, image: &ImageReference, digest: &registry_core::Digest) -> watcher::GateVerdict {
        match self.0.verify(image, digest, &self.1).await {
            Ok(verification) => watcher::GateVerdict::Admit(Some(watcher::Attestation {
                key_fingerprint: verification.key_fingerprint,
                found: verification.location.to_string(),
            })),
            Err(failure) => watcher::GateVerdict::Hold(failure.to_string()),
        }
    }
}

/// The Docker Engine `X-Registry-Auth` payload from the provider carries the flavour's host,
/// user and the password the registry accepts, and its redacted form hides that password.
fn engine_payload(ctx: &Ctx<'_>) -> CheckResult {
    let f = ctx.flavour;
    let engine_auth = f.wired(ctx.rt, Access::Good)?.engine_auth();
    let payload = ctx
        .rt
        .block_on(engine_auth.payload(&f.host))
        .map_err(|e| format!("engine credentials: {e}"))?;
    let Some(auth) = payload else {
        if f.has_auth() {
            return Err(format!("the wiring has no Engine credentials for {}", f.host));
        }
        return Ok(Some("no credentials -> no X-Registry-Auth (anonymous pull)".into()));
    };
    // What the refresher sends: `EngineAuths` is its `EngineAuthSource`.
    let header = ctx
        .rt
        .block_on(engine_auth.registry_auth(&f.host))
        .map_err(|e| format!("engine credentials: {e}"))?
        .ok_or("the payload and the refresher's answer disagree")?;
    if header.expose() != auth.header_value().expose() {
        return Err("the refresher would send other bytes than the payload".into());
    }
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.expose().trim_end_matches('='))
        .map_err(|e| format!("X-Registry-Auth is not base64url: {e}"))?;
    let json: serde_json::Value =
        serde_json::from_slice(&decoded).map_err(|e| format!("X-Registry-Auth is not JSON: {e}"))?;
    let server = json["serveraddress"].as_str().unwrap_or_default();
    if server != f.host.as_str() {
        return Err(format!("serveraddress {server:?}, expected {}", f.host));
    }
    let (expected_user, expected_password) = f.push_creds().unwrap_or_default();
    if json["username"].as_str() != Some(expected_user.as_str()) {
        return Err(format!("username {:?}, expected {expected_user}", json["username"]));
    }
    // The Engine pulls with this password: a wrong one passes every other line here.
    if json["password"].as_str() != Some(expected_password.as_str()) {
        return Err(format!(
            "the payload's password is not the one the registry accepts for {expected_user}"
        ));
    }
    let redacted = auth.redacted_json().to_string();
    if let Some(secret) = f.secret()
        && redacted.contains(&secret)
    {
        return Err("the redacted payload shows the password".into());
    }
    Ok(Some(format!("serveraddress={server} username={expected_user}")))
}

/// The flavours whose registry the Docker Engine reaches directly: htpasswd behind TLS on
/// loopback (the daemon treats 127.0.0.0/8 as an insecure registry, so it accepts the test CA's
/// certificate) and the anonymous one. Token flavours would need the daemon to trust the test
/// CA for the realm too.
const ENGINE_PULL_FLAVOURS: &[&str] = &["basic", "ecr", "anonymous"];

/// A real `docker pull` through the Docker Engine with the refresher's own pull credentials
/// (the wiring's engine-auth answer, sent as is), from a registry the daemon has no login for:
/// a wrong payload fails the pull.
fn engine_pull(ctx: &Ctx<'_>) -> CheckResult {
    let f = ctx.flavour;
    if !ENGINE_PULL_FLAVOURS.contains(&f.name) {
        return Ok(None);
    }
    let repository = format!("{}/pulled", f.name);
    let (reference, _, _) = push(ctx, &repository, &format!("{} pulled by the engine", f.name), Kind::Oci)?;
    let image = parse(&reference)?;
    let engine_auth = Arc::new(f.wired(ctx.rt, Access::Good)?.engine_auth());
    ctx.rt.block_on(async {
        let refresher = match DockerRefresher::connect(DockerConfig::default(), engine_auth).await {
            Ok(refresher) => refresher,
            Err(error) => return Ok(Some(format!("skipped: no Docker Engine ({error})"))),
        };
        let pulled = refresher.pull(&image).await.map_err(|e| format!("docker pull: {e}"));
        let removed = refresher
            .docker()
            .remove_image(
                &image.name_and_tag(),
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await;
        let id = pulled?;
        if let Err(error) = removed {
            return Err(format!("pulled {id}, but removing it failed: {error}"));
        }
        Ok(Some(format!(
            "the Engine pulled {reference} ({}) with no docker login",
            &id[..19.min(id.len())]
        )))
    })
}
