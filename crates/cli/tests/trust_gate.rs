//! The trust gate as the operator runs it — the real binary — against Debian's real registry,
//! with images pushed by skopeo and signatures made by `openssl` in cosign's layouts: the
//! issue's verdict table through `imagewatch watch --once` and the exec refresher, the cooldown,
//! and `imagewatch verify`'s exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rstest::rstest;
use test_support::signing::{
    KeyAlgorithm, SignatureLayer, SigningKey, dsse_bundle, push_bundle_referrer, push_legacy_signature,
};
use test_support::{ImageSpec, ManifestFormat, Registry, RegistryTls, WorkDir, build_image, skopeo};

const NAME: &str = "org/app";

struct Setup {
    wd: WorkDir,
    registry: Registry,
    reference: String,
    state: PathBuf,
    fired: PathBuf,
    home: PathBuf,
    key: SigningKey,
    other: SigningKey,
}

impl Setup {
    fn new(label: &str) -> Setup {
        let wd = WorkDir::new(label);
        let registry = Registry::anonymous(&wd);
        let reference = registry.image_ref(NAME, "latest");
        let home = wd.fresh_dir("home");
        let key = SigningKey::generate(&wd, "ours", KeyAlgorithm::EcdsaP256);
        let other = SigningKey::generate(&wd, "theirs", KeyAlgorithm::EcdsaP256);
        Setup {
            state: wd.join("state.json"),
            fired: wd.join("fired.log"),
            wd,
            registry,
            reference,
            home,
            key,
            other,
        }
    }

    /// Pushes a distinct image to `org/app:latest`; answers its digest.
    fn push(&self, content: &str) -> String {
        let layout = build_image(&self.wd, &ImageSpec::with_content(content));
        skopeo::push(&layout, &self.reference, ManifestFormat::Oci, None, &RegistryTls::Plain)
    }

    fn sign(&self, key: &SigningKey, digest: &str) {
        let layer = SignatureLayer::new(key, &format!("{}/{NAME}", self.registry.host()), digest);
        push_legacy_signature(&self.registry.base_url(), NAME, digest, &[layer]);
    }

