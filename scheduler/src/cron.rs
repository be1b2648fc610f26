//! Cron schedules on `dbos.workflow_schedules`, with DBOS's semantics: each tick enqueues one
//! workflow with the deterministic ID `sched-{schedule}-{tick}`, so however many nodes fire
//! the same tick, its primary key lets exactly one row in. Expressions have six fields
//! (seconds first; a five-field expression runs at second 0) and are read in the schedule's
//! time zone (UTC when unset). A schedule with `automatic_backfill` enqueues every tick missed
//! while no node was up; otherwise only the latest missed tick runs.
//!
//! The scheduled workflow's inputs are `(scheduled_at, context)`: the tick as RFC 3339 UTC
//! text and the schedule's context as JSON.

use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use dbos_store::workflows::ScheduledRun;
use sqlx::{PgConnection, PgPool};

use crate::{Error, INTERNAL_QUEUE};

/// Ticks one schedule enqueues in one sweep at most (a long backfill continues next sweep).
pub const TICKS_PER_SWEEP_MAX: usize = 1_000;

/// A parsed cron expression in its time zone.
#[derive(Clone, Debug)]
pub struct Cron {
    schedule: cron::Schedule,
    tz: chrono_tz::Tz,
}

impl Cron {
    /// Parses `expr` (6 fields, seconds first; or 5 fields) in time zone `tz` (IANA name).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad expression or an unknown time zone.
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Cron, Error> {
        let fields = expr.split_whitespace().count();
        let full = match fields {
            5 => format!("0 {expr}"),
            6 => expr.to_owned(),
            n => {
                return Err(Error::Invalid(format!(
                    "cron expression {expr:?}: expected 6 fields (sec min hour day month weekday) or 5, got {n}"
                )))
            }
        };
        let schedule = cron::Schedule::from_str(&full).map_err(|e| {
            Error::Invalid(format!(
                "cron expression {expr:?}: {}",
                bounds_said_right(&e)
            ))
        })?;
        let tz = match tz {
            None | Some("") => chrono_tz::UTC,
            Some(name) => name.parse().map_err(|_| {
                Error::Invalid(format!(
                    "time zone {name:?}: not an IANA time zone name (e.g. Europe/Paris, UTC)"
                ))
            })?,
        };
        Ok(Cron { schedule, tz })
    }

    /// Ticks after `after` up to and including `until`, at most `max`.
    pub fn ticks(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        max: usize,
    ) -> Vec<DateTime<Utc>> {
        self.schedule
            .after(&after.with_timezone(&self.tz))
            .map(|t| t.with_timezone(&Utc))
            .take_while(|t| *t <= until)
            .take(max)
            .collect()
    }

    /// A tick as DBOS writes it in workflow IDs and `last_fired_at`: Python's `isoformat()` of
    /// the tick in the schedule's time zone (`2026-01-01T09:30:00+01:00`), so a DBOS scheduler
    /// sharing the table computes the same ID for the same tick.
    pub fn iso(&self, tick: DateTime<Utc>) -> String {
        iso(&tick.with_timezone(&self.tz))
    }

    /// The first tick after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .after(&after.with_timezone(&self.tz))
            .next()
            .map(|t| t.with_timezone(&Utc))
    }
}

pub use dbos_store::schedules::Schedule;

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Python's `datetime.isoformat()`: seconds, microseconds only when there are any, `+HH:MM`.
fn iso<Tz: chrono::TimeZone>(t: &DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    if t.timestamp_subsec_micros() == 0 {
        t.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6f%:z").to_string()
    }
}

