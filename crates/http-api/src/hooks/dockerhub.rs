//! Docker Hub repository webhooks: `{"push_data": {"tag", "pusher", "pushed_at"},
//! "repository": {"repo_name": "namespace/name", ...}, "callback_url": ...}`. Every Docker Hub
//! webhook is a push. Docker Hub cannot sign, so the endpoint takes a token instead; the
//! `callback_url` is never called (a payload never makes imagewatch contact a URL).

use registry_core::RegistryHost;

use crate::hooks::{PayloadError, Sender, json_object, text};
use crate::named::{HostHint, NamedImage};

pub fn names(body: &[u8]) -> Result<Vec<NamedImage>, PayloadError> {
    let payload = json_object(Sender::Dockerhub, body)?;
    let repository = text(&payload, &["repository", "repo_name"])
        .map(str::to_owned)
        .or_else(|| {
            let namespace = text(&payload, &["repository", "namespace"])?;
            let name = text(&payload, &["repository", "name"])?;
            Some(format!("{namespace}/{name}"))
        });
    let Some(repository) = repository else {
        return Err(PayloadError {
            sender: Sender::Dockerhub.as_str(),
            reason: "no `repository.repo_name`".into(),
        });
    };
    // Official images are `library/<name>` in the registry API.
    let repository = if repository.contains('/') {
        repository
    } else {
        format!("library/{repository}")
    };
    let tag = text(&payload, &["push_data", "tag"]);
    Ok(vec![NamedImage::new(
        HostHint::Only(RegistryHost::docker_hub()),
        &repository,
        tag,
    )])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::user_repository(
        r#"{"push_data":{"tag":"latest","pusher":"me"},"repository":{"repo_name":"me/app","namespace":"me","name":"app"}}"#,
        &["docker.io/me/app:latest"]
    )]
    #[case::official_name(r#"{"push_data":{"tag":"1.27"},"repository":{"repo_name":"nginx"}}"#, &["docker.io/library/nginx:1.27"])]
    #[case::namespace_and_name(r#"{"push_data":{"tag":"v1"},"repository":{"namespace":"me","name":"app"}}"#, &["docker.io/me/app:v1"])]
    #[case::no_tag_is_every_tag(r#"{"push_data":{},"repository":{"repo_name":"me/app"}}"#, &["docker.io/me/app:*"])]
    fn a_push_names_the_repository_and_tag(#[case] body: &str, #[case] expected: &[&str]) {
        assert_eq!(crate::hooks::shown(names(body.as_bytes())), expected);
    }

    #[test]
    fn a_body_without_a_repository_is_an_error() {
        assert!(names(br#"{"push_data":{"tag":"latest"}}"#).is_err());
    }
}
