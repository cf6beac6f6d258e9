//! `RateLimiter`: named policies from configuration, one atomic check for all that apply.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use spool_domain::limit::{Cost, Decision, LimitCheck, Policy};
use spool_domain::names::{PolicyName, ProjectId, Subject, UserId};
use spool_domain::ValidationError;
use spool_ports::RateLimitStore;

use super::ServiceError;

/// Whom a policy counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The authenticated user.
    User,
    /// The project the request is about.
    Project,
    /// The client IP address.
    Ip,
}

impl Scope {
    /// `user`, `project` or `ip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::User => "user",
            Scope::Project => "project",
            Scope::Ip => "ip",
        }
    }
}

/// What a policy does while the backend cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Count in a local in-process limiter (default).
    #[default]
    Local,
    /// Admit everything.
    Open,
    /// Refuse everything.
    Closed,
}

impl FailureMode {
    /// `local`, `open` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureMode::Local => "local",
            FailureMode::Open => "open",
            FailureMode::Closed => "closed",
        }
    }
}

/// A configured policy: the limit, whom it counts, and its failure mode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RatePolicy {
    /// The limit.
    pub policy: Policy,
    /// Whom it counts.
    pub scope: Scope,
    /// Behaviour while the backend is down.
    pub failure_mode: FailureMode,
}

/// Who is asking: each policy applies when its scope's subject is present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitRequest {
    /// The authenticated user, if any.
    pub user: Option<UserId>,
    /// The project, if the request is about one.
    pub project: Option<ProjectId>,
    /// The client IP, if known.
    pub ip: Option<IpAddr>,
}

impl RateLimitRequest {
    /// An empty request (no policy applies).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the user.
    pub fn user(mut self, user: UserId) -> Self {
        self.user = Some(user);
        self
    }

    /// Sets the project.
    pub fn project(mut self, project: ProjectId) -> Self {
        self.project = Some(project);
        self
    }

    /// Sets the IP.
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }

    /// The subject `scope` counts, when present.
    pub fn subject(&self, scope: Scope) -> Option<Subject> {
        match scope {
            Scope::User => self.user.clone().map(Subject::User),
            Scope::Project => self.project.clone().map(Subject::Project),
            Scope::Ip => self.ip.map(Subject::Ip),
        }
    }
}

struct Inner {
    store: Arc<dyn RateLimitStore>,
    policies: Vec<RatePolicy>,
}