/// Adds a schedule (it fires from the next tick on).
///
/// 1 round trip.
///
/// # Errors
/// [`Error::Invalid`] for a bad name, expression, time zone or context; [`Error::Conflict`] for
/// a name in use.
pub async fn add(conn: &mut PgConnection, s: &Schedule) -> Result<(), Error> {
    if s.schedule_name.is_empty() || s.schedule_name.len() > 255 {
        return Err(Error::Invalid(
            "schedule name: must be 1 to 255 bytes".into(),
        ));
    }
    Cron::parse(&s.schedule, s.cron_timezone.as_deref())?;
    if let Some(c) = &s.context {
        serde_json::from_str::<serde_json::Value>(c)
            .map_err(|e| Error::Invalid(format!("schedule context: not JSON: {e}")))?;
    }
    if !dbos_store::schedules::insert(conn, s, &iso(&Utc::now())).await? {
        return Err(Error::Conflict(format!(
            "a schedule named {} exists already; `dbos cron rm` removes it",
            dbos_store::limits::shown(&s.schedule_name)
        )));
    }
    Ok(())
}

/// Every schedule, by name.
///
/// # Errors
/// Database errors.
pub async fn list(conn: &mut PgConnection) -> Result<Vec<Schedule>, Error> {
    Ok(dbos_store::schedules::list(conn, false).await?)
}

fn missing(name: &str) -> Error {
    Error::NoSuchSchedule(name.to_owned())
}

/// Pauses (`true`) or resumes a schedule. Once a pause has returned, no tick of the schedule
/// is enqueued (a sweep under way waits for it and finds the schedule paused). A resumed
/// schedule fires from its next tick, or enqueues the missed ones if it backfills.
///
/// # Errors
/// [`Error::NoSuchSchedule`].
pub async fn set_paused(conn: &mut PgConnection, name: &str, paused: bool) -> Result<(), Error> {
    if !dbos_store::schedules::set_paused(conn, name, paused, &iso(&Utc::now())).await? {
        return Err(missing(name));
    }
    Ok(())
}

/// Removes a schedule (runs already enqueued stay; once this returns, none is added).
///
/// # Errors
/// [`Error::NoSuchSchedule`].
pub async fn remove(conn: &mut PgConnection, name: &str) -> Result<(), Error> {
    if !dbos_store::schedules::delete(conn, name).await? {
        return Err(missing(name));
    }
    Ok(())
}

/// The run of schedule `s` for tick `at`, with ID `id`.
fn scheduled_run(s: &Schedule, id: String, at: DateTime<Utc>) -> ScheduledRun {
    let context: serde_json::Value = s
        .context
        .as_deref()
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or(serde_json::Value::Null);
    ScheduledRun {
        workflow_id: id,
        schedule: s.schedule_name.clone(),
        name: s.workflow_name.clone(),
        queue: s
            .queue_name
            .clone()
            .unwrap_or_else(|| INTERNAL_QUEUE.to_owned()),
        inputs: serde_json::json!({"namedArgs": {}, "positionalArgs": [rfc3339(at), context]})
            .to_string(),
    }
}

/// What a sweep did.
#[derive(Clone, Debug, Default)]
pub struct Fired {
    /// Runs newly enqueued.
    pub enqueued: u64,
    /// The next tick of any active schedule.
    pub next: Option<DateTime<Utc>>,
}

/// The cron loop: fires every due tick, wakes the dispatcher when that enqueued work, then
/// sleeps until the next tick (at most a second, to notice new schedules), until `stop`.
pub(crate) async fn run(
    pool: PgPool,
    dispatcher: crate::dispatch::Handle,
    stop: dbos_kernel::CancellationToken,
) -> Result<(), Error> {
    loop {
        let wait = match fire_due(&pool, Utc::now()).await {
            Ok(f) => {
                if f.enqueued > 0 {
                    dispatcher.wake();
                }
                f.next
                    .map(|n| (n - Utc::now()).num_milliseconds().clamp(1, 1_000))
                    .unwrap_or(1_000)
            }
            Err(e) => {
                tracing::warn!(error = %e, "firing cron schedules failed");
                1_000
            }
        };
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(std::time::Duration::from_millis(wait as u64)) => {}
        }
    }
}

