//! The operation snapshot and how updates change it.

use serde::{Deserialize, Serialize};

use crate::names::{CorrelationId, OperationId, StepName};
use crate::{Timestamp, ValidationError};

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationState {
    /// Still going.
    Running,
    /// Done; every step complete.
    Succeeded,
    /// Gave up.
    Failed,
    /// Stopped on request.
    Cancelled,
}

impl OperationState {
    /// Whether no further update is accepted.
    pub fn is_terminal(self) -> bool {
        self != OperationState::Running
    }
}

/// One planned step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSpec {
    /// Unique within the plan.
    pub name: StepName,
    /// Relative share of the whole (`1..=10_000`, default 1).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// What a caller asks for when it starts an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationSpec {
    /// The ID; generated when `None`.
    pub id: Option<OperationId>,
    /// Correlation ID, if any.
    pub correlation_id: Option<CorrelationId>,
    /// The plan: `1..=1000` uniquely named steps.
    pub steps: Vec<StepSpec>,
    /// An initial message.
    pub message: Option<String>,
}

/// One step of a running plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Its name.
    pub name: StepName,
    /// Its weight.
    pub weight: u32,
    /// How much of it is done, `0.0..=1.0`.
    pub fraction: f64,
}

/// The snapshot of an operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    /// ID.
    pub id: OperationId,
    /// Correlation ID, if any.
    pub correlation_id: Option<CorrelationId>,
    /// State.
    pub state: OperationState,
    /// Overall percent, derived from the steps (`0.0..=100.0`).
    pub percent: f64,
    /// Latest message.
    pub message: Option<String>,
    /// The plan with each step's fraction.
    pub steps: Vec<Step>,
    /// When it started.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// Which step an update is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepRef {
    /// By name.
    Name(StepName),
    /// By position in the plan (0-based).
    Index(usize),
}

/// One update. Every field is optional; an update with none of them is `Invalid`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProgressUpdate {
    /// The step the fraction applies to. Steps before it are marked complete.
    pub step: Option<StepRef>,
    /// The step's fraction `0.0..=1.0` (default 1.0 when a step is named).
    pub fraction: Option<f64>,
    /// A new message.
    pub message: Option<String>,
    /// A new state; a terminal one ends the operation.
    pub state: Option<OperationState>,
}

/// Why an update was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpdateError {
    /// The update itself is malformed.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The operation already reached a terminal state.
    #[error("operation is already {0:?}; it accepts no further updates")]
    Terminal(OperationState),
}

/// Longest accepted message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4096;

fn check_message(m: &Option<String>) -> Result<(), ValidationError> {
    match m {
        Some(m) if m.len() > MAX_MESSAGE_BYTES => Err(ValidationError::new(
            "message",
            format!(
                "{} bytes exceeds the maximum of {MAX_MESSAGE_BYTES}",
                m.len()
            ),
        )),
        _ => Ok(()),
    }
}

impl Operation {
    /// Most steps in one plan.
    pub const MAX_STEPS: usize = 1000;
    /// Largest step weight.
    pub const MAX_WEIGHT: u32 = 10_000;

    /// A running operation from `spec` with the given ID, at `now`.
    pub fn start(
        id: OperationId,
        spec: OperationSpec,
        now: Timestamp,
    ) -> Result<Self, ValidationError> {
        if spec.steps.is_empty() || spec.steps.len() > Self::MAX_STEPS {
            return Err(ValidationError::new(
                "steps",
                format!(
                    "a plan needs 1..={} steps, got {}",
                    Self::MAX_STEPS,
                    spec.steps.len()
                ),
            ));
        }
        for (i, s) in spec.steps.iter().enumerate() {
            if s.weight == 0 || s.weight > Self::MAX_WEIGHT {
                return Err(ValidationError::new(
                    "steps",
                    format!(
                        "step {} has weight {}; it must be 1..={}",
                        s.name,
                        s.weight,
                        Self::MAX_WEIGHT
                    ),
                ));
            }
            if spec.steps[..i].iter().any(|o| o.name == s.name) {
                return Err(ValidationError::new(
                    "steps",
                    format!("step name {} appears twice", s.name),
                ));
            }
        }
        check_message(&spec.message)?;
        Ok(Self {
            id,
            correlation_id: spec.correlation_id,
            state: OperationState::Running,
            percent: 0.0,
            message: spec.message,
            steps: spec
                .steps
                .into_iter()
                .map(|s| Step {
                    name: s.name,
                    weight: s.weight,
                    fraction: 0.0,
                })
                .collect(),
            created_at: now,
            updated_at: now,
        })
    }