/// Sliding-window rate limits by named policy. Cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("policies", &self.inner.policies)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter over `store` with `policies`.
    ///
    /// # Errors
    /// `Invalid` when two policies share a name or there are more than 16.
    pub fn new(
        store: Arc<dyn RateLimitStore>,
        policies: Vec<RatePolicy>,
    ) -> Result<Self, ValidationError> {
        if policies.len() > spool_ports::limiter::MAX_CHECKS {
            return Err(ValidationError::new(
                "rate limit policies",
                format!(
                    "{} given; at most {} can be checked together",
                    policies.len(),
                    spool_ports::limiter::MAX_CHECKS
                ),
            ));
        }
        for (i, p) in policies.iter().enumerate() {
            if policies[..i]
                .iter()
                .any(|o| o.policy.name() == p.policy.name())
            {
                return Err(ValidationError::new(
                    "rate limit policies",
                    format!("policy name {} is used twice", p.policy.name()),
                ));
            }
        }
        Ok(Self {
            inner: Arc::new(Inner { store, policies }),
        })
    }

    /// The configured policies, in order.
    pub fn policies(&self) -> &[RatePolicy] {
        &self.inner.policies
    }

    /// The policy called `name`.
    pub fn policy(&self, name: &PolicyName) -> Option<&RatePolicy> {
        self.inner.policies.iter().find(|p| p.policy.name() == name)
    }

    /// The checks of every policy whose subject `req` carries, in policy order.
    pub fn checks_for(&self, req: &RateLimitRequest) -> Vec<LimitCheck> {
        self.inner
            .policies
            .iter()
            .filter_map(|p| {
                req.subject(p.scope)
                    .map(|s| LimitCheck::new(p.policy.clone(), s))
            })
            .collect()
    }

    /// Checks (and when admitted consumes) `cost` against every applicable policy in one
    /// atomic port call. With no applicable policy the request is admitted without a call.
    ///
    /// # Errors
    /// `Invalid` when `cost` exceeds an applicable policy's limit; port errors.
    #[tracing::instrument(name = "limiter.check", skip_all, fields(project = tracing::field::Empty, cost = cost.units(), checks = tracing::field::Empty, allowed = tracing::field::Empty))]
    pub async fn check(
        &self,
        req: &RateLimitRequest,
        cost: Cost,
    ) -> Result<Decision, ServiceError> {
        let checks = self.checks_for(req);
        self.run(req, checks, cost).await
    }

    /// Like [`RateLimiter::check`] but only with the named policies (those whose subject
    /// `req` carries).
    ///
    /// # Errors
    /// `Invalid` for an unknown policy name; as for [`RateLimiter::check`].
    #[tracing::instrument(name = "limiter.check", skip_all, fields(project = tracing::field::Empty, cost = cost.units(), checks = tracing::field::Empty, allowed = tracing::field::Empty))]
    pub async fn check_policies(
        &self,
        names: &[PolicyName],
        req: &RateLimitRequest,
        cost: Cost,
    ) -> Result<Decision, ServiceError> {
        let mut checks = Vec::with_capacity(names.len());
        for name in names {
            let p = self.policy(name).ok_or_else(|| {
                ValidationError::new("policy name", format!("{name} is not configured"))
            })?;
            if let Some(s) = req.subject(p.scope) {
                checks.push(LimitCheck::new(p.policy.clone(), s));
            }
        }
        self.run(req, checks, cost).await
    }

    async fn run(
        &self,
        req: &RateLimitRequest,
        checks: Vec<LimitCheck>,
        cost: Cost,
    ) -> Result<Decision, ServiceError> {
        let span = tracing::Span::current();
        if let Some(p) = &req.project {
            span.record("project", tracing::field::display(p));
        }
        span.record("checks", checks.len());
        if checks.is_empty() {
            span.record("allowed", true);
            return Ok(Decision::combine(Vec::new()));
        }
        let decision = self.inner.store.check(&checks, cost).await?;
        span.record("allowed", decision.allowed);
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use spool_domain::limit::PolicyDecision;
    use spool_ports::PortError;

    use super::*;
    use crate::services::mocks::{rate_policy, unavailable, MockLimiter};

    fn policy(name: &str, scope: Scope, limit: u64) -> RatePolicy {
        rate_policy(name, scope, limit, FailureMode::Local)
    }

    fn policies() -> Vec<RatePolicy> {
        vec![
            policy("per_ip", Scope::Ip, 100),
            policy("per_user", Scope::User, 10),
            policy("per_project", Scope::Project, 1000),
        ]
    }

    fn allowed(checks: &[LimitCheck]) -> Decision {
        Decision::combine(
            checks
                .iter()
                .map(|c| PolicyDecision {
                    policy: c.policy.name().clone(),
                    allowed: true,
                    limit: c.policy.limit(),
                    window: c.policy.window(),
                    remaining: c.policy.limit() - 1,
                    reset_after: c.policy.window(),
                    retry_after: None,
                })
                .collect(),
        )
    }

    #[tokio::test]
    async fn one_port_call_with_every_policy_whose_subject_is_present() {
        let mut mock = MockLimiter::new();
        mock.expect_check()
            .times(1)
            .withf(|checks, cost| {
                let names: Vec<_> = checks.iter().map(|c| c.policy.name().as_str()).collect();
                names == ["per_ip", "per_user"]
                    && checks[0].subject == Subject::Ip("10.0.0.1".parse().unwrap())
                    && checks[1].subject == Subject::User(UserId::parse("u1").unwrap())
                    && *cost == Cost::ONE
            })
            .returning(|checks, _| Ok(allowed(checks)));
        let limiter = RateLimiter::new(Arc::new(mock), policies()).unwrap();
        let req = RateLimitRequest::new()
            .ip("10.0.0.1".parse().unwrap())
            .user(UserId::parse("u1").unwrap());
        let d = limiter.check(&req, Cost::ONE).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.policies.len(), 2);
    }

    #[tokio::test]
    async fn no_applicable_policy_admits_without_a_call() {
        let limiter = RateLimiter::new(Arc::new(MockLimiter::new()), policies()).unwrap();
        let d = limiter
            .check(&RateLimitRequest::new(), Cost::ONE)
            .await
            .unwrap();
        assert!(d.allowed);
        assert!(d.policies.is_empty());
    }

    #[tokio::test]
    async fn named_subsets_and_unknown_names() {
        let mut mock = MockLimiter::new();
        mock.expect_check()
            .times(1)
            .withf(|checks, _| {
                checks.len() == 1 && checks[0].policy.name().as_str() == "per_project"
            })
            .returning(|checks, _| Ok(allowed(checks)));
        let limiter = RateLimiter::new(Arc::new(mock), policies()).unwrap();
        let req = RateLimitRequest::new()
            .project(ProjectId::parse("acme").unwrap())
            .ip("::1".parse().unwrap());
        let d = limiter
            .check_policies(
                &[PolicyName::parse("per_project").unwrap()],
                &req,
                Cost::ONE,
            )
            .await
            .unwrap();
        assert_eq!(d.policies.len(), 1);
        let e = limiter
            .check_policies(&[PolicyName::parse("nope").unwrap()], &req, Cost::ONE)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "invalid");
    }

    #[tokio::test]
    async fn port_errors_keep_their_class() {
        let mut mock = MockLimiter::new();
        mock.expect_check()
            .times(1)
            .returning(|_, _| Err(unavailable()));
        mock.expect_check()
            .times(1)
            .returning(|_, _| Err(PortError::invalid("cost", "too big")));
        let limiter = RateLimiter::new(Arc::new(mock), policies()).unwrap();
        let req = RateLimitRequest::new().ip("10.0.0.1".parse().unwrap());
        assert!(limiter
            .check(&req, Cost::ONE)
            .await
            .unwrap_err()
            .is_transient());
        let e = limiter
            .check(&req, Cost::new(5).unwrap())
            .await
            .unwrap_err();
        assert!(!e.is_transient());
        assert_eq!(e.code(), "invalid");
    }

    #[test]
    fn duplicate_or_too_many_policies_are_refused() {
        let mut dup = policies();
        dup.push(policy("per_ip", Scope::User, 1));
        assert!(RateLimiter::new(Arc::new(MockLimiter::new()), dup).is_err());
        let many: Vec<_> = (0..17)
            .map(|i| policy(&format!("p{i}"), Scope::Ip, 1))
            .collect();
        assert!(RateLimiter::new(Arc::new(MockLimiter::new()), many).is_err());
    }
}