/// Enqueues every due tick of every active schedule.
///
/// 2 round trips (read the schedules; enqueue all due runs in one statement).
///
/// # Errors
/// Database errors.
pub async fn fire_due(pool: &PgPool, now: DateTime<Utc>) -> Result<Fired, Error> {
    let mut conn = pool.acquire().await?;
    let schedules = dbos_store::schedules::list(&mut conn, true).await?;
    let mut runs = Vec::new();
    let mut fired = Vec::new();
    let mut next: Option<DateTime<Utc>> = None;
    for s in &schedules {
        let cron = match Cron::parse(&s.schedule, s.cron_timezone.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(schedule = %s.schedule_name, error = %e, "skipping an invalid schedule");
                continue;
            }
        };
        let from = s
            .last_fired_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(now);
        let mut due = cron.ticks(from, now, TICKS_PER_SWEEP_MAX);
        if !s.automatic_backfill && due.len() > 1 {
            due = due.split_off(due.len() - 1);
        }
        if let Some(last) = due.last() {
            fired.push((s.schedule_name.clone(), cron.iso(*last)));
        }
        for t in &due {
            let id = format!("sched-{}-{}", s.schedule_name, cron.iso(*t));
            runs.push(scheduled_run(s, id, *t));
        }
        let after = due.last().copied().unwrap_or(from).max(now);
        if let Some(n) = cron.next_after(after) {
            next = Some(next.map_or(n, |m| m.min(n)));
        }
    }
    let enqueued = if runs.is_empty() {
        0
    } else {
        dbos_store::workflows::enqueue_scheduled(&mut *conn, &runs, &fired).await?
    };
    Ok(Fired { enqueued, next })
}

/// Enqueues one run of a schedule now (`sched-{name}-trigger-{now}`); returns its ID.
///
/// # Errors
/// [`Error::NoSuchSchedule`].
pub async fn trigger(conn: &mut PgConnection, name: &str) -> Result<String, Error> {
    let s = get(conn, name).await?;
    let now = Utc::now();
    let id = format!("sched-{name}-trigger-{}", iso(&now));
    dbos_store::workflows::enqueue_scheduled(conn, &[scheduled_run(&s, id.clone(), now)], &[])
        .await?;
    Ok(id)
}

