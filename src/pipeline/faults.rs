//! Test-only fault injection, so tests can make a stage fail or stall on purpose. Read from
//! `TRAWL_TEST_FAULTS` in debug builds only; release builds never inject anything.
//!
//! Format: `;`-separated rules `TARGET:KIND:N`, where TARGET is a stage or a downstream
//! pipeline (`references`, `history`: its attempts count), and KIND is `retryable` (fail with a
//! retryable error on attempts 1..=N), `permanent` (fail for good on attempt N), `sleep`
//! (sleep N milliseconds before the stage's work, on the first attempt only), or `gate`
//! (before the stage's work, on every attempt, wait for the Postgres advisory lock N of the
//! stage's database, and let go of it at once: a test that holds that lock holds the stage
//! at a known point, running, until it lets go).

use crate::domain::Stage;
use crate::domain::pipelines::Pipeline;
use crate::store::Store;

/// What a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Stage(Stage),
    Pipeline(Pipeline),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Retryable { times: u32 },
    Permanent { on_attempt: u32 },
    Sleep { millis: u64 },
    Gate { key: i64 },
}

#[derive(Debug, Clone, Default)]
pub struct Faults {
    rules: Vec<(Target, Fault)>,
}

impl Faults {
    pub fn from_env() -> Faults {
        if cfg!(debug_assertions) {
            std::env::var("TRAWL_TEST_FAULTS")
                .map(|s| Faults::parse(&s))
                .unwrap_or_default()
        } else {
            Faults::default()
        }
    }

    pub fn parse(spec: &str) -> Faults {
        let rules = spec
            .split(';')
            .filter_map(|rule| {
                let mut parts = rule.trim().split(':');
                let target = parts.next()?;
                let stage = Stage::parse(target)
                    .map(Target::Stage)
                    .or_else(|| Pipeline::parse(target).map(Target::Pipeline))?;
                let kind = parts.next()?;
                let n: u64 = parts.next()?.parse().ok()?;
                let fault = match kind {
                    "retryable" => Fault::Retryable { times: n as u32 },
                    "permanent" => Fault::Permanent {
                        on_attempt: n as u32,
                    },
                    "sleep" => Fault::Sleep { millis: n },
                    "gate" => Fault::Gate {
                        key: i64::try_from(n).ok()?,
                    },
                    _ => return None,
                };
                Some((stage, fault))
            })
            .collect();
        Faults { rules }
    }

    /// Applies the rules for `stage` on `attempt` (1-based); a gate waits on `store`.
    pub async fn inject(
        &self,
        store: &Store,
        stage: Stage,
        attempt: u32,
    ) -> Result<(), super::StageError> {
        self.inject_into(store, Target::Stage(stage), attempt).await
    }

    /// Applies the rules for `target` on `attempt` (1-based).
    pub async fn inject_into(
        &self,
        store: &Store,
        target: Target,
        attempt: u32,
    ) -> Result<(), super::StageError> {
        for (s, fault) in &self.rules {
            if *s != target {
                continue;
            }
            match *fault {
                Fault::Retryable { times } if attempt <= times => {
                    return Err(super::StageError::Retryable(format!(
                        "injected retryable fault (attempt {attempt})"
                    )));
                }
                Fault::Permanent { on_attempt } if attempt == on_attempt => {
                    return Err(super::StageError::Permanent(
                        "injected permanent fault".into(),
                    ));
                }
                Fault::Sleep { millis } if attempt == 1 => {
                    tokio::time::sleep(std::time::Duration::from_millis(millis)).await
                }
                Fault::Gate { key } => store.pass_advisory_gate(key).await.map_err(|e| {
                    super::StageError::Retryable(format!("injected gate {key}: {e}"))
                })?,
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_bad_ones_are_dropped() {
        let f = Faults::parse(
            "extract:retryable:2; sync:sleep:500;enrich:permanent:1;bogus:x:1;sync:nope:1;\
             extract:gate:727001;sync:gate:-1;history:permanent:2",
        );
        assert_eq!(
            f.rules,
            vec![
                (Target::Stage(Stage::Extract), Fault::Retryable { times: 2 }),
                (Target::Stage(Stage::Sync), Fault::Sleep { millis: 500 }),
                (
                    Target::Stage(Stage::Enrich),
                    Fault::Permanent { on_attempt: 1 }
                ),
                (Target::Stage(Stage::Extract), Fault::Gate { key: 727001 }),
                (
                    Target::Pipeline(Pipeline::History),
                    Fault::Permanent { on_attempt: 2 }
                ),
            ]
        );
    }
}
