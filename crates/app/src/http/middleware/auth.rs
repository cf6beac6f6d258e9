//! Bearer API keys scoped to projects; keys are stored as SHA-256 digests.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{header, Request};
use axum::response::{IntoResponse, Response};
use futures::future::{ready, Either, Ready};
use sha2::{Digest, Sha256};
use spool_domain::names::{ProjectId, UserId};
use tower::{Layer, Service};

use super::ProjectFromRequest;
use crate::config::{ApiKeyConfig, ConfigError};
use crate::http::ApiError;

/// The lowercase hex SHA-256 of `secret`: what `http.api_keys[].sha256` holds (the same as
/// `printf %s "$KEY" | sha256sum`).
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Who a request authenticated as, in the request's extensions (with a [`UserId`] of the
/// key's id, which per-user rate limits count).
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    key_id: Arc<str>,
    projects: Arc<[ProjectId]>,
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("key_id", &self.key_id)
            .field("projects", &self.projects)
            .finish()
    }
}

impl Principal {
    /// The key's id from the configuration.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The projects the key may use.
    pub fn projects(&self) -> &[ProjectId] {
        &self.projects
    }

    /// Whether the key may use `project`.
    pub fn may_use(&self, project: &ProjectId) -> bool {
        self.projects.contains(project)
    }

    /// The key's id as a user, for per-user rate limits.
    pub fn user(&self) -> Option<UserId> {
        UserId::parse(self.key_id.as_ref()).ok()
    }
}

struct Key {
    digest: [u8; 32],
    principal: Principal,
}

/// The configured API keys. Cheap to clone.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Arc<[Key]>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| &k.principal))
            .finish()
    }
}

/// Equal without an early exit, so timing does not reveal a matching prefix.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ApiKeys {
    /// Keys from `(id, sha256 digest, projects)`.
    pub fn new(keys: impl IntoIterator<Item = (String, [u8; 32], Vec<ProjectId>)>) -> Self {
        Self {
            keys: keys
                .into_iter()
                .map(|(id, digest, projects)| Key {
                    digest,
                    principal: Principal {
                        key_id: id.into(),
                        projects: projects.into(),
                    },
                })
                .collect(),
        }
    }

    /// The keys of `http.api_keys`.
    ///
    /// # Errors
    /// A digest that is not 64 hex digits, named.
    pub fn from_config(keys: &[ApiKeyConfig]) -> Result<Self, ConfigError> {
        let mut out = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            let digest = k
                .digest()
                .map_err(|m| ConfigError::invalid(format!("http.api_keys[{i}].sha256"), m))?;
            out.push((k.id.clone(), digest, k.projects.clone()));
        }
        Ok(Self::new(out))
    }

    /// Whether no key is configured (then [`AuthLayer`] admits everyone).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The principal whose key is `secret`. Every key is compared, in constant time each.
    pub fn authenticate(&self, secret: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut found = None;
        for k in self.keys.iter() {
            if digests_equal(&k.digest, &digest) && found.is_none() {
                found = Some(k.principal.clone());
            }
        }
        found
    }
}

/// Authenticates `Authorization: Bearer <key>` against [`ApiKeys`] and enforces the key's
/// projects.
///
/// | request | answer |
/// |---|---|
/// | no keys configured | passed through (no [`Principal`]) |
/// | no or a malformed `Authorization` header | 401 `unauthorized` |
/// | an unknown key | 401 `unauthorized` |
/// | a project (see [`ProjectFromRequest`]) the key does not list | 403 `forbidden` |
/// | otherwise | passed through with [`Principal`] and its [`UserId`] in the extensions |
///
/// A project component that is not a valid project name is left to the handler (which
/// answers 400), so malformed names are reported as such.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    keys: ApiKeys,
    project: ProjectFromRequest,
}

impl AuthLayer {
    /// A layer over `keys`, finding the project in `/…/projects/{project}/…` paths.
    pub fn new(keys: ApiKeys) -> Self {
        Self {
            keys,
            project: ProjectFromRequest::default(),
        }
    }

    /// Finds the project of a request with `project` instead.
    pub fn project_from(mut self, project: ProjectFromRequest) -> Self {
        self.project = project;
        self
    }