/// Enqueues every tick of a schedule in `(from, to]`, up to now: the schedule itself fires the
/// ticks to come, at their time, and a tick enqueued early would run now and not then. Returns
/// how many runs were new (ticks enqueued before are not enqueued again).
///
/// # Errors
/// [`Error::NoSuchSchedule`]; [`Error::Invalid`] for a range that starts in the future or
/// holds over 10,000 ticks.
pub async fn backfill(
    conn: &mut PgConnection,
    name: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<u64, Error> {
    let now = Utc::now();
    if from >= now {
        return Err(Error::Invalid(format!(
            "backfill of {name:?}: the range starts in the future ({}); a backfill enqueues past ticks, and the schedule fires the ones to come",
            iso(&from)
        )));
    }
    let to = to.min(now);
    let s = get(conn, name).await?;
    let cron = Cron::parse(&s.schedule, s.cron_timezone.as_deref())?;
    let ticks = cron.ticks(from, to, 10_001);
    if ticks.len() > 10_000 {
        return Err(Error::Invalid(format!(
            "backfill of {name:?}: more than 10000 ticks in the range; backfill a shorter range"
        )));
    }
    let runs: Vec<ScheduledRun> = ticks
        .iter()
        .map(|t| {
            scheduled_run(
                &s,
                format!("sched-{}-{}", s.schedule_name, cron.iso(*t)),
                *t,
            )
        })
        .collect();
    if runs.is_empty() {
        return Ok(0);
    }
    Ok(dbos_store::workflows::enqueue_scheduled(conn, &runs, &[]).await?)
}

async fn get(conn: &mut PgConnection, name: &str) -> Result<Schedule, Error> {
    dbos_store::schedules::get(conn, name)
        .await?
        .ok_or_else(|| missing(name))
}

/// The `cron` crate's refusal of a value out of its field's range says "must be less than 59"
/// of seconds, whose largest value is 59: the bound is inclusive. Said as it is meant.
fn bounds_said_right(e: &cron::error::Error) -> String {
    let text = e.to_string();
    for (theirs, ours) in [
        (" must be less than ", " must be at most "),
        (" must be greater than or equal to ", " must be at least "),
    ] {
        if let Some((field, rest)) = text.split_once(theirs) {
            if let Some((bound, value)) = rest.split_once(". ('") {
                let value = value.trim_end_matches("' specified.)");
                return format!("{field}{ours}{bound}, not {value}");
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any text, and any time zone name, is parsed or refused; never a panic.
        #[test]
        fn any_expression_is_parsed_or_refused(
            expr in "\\PC{0,80}",
            tz in proptest::option::of("\\PC{0,24}"),
        ) {
            let _ = Cron::parse(&expr, tz.as_deref());
        }

        /// Text shaped like cron fields: a parsed one yields ticks strictly after the time
        /// asked, never a panic (ranges, steps and lists at their edges).
        #[test]
        fn cron_shaped_expressions_tick_forward(
            fields in proptest::collection::vec("[0-9*/,-]{1,7}", 5..=6),
            at in 0i64..4_102_444_800,
        ) {
            if let Ok(c) = Cron::parse(&fields.join(" "), None) {
                let after = DateTime::from_timestamp(at, 0).expect("in range");
                if let Some(next) = c.next_after(after) {
                    proptest::prop_assert!(next > after);
                }
            }
        }
    }
    use chrono::TimeZone;

    #[test]
    fn expressions_with_seconds_five_fields_and_time_zones() {
        let c = Cron::parse("*/10 * * * * *", None).expect("6 fields");
        let t0 = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 5)
            .single()
            .expect("time");
        let t1 = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 40)
            .single()
            .expect("time");
        let ticks: Vec<u32> = c
            .ticks(t0, t1, 100)
            .iter()
            .map(chrono::Timelike::second)
            .collect();
        assert_eq!(ticks, vec![10, 20, 30, 40]);
        let five = Cron::parse("30 9 * * *", Some("Europe/Paris")).expect("5 fields");
        let next = five.next_after(t0).expect("next");
        // 09:30 in Paris is 08:30 UTC in January.
        assert_eq!(
            next,
            Utc.with_ymd_and_hms(2026, 1, 1, 8, 30, 0)
                .single()
                .expect("time")
        );
    }

    #[test]
    fn ticks_are_written_as_python_isoformat_in_the_schedule_time_zone() {
        let t = Utc
            .with_ymd_and_hms(2026, 1, 1, 8, 30, 0)
            .single()
            .expect("time");
        let utc = Cron::parse("30 8 * * *", None).expect("utc");
        assert_eq!(utc.iso(t), "2026-01-01T08:30:00+00:00");
        let paris = Cron::parse("30 9 * * *", Some("Europe/Paris")).expect("paris");
        assert_eq!(paris.iso(t), "2026-01-01T09:30:00+01:00");
        let with_micros = t + chrono::Duration::microseconds(1_500);
        assert_eq!(iso(&with_micros), "2026-01-01T08:30:00.001500+00:00");
    }

    #[test]
    fn bad_expressions_and_time_zones_are_refused() {
        for bad in [
            "",
            "* * *",
            "61 * * * * *",
            "* * * * * * * *",
            "nonsense x y z w v",
        ] {
            assert!(Cron::parse(bad, None).is_err(), "{bad:?}");
        }
        for (bad, says) in [
            ("60 * * * * *", "Seconds must be at most 59, not 60"),
            ("0 0 24 * * *", "Hours must be at most 23, not 24"),
            ("0 0 0 0 * *", "must be at least 1, not 0"),
        ] {
            let e = Cron::parse(bad, None).expect_err(bad).to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        let e = Cron::parse("* * * * * *", Some("Mars/Olympus")).expect_err("tz");
        assert!(e.to_string().contains("Mars/Olympus"));
    }
}