    /// Applies `update` at `now`. Whether it ended the operation is `self.state.is_terminal()`.
    pub fn apply(&mut self, update: &ProgressUpdate, now: Timestamp) -> Result<(), UpdateError> {
        if self.state.is_terminal() {
            return Err(UpdateError::Terminal(self.state));
        }
        if update.step.is_none()
            && update.fraction.is_none()
            && update.message.is_none()
            && update.state.is_none()
        {
            return Err(ValidationError::new(
                "update",
                "names no step, fraction, message or state",
            )
            .into());
        }
        check_message(&update.message)?;
        let fraction = update.fraction.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&fraction) {
            return Err(ValidationError::new(
                "fraction",
                format!("{fraction} is outside 0.0..=1.0"),
            )
            .into());
        }
        let index = match &update.step {
            Some(StepRef::Name(n)) => Some(
                self.steps
                    .iter()
                    .position(|s| &s.name == n)
                    .ok_or_else(|| {
                        ValidationError::new("step", format!("{n} is not a step of this operation"))
                    })?,
            ),
            Some(StepRef::Index(i)) if *i < self.steps.len() => Some(*i),
            Some(StepRef::Index(i)) => {
                return Err(ValidationError::new(
                    "step",
                    format!(
                        "index {i} is outside the plan of {} steps",
                        self.steps.len()
                    ),
                )
                .into())
            }
            None if update.fraction.is_some() => {
                return Err(ValidationError::new("fraction", "a fraction needs a step").into())
            }
            None => None,
        };
        if let Some(i) = index {
            for s in &mut self.steps[..i] {
                s.fraction = 1.0;
            }
            self.steps[i].fraction = fraction;
        }
        if let Some(m) = &update.message {
            self.message = Some(m.clone());
        }
        if let Some(state) = update.state {
            self.state = state;
            if state == OperationState::Succeeded {
                for s in &mut self.steps {
                    s.fraction = 1.0;
                }
            }
        }
        self.percent = percent(&self.steps);
        self.updated_at = now.max(self.updated_at);
        Ok(())
    }
}

/// `100 * Σ(weight·fraction) / Σ weight`, rounded to 0.01.
pub fn percent(steps: &[Step]) -> f64 {
    let total: f64 = steps.iter().map(|s| f64::from(s.weight)).sum();
    if total == 0.0 {
        return 0.0;
    }
    let done: f64 = steps.iter().map(|s| f64::from(s.weight) * s.fraction).sum();
    ((done / total) * 10_000.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(weights: &[u32]) -> OperationSpec {
        OperationSpec {
            id: None,
            correlation_id: None,
            steps: weights
                .iter()
                .enumerate()
                .map(|(i, &w)| StepSpec {
                    name: StepName::parse(format!("s{i}")).unwrap(),
                    weight: w,
                })
                .collect(),
            message: None,
        }
    }

    fn op(weights: &[u32]) -> Operation {
        Operation::start(
            OperationId::parse("op").unwrap(),
            spec(weights),
            Timestamp::EPOCH,
        )
        .unwrap()
    }

    #[test]
    fn weighted_percent() {
        let mut o = op(&[1, 3]);
        o.apply(
            &ProgressUpdate {
                step: Some(StepRef::Index(0)),
                ..Default::default()
            },
            Timestamp::EPOCH,
        )
        .unwrap();
        assert_eq!(o.percent, 25.0);
        o.apply(
            &ProgressUpdate {
                step: Some(StepRef::Index(1)),
                fraction: Some(0.5),
                ..Default::default()
            },
            Timestamp::EPOCH,
        )
        .unwrap();
        assert_eq!(o.percent, 62.5);
    }

    #[test]
    fn terminal_refuses_updates() {
        let mut o = op(&[1]);
        o.apply(
            &ProgressUpdate {
                state: Some(OperationState::Succeeded),
                ..Default::default()
            },
            Timestamp::EPOCH,
        )
        .unwrap();
        assert_eq!(o.percent, 100.0);
        let e = o.apply(
            &ProgressUpdate {
                message: Some("x".into()),
                ..Default::default()
            },
            Timestamp::EPOCH,
        );
        assert_eq!(e, Err(UpdateError::Terminal(OperationState::Succeeded)));
    }

    #[test]
    fn bad_plans_are_invalid() {
        assert!(Operation::start(
            OperationId::parse("o").unwrap(),
            spec(&[]),
            Timestamp::EPOCH
        )
        .is_err());
        assert!(Operation::start(
            OperationId::parse("o").unwrap(),
            spec(&[0]),
            Timestamp::EPOCH
        )
        .is_err());
        let mut dup = spec(&[1, 1]);
        dup.steps[1].name = dup.steps[0].name.clone();
        assert!(Operation::start(OperationId::parse("o").unwrap(), dup, Timestamp::EPOCH).is_err());
    }

    proptest! {
        #[test]
        fn percent_stays_in_bounds_and_never_panics(
            weights in proptest::collection::vec(1u32..100, 1..10),
            updates in proptest::collection::vec((0usize..12, proptest::option::of(-1.0f64..2.0)), 0..20),
        ) {
            let mut o = op(&weights);
            for (i, f) in updates {
                let _ = o.apply(&ProgressUpdate { step: Some(StepRef::Index(i)), fraction: f, ..Default::default() }, Timestamp::EPOCH);
                prop_assert!((0.0..=100.0).contains(&o.percent));
            }
        }
    }
}