    fn check<B>(&self, req: &Request<B>) -> Result<Option<Principal>, ApiError> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "missing API key: send `Authorization: Bearer <key>`",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("malformed Authorization header: expected `Bearer <key>`")
            })?;
        let principal = self
            .keys
            .authenticate(token)
            .ok_or_else(|| ApiError::unauthorized("invalid API key"))?;
        if let Some(project) = self.project.project(req.uri()) {
            if let Ok(project) = ProjectId::parse(project) {
                if !principal.may_use(&project) {
                    return Err(ApiError::forbidden(format!(
                        "API key {:?} may not use project {project}",
                        principal.key_id()
                    )));
                }
            }
        }
        Ok(Some(principal))
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match self.layer.check(&req) {
            Ok(principal) => {
                if let Some(p) = principal {
                    if let Some(user) = p.user() {
                        req.extensions_mut().insert(user);
                    }
                    req.extensions_mut().insert(p);
                }
                Either::Left(self.inner.call(req))
            }
            Err(e) => Either::Right(ready(Ok(e.into_response()))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::body::Body;
    use axum::routing::get;
    use axum::{Extension, Router};
    use tower::ServiceExt;

    use super::*;

    fn keys() -> ApiKeys {
        let digest = |s: &str| -> [u8; 32] { Sha256::digest(s.as_bytes()).into() };
        ApiKeys::new([
            (
                "team-a".to_owned(),
                digest("secret-a"),
                vec![ProjectId::parse("a").unwrap()],
            ),
            (
                "team-b".to_owned(),
                digest("secret-b"),
                vec![ProjectId::parse("b").unwrap()],
            ),
        ])
    }

    fn app(keys: ApiKeys) -> Router {
        let who = |p: Option<Extension<Principal>>| async move {
            p.map_or_else(
                || "anonymous".to_owned(),
                |Extension(p)| p.key_id().to_owned(),
            )
        };
        Router::new()
            .route("/v1/projects/{project}/x", get(who))
            .route("/v1/queues", get(who))
            .layer(AuthLayer::new(keys))
    }

    async fn status(keys: ApiKeys, path: &str, auth: Option<&str>) -> (u16, String) {
        let mut req = Request::builder().uri(path);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let res = app(keys)
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let s = res.status().as_u16();
        let body = axum::body::to_bytes(res.into_body(), 4096).await.unwrap();
        (s, String::from_utf8(body.to_vec()).unwrap())
    }

    #[test]
    fn hex_digest_matches_sha256sum() {
        // printf %s secret | sha256sum
        assert_eq!(
            sha256_hex("secret"),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
    }

    #[tokio::test]
    async fn the_auth_matrix() {
        let k = keys();
        assert_eq!(status(k.clone(), "/v1/queues", None).await.0, 401);
        assert_eq!(
            status(k.clone(), "/v1/queues", Some("Bearer nope")).await.0,
            401
        );
        assert_eq!(
            status(k.clone(), "/v1/queues", Some("Basic c2VjcmV0LWE="))
                .await
                .0,
            401
        );
        let (s, body) = status(k.clone(), "/v1/queues", Some("Bearer secret-a")).await;
        assert_eq!((s, body.as_str()), (200, "team-a"));
        let (s, body) = status(k.clone(), "/v1/projects/a/x", Some("bearer secret-a")).await;
        assert_eq!((s, body.as_str()), (200, "team-a"));
        let (s, body) = status(k.clone(), "/v1/projects/b/x", Some("Bearer secret-a")).await;
        assert_eq!(s, 403);
        assert!(body.contains("\"forbidden\""), "{body}");
        assert_eq!(
            status(k, "/v1/projects/b/x", Some("Bearer secret-b"))
                .await
                .0,
            200
        );
    }

    #[tokio::test]
    async fn no_keys_admit_everyone() {
        let (s, body) = status(ApiKeys::default(), "/v1/projects/a/x", None).await;
        assert_eq!((s, body.as_str()), (200, "anonymous"));
    }

    #[test]
    fn config_digests_are_checked() {
        let bad = ApiKeyConfig {
            id: "x".into(),
            sha256: "zz".into(),
            projects: vec![],
        };
        let e = ApiKeys::from_config(&[bad]).unwrap_err();
        assert_eq!(e.setting(), Some("http.api_keys[0].sha256"));
    }
}