    fn imagewatch(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_imagewatch"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DOCKER_CONFIG", &self.home)
            .env("HOME", &self.home);
        for (name, value) in vars {
            command.env(name, value);
        }
        command.output().expect("binary runs")
    }

    /// `watch --once` with the exec refresher logging each event's digest and verification.
    fn once(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let script = format!(
            "echo \"$IMAGEWATCH_NEW_DIGEST $IMAGEWATCH_VERIFIED_KEY $IMAGEWATCH_VERIFIED_AT\" >> '{}'",
            self.fired.display()
        );
        let state = self.state.display().to_string();
        let mut all = vec![
            "watch",
            "--once",
            "--image",
            &self.reference,
            "--state",
            &state,
            "--refresh",
            "exec",
            "--exec-command",
            "/bin/sh",
            "--exec-arg",
            "-c",
            "--exec-arg",
            &script,
        ];
        all.extend_from_slice(args);
        self.imagewatch(&all, vars)
    }

    fn key_path(&self) -> String {
        self.key.public_key_path().display().to_string()
    }

    fn fired(&self) -> Vec<String> {
        std::fs::read_to_string(&self.fired)
            .map(|text| text.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    fn applied(&self) -> String {
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&self.state).expect("state file")).expect("json");
        state["images"][&self.reference]["digest"]
            .as_str()
            .expect("an applied digest")
            .to_owned()
    }
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn only_digests_signed_by_the_key_over_themselves_are_refreshed_to() {
    let s = Setup::new("trust-watch-verdicts");
    let key = s.key_path();
    let verify = ["--verify-key", key.as_str()];
    let v1 = s.push("one");
    let seeded = s.once(&verify, &[]);
    assert!(seeded.status.success(), "{}", text(&seeded));

    // Signed v2 refreshes, and the event says by which key, found where.
    let v2 = s.push("two");
    s.sign(&s.key, &v2);
    let out = s.once(&verify, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains("refreshed"), "{}", text(&out));
    let fired = s.fired();
    assert_eq!(fired.len(), 1, "{fired:?}");
    let fingerprint = trust::PublicKey::load(s.key.public_key_path())
        .expect("key")
        .fingerprint()
        .to_owned();
    assert_eq!(
        fired[0],
        format!("{v2} {fingerprint} tag {}.sig", v2.replacen(':', "-", 1))
    );
    assert_ne!(v1, v2);

    // Unsigned v3, v4 signed by another key, v4' carrying v2's signature: none refreshes, the
    // applied digest stays v2, and the exit status and report say unverified.
    let v3 = s.push("three");
    let out = s.once(&verify, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stdout(&out).contains("unverified (no signature"), "{}", text(&out));
    assert_eq!(s.applied(), v2);
    let v4 = s.push("four");
    s.sign(&s.other, &v4);
    let out = s.once(&verify, &[]);
    assert!(stdout(&out).contains("unverified (wrong key"), "{}", text(&out));
    let v4b = s.push("four-b");
    let copied = SignatureLayer::new(&s.key, &format!("{}/{NAME}", s.registry.host()), &v2);
    push_legacy_signature(&s.registry.base_url(), NAME, &v4b, &[copied]);
    let out = s.once(&verify, &[]);
    assert!(stdout(&out).contains("unverified (other digest"), "{}", text(&out));
    assert_eq!(s.applied(), v2);
    assert_eq!(
        s.fired().len(),
        1,
        "nothing unverified was refreshed to: {:?}",
        s.fired()
    );
    assert_ne!(v3, v4);

    // v5 signed a moment after its push: the check before the signature holds it, the next
    // one refreshes.
    let v5 = s.push("five");
    let out = s.once(&verify, &[]);
    assert!(stdout(&out).contains("unverified"), "{}", text(&out));
    s.sign(&s.key, &v5);
    let out = s.once(&verify, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(s.applied(), v5);
    let fired: Vec<String> = s
        .fired()
        .iter()
        .map(|line| line.split(' ').next().unwrap_or("").to_owned())
        .collect();
    assert_eq!(fired, vec![v2, v5]);
}

#[test]
fn a_bundle_referrer_verifies_and_the_environment_carries_the_keys() {
    let s = Setup::new("trust-watch-bundle");
    let key = s.key_path();
    s.push("one");
    let seeded = s.once(&[], &[("IMAGEWATCH_VERIFY_KEYS", &key)]);
    assert!(seeded.status.success(), "{}", text(&seeded));
    let v2 = s.push("two");
    let size = skopeo::inspect_raw(&s.reference, None, &RegistryTls::Plain).len();
    let bundle = dsse_bundle(&s.key, &format!("{}/{NAME}", s.registry.host()), &v2);
    push_bundle_referrer(&s.registry.base_url(), NAME, &v2, size, &bundle, &[]);
    let out = s.once(&[], &[("IMAGEWATCH_VERIFY_KEYS", &key)]);
    assert!(out.status.success(), "{}", text(&out));
    let fired = s.fired();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert!(fired[0].starts_with(&format!("{v2} SHA256:")), "{fired:?}");
    assert!(fired[0].contains("referrer sha256:"), "{fired:?}");
}

#[test]
fn a_rule_for_other_images_leaves_this_one_ungated_and_one_for_it_replaces_the_default_key() {
    let s = Setup::new("trust-watch-rules");
    let other_key = s.other.public_key_path().display().to_string();
    let elsewhere = format!("registry.example.com/*={other_key}");
    let here = format!("{}/org/*={other_key}", s.registry.host());
    s.push("one");
    assert!(s.once(&["--verify-image", &elsewhere], &[]).status.success());
    // Not named by any rule and no --verify-key: refreshed without a signature.
    let v2 = s.push("two");
    let out = s.once(&["--verify-image", &elsewhere], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(s.applied(), v2);
    // Named by a rule with the other key: our key's signature is not enough.
    let v3 = s.push("three");
    s.sign(&s.key, &v3);
    let key = s.key_path();
    let out = s.once(&["--verify-key", &key, "--verify-image", &here], &[]);
    assert!(stdout(&out).contains("unverified (wrong key"), "{}", text(&out));
    s.sign(&s.other, &v3);
    let out = s.once(&["--verify-key", &key, "--verify-image", &here], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(s.applied(), v3);
}

#[test]
fn a_digest_replaced_during_its_cooldown_is_never_refreshed_to() {
    let s = Setup::new("trust-watch-cooldown");
    let cooldown = ["--cooldown", "4s"];
    s.push("one");
    assert!(s.once(&cooldown, &[]).status.success());
    let v2 = s.push("two");
    let out = s.once(&cooldown, &[]);
    assert!(stdout(&out).contains("cooling down"), "{}", text(&out));
    std::thread::sleep(Duration::from_millis(1200));
    // Replaced during its cooldown: v3's cooldown starts over, from this check.
    let v3 = s.push("three");
    let out = s.once(&cooldown, &[]);
    assert!(stdout(&out).contains("cooling down"), "{}", text(&out));
    let out = s.once(&cooldown, &[]);
    assert!(
        stdout(&out).contains("cooling down"),
        "v3 has not cooled 4 s yet: {}",
        text(&out)
    );
    // First-seen times are kept to the second, rounded up: wait out the cooldown and that second.
    std::thread::sleep(Duration::from_millis(5200));
    // Each run is a new process: the first-seen time came from the state file.
    let out = s.once(&cooldown, &[]);
    assert!(stdout(&out).contains("refreshed"), "{}", text(&out));
    let fired: Vec<String> = s
        .fired()
        .iter()
        .map(|line| line.split(' ').next().unwrap_or("").to_owned())
        .collect();
    assert_eq!(fired, vec![v3.clone()], "v2 ({v2}) must never be refreshed to");
    assert_eq!(s.applied(), v3);
}

#[rstest]
#[case::signed("signed", 0, "\"verified\":true")]
#[case::unsigned("unsigned", 1, "\"reason_kind\":\"no_signature\"")]
#[case::other_key("other", 1, "\"reason_kind\":\"wrong_key\"")]
#[case::missing_key_file("missing-key", 2, "")]
#[case::unparsable_key_file("bad-key", 2, "")]
#[case::bad_reference("bad-reference", 2, "")]
fn verify_exits_0_verified_1_not_verified_2_bad_input(#[case] case: &str, #[case] code: i32, #[case] json: &str) {
    let s = Setup::new("trust-verify-command");
    let digest = s.push("one");
    match case {
        "signed" => s.sign(&s.key, &digest),
        "other" => s.sign(&s.other, &digest),
        _ => {}
    }
    let bad_key = s.wd.write(
        Path::new("bad.pub"),
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    );
    let key = match case {
        "missing-key" => s.wd.join("absent.pub").display().to_string(),
        "bad-key" => bad_key.display().to_string(),
        _ => s.key_path(),
    };
    let reference = if case == "bad-reference" {
        "Not A Ref".to_owned()
    } else {
        s.reference.clone()
    };
    let out = s.imagewatch(&["verify", &reference, "--key", &key, "--json"], &[]);
    assert_eq!(out.status.code(), Some(code), "{}", text(&out));
    if code == 2 {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        if case != "bad-reference" {
            assert!(stderr.contains(&key), "names the file: {stderr}");
        }
    } else {
        assert!(stdout(&out).contains(json), "{}", text(&out));
        assert!(stdout(&out).contains(&digest), "{}", text(&out));
    }
    if case == "signed" {
        let out = s.imagewatch(&["verify", &reference, "--key", &key], &[]);
        let printed = stdout(&out);
        assert!(printed.contains("key: SHA256:"), "{printed}");
        assert!(
            printed.contains(&format!("found: tag {}.sig", digest.replacen(':', "-", 1))),
            "{printed}"
        );
    }
}

#[test]
fn a_watch_with_an_unusable_key_file_exits_2_naming_it() {
    let s = Setup::new("trust-watch-bad-key");
    let missing = s.wd.join("nope.pub").display().to_string();
    let out = s.once(&["--verify-key", &missing], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&missing),
        "{}",
        text(&out)
    );
}
