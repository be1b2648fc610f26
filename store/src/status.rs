//! The status of a workflow, as `dbos.workflow_status.status` spells it.

use std::fmt;
use std::str::FromStr;

/// A workflow's status. Its text form (DBOS's) is written in one place: [`Status::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Waiting on a queue for a node to claim it.
    Enqueued,
    /// Waiting for its delay to pass before it is enqueued.
    Delayed,
    /// Owned by an execution (`owner_xid`) on a node (`executor_id`).
    Pending,
    /// Ended with an output.
    Success,
    /// Ended with an error.
    Error,
    /// Cancelled by a user or by its deadline.
    Cancelled,
    /// Dead-lettered after too many recovery attempts.
    MaxRecoveryAttemptsExceeded,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 7] = [
        Status::Enqueued,
        Status::Delayed,
        Status::Pending,
        Status::Success,
        Status::Error,
        Status::Cancelled,
        Status::MaxRecoveryAttemptsExceeded,
    ];

    /// The status as DBOS writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Enqueued => "ENQUEUED",
            Status::Delayed => "DELAYED",
            Status::Pending => "PENDING",
            Status::Success => "SUCCESS",
            Status::Error => "ERROR",
            Status::Cancelled => "CANCELLED",
            Status::MaxRecoveryAttemptsExceeded => "MAX_RECOVERY_ATTEMPTS_EXCEEDED",
        }
    }

    /// Whether the workflow has ended; a terminal status never changes (except by an explicit
    /// resume, fork or rewind).
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Success
                | Status::Error
                | Status::Cancelled
                | Status::MaxRecoveryAttemptsExceeded
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status text that is not one of DBOS's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown workflow status {0:?}: expected one of ENQUEUED, DELAYED, PENDING, SUCCESS, ERROR, CANCELLED, MAX_RECOVERY_ATTEMPTS_EXCEEDED")]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;

    /// Parses a status, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Status, UnknownStatus> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_text() {
        for st in Status::ALL {
            assert_eq!(st.as_str().parse::<Status>(), Ok(st));
            assert_eq!(st.as_str().to_lowercase().parse::<Status>(), Ok(st));
            let json = serde_json::to_string(&st).expect("serialize");
            assert_eq!(json, format!("\"{}\"", st.as_str()));
        }
        assert!("RUNNING".parse::<Status>().is_err());
        assert!(Status::Cancelled.is_terminal() && !Status::Pending.is_terminal());
    }
}
