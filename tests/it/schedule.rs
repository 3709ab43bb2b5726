//! The scheduler (`gamelake serve --schedule`): with a clock the test moves by hand, each due
//! slot runs once across restarts and replicas, missed slots after downtime run once, runs of a
//! job never overlap, a dead process's run is taken over, and a failing job does not stop the
//! others. Then the real server: reports and a PostgreSQL sink on a schedule, with /metrics.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use gamelake::error::{Error, Result};
use gamelake::schedule::{Job, JobRunner, ManualClock, Metrics, Outcome, Record, Records};
use gamelake::timing::{Timing, parse_zone};
use object_store::local::LocalFileSystem;
use tokio::sync::{Semaphore, watch};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// What the probe job does when run.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Succeed,
    Fail,
    Panic,
}

/// A job that logs the slots it ran, counts how many of its runs are in progress at once, and
/// (with a gate) waits for a permit before finishing.
struct Probe {
    name: String,
    timing: Timing,
    behaviour: Behaviour,
    log: Arc<Mutex<Vec<DateTime<Utc>>>>,
    running: Arc<AtomicUsize>,
    most_at_once: Arc<AtomicUsize>,
    gate: Option<Arc<Semaphore>>,
}

impl Probe {
    fn new(name: &str, behaviour: Behaviour) -> Self {
        Self {
            name: name.to_string(),
            timing: Timing::parse("* * * * *", parse_zone("UTC").unwrap()).unwrap(),
            behaviour,
            log: Arc::default(),
            running: Arc::default(),
            most_at_once: Arc::default(),
            gate: None,
        }
    }

    /// Another probe sharing this one's log and counters (the same job on a replica).
    fn twin(&self) -> Self {
        Self {
            name: self.name.clone(),
            timing: self.timing.clone(),
            behaviour: self.behaviour,
            log: self.log.clone(),
            running: self.running.clone(),
            most_at_once: self.most_at_once.clone(),
            gate: self.gate.clone(),
        }
    }

    fn ran(&self) -> Vec<DateTime<Utc>> {
        self.log.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Job for Probe {
    fn name(&self) -> &str {
        &self.name
    }

    fn timing(&self) -> &Timing {
        &self.timing
    }

    async fn run(&self, slot: DateTime<Utc>) -> Result<String> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        self.log.lock().unwrap().push(slot);
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        match self.behaviour {
            Behaviour::Succeed => Ok(format!("ran {slot}")),
            Behaviour::Fail => Err(Error::Invalid("the query failed".to_string())),
            Behaviour::Panic => panic!("the job panicked"),
        }
    }
}

/// A scheduler process over the records in `lake`.
struct Running {
    scheduler: Arc<JobRunner>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<()>>,
    metrics: Arc<Metrics>,
}

fn records(lake: &std::path::Path) -> Records {
    Records::new(
        Arc::new(LocalFileSystem::new_with_prefix(lake).unwrap()),
        "_schedule",
    )
}

fn start(lake: &std::path::Path, jobs: Vec<Probe>, clock: &Arc<ManualClock>) -> Running {
    let jobs: Vec<Arc<dyn Job>> = jobs.into_iter().map(|j| Arc::new(j) as _).collect();
    let metrics = Arc::new(Metrics::default());
    let scheduler = Arc::new(JobRunner::new(
        jobs,
        records(lake),
        clock.clone(),
        metrics.clone(),
    ));
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(scheduler.clone().run(stopped));
    Running {
        scheduler,
        stop,
        task,
        metrics,
    }
}

impl Running {
    async fn settled(&self) {
        tokio::time::timeout(Duration::from_secs(20), self.scheduler.settled())
            .await
            .expect("the scheduler did not settle");
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// Every attempt file of a job's slots: (slot folder, attempt file, outcome).
fn attempts(lake: &std::path::Path, job: &str) -> Vec<(String, String, Outcome)> {
    let mut found = Vec::new();
    let dir = lake.join("_schedule").join(job);
    let Ok(slots) = std::fs::read_dir(&dir) else {
        return found;
    };
    for slot in slots {
        let slot = slot.unwrap().path();
        for attempt in std::fs::read_dir(&slot).unwrap() {
            let path = attempt.unwrap().path();
            let record: Record = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            found.push((
                slot.file_name().unwrap().to_string_lossy().into_owned(),
                path.file_name().unwrap().to_string_lossy().into_owned(),
                record.outcome,
            ));
        }
    }
    found.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    found
}

async fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    for _ in 0..400 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_slot_runs_once_across_restarts_and_downtime_is_made_up_once() {
    let lake = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(at("2026-12-01T00:00:30Z")));
    let probe = Probe::new("probe/minutely", Behaviour::Succeed);

    // A job new to the lake waits for its next due time (00:00 was before it was scheduled).
    let first = start(lake.path(), vec![probe.twin()], &clock);
    first.settled().await;
    assert!(probe.ran().is_empty());
    clock.set(at("2026-12-01T00:01:00Z"));
    first.settled().await;
    assert_eq!(probe.ran(), vec![at("2026-12-01T00:01:00Z")]);

    // A restart within the same minute does not run 00:01 again.
    first.stop().await;
    let second = start(lake.path(), vec![probe.twin()], &clock);
    second.settled().await;
    assert_eq!(probe.ran().len(), 1);
    clock.set(at("2026-12-01T00:02:00Z"));
    second.settled().await;
    assert_eq!(probe.ran().len(), 2);
    second.stop().await;

    // Ten minutes down: on start-up only the latest missed slot runs, once; then on schedule.
    clock.set(at("2026-12-01T00:12:30Z"));
    let third = start(lake.path(), vec![probe.twin()], &clock);
    third.settled().await;
    assert_eq!(
        probe.ran(),
        vec![
            at("2026-12-01T00:01:00Z"),
            at("2026-12-01T00:02:00Z"),
            at("2026-12-01T00:12:00Z")
        ]
    );
    clock.set(at("2026-12-01T00:13:00Z"));
    third.settled().await;
    assert_eq!(probe.ran().len(), 4);
    third.stop().await;

    let recorded = attempts(lake.path(), "probe/minutely");
    let slots: Vec<&str> = recorded.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        slots,
        [
            "2026-12-01T00-01-00Z",
            "2026-12-01T00-02-00Z",
            "2026-12-01T00-12-00Z",
            "2026-12-01T00-13-00Z"
        ]
    );
    assert!(
        recorded
            .iter()
            .all(|r| r.1 == "attempt-1.json" && r.2 == Outcome::Ok),
        "{recorded:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_never_overlap_here_or_on_a_replica_and_a_long_run_is_followed_by_one_catch_up() {
    let lake = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(at("2026-12-01T00:00:30Z")));
    let gate = Arc::new(Semaphore::new(0));
    let mut probe = Probe::new("probe/slow", Behaviour::Succeed);
    probe.gate = Some(gate.clone());
    // Two replicas of the server over one lake.
    let one = start(lake.path(), vec![probe.twin()], &clock);
    let two = start(lake.path(), vec![probe.twin()], &clock);
    one.settled().await;
    two.settled().await;

    clock.set(at("2026-12-01T00:01:00Z"));
    wait_until("the 00:01 run to start", || probe.ran().len() == 1).await;
    // Five minutes pass (heartbeats go on) while 00:01 is still running: nothing else starts.
    let running = lake
        .path()
        .join("_schedule/probe/slow/2026-12-01T00-01-00Z/attempt-1.json");
    for second in (10..=310).step_by(10) {
        let now = at("2026-12-01T00:01:00Z") + chrono::Duration::seconds(second);
        clock.set(now);
        // The run's heartbeat keeps up with the clock (however slow this machine is).
        wait_until("a heartbeat", || {
            let record: Record = serde_json::from_slice(&std::fs::read(&running).unwrap()).unwrap();
            now - record.heartbeat < chrono::Duration::seconds(20)
        })
        .await;
    }
    assert_eq!(probe.ran().len(), 1);

    // When it ends, the latest missed slot (00:06) runs once, on one of the replicas.
    gate.add_permits(10);
    wait_until("the catch-up run", || probe.ran().len() == 2).await;
    one.settled().await;
    two.settled().await;
    assert_eq!(
        probe.ran(),
        vec![at("2026-12-01T00:01:00Z"), at("2026-12-01T00:06:00Z")]
    );
    // Then every minute once, across both replicas.
    for minute in 7..=10 {
        clock.set(at("2026-12-01T00:00:00Z") + chrono::Duration::minutes(minute));
        wait_until("the minute's run", || {
            probe.ran().len() == minute as usize - 4
        })
        .await;
        one.settled().await;
        two.settled().await;
    }
    assert_eq!(probe.ran().len(), 6);
    assert_eq!(probe.most_at_once.load(Ordering::SeqCst), 1);
    let claimed_elsewhere = [&one, &two]
        .iter()
        .map(|r| {
            r.metrics
                .render()
                .lines()
                .filter(|l| l.starts_with("gamelake_schedule_slots_claimed_elsewhere_total"))
                .count()
        })
        .sum::<usize>();
    assert!(claimed_elsewhere >= 1, "the replicas met at least once");
    one.stop().await;
    two.stop().await;
    let recorded = attempts(lake.path(), "probe/slow");
    assert_eq!(recorded.len(), 6, "{recorded:?}");
    assert!(recorded.iter().all(|r| r.1 == "attempt-1.json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_process_died_or_stopped_is_run_again() {
    let lake = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(at("2026-12-01T00:01:10Z")));
    // A process claimed 00:01 and died: its record says running, its heartbeat stopped at 00:01.
    let dead = Record {
        slot: at("2026-12-01T00:01:00Z"),
        attempt: 1,
        node: "gone:1".to_string(),
        started: at("2026-12-01T00:01:00Z"),
        heartbeat: at("2026-12-01T00:01:00Z"),
        outcome: Outcome::Running,
        seconds: None,
        detail: None,
    };
    assert!(
        records(lake.path())
            .claim("probe/job", &dead)
            .await
            .unwrap()
    );
    let gate = Arc::new(Semaphore::new(0));
    let mut probe = Probe::new("probe/job", Behaviour::Succeed);
    probe.gate = Some(gate.clone());
    let next = start(lake.path(), vec![probe.twin()], &clock);
    next.settled().await;
    assert!(probe.ran().is_empty(), "10 s of silence may be a slow run");
    // Three heartbeats (45 s) without a sign of life: the slot runs again, as attempt 2.
    clock.set(at("2026-12-01T00:01:46Z"));
    wait_until("the takeover", || probe.ran().len() == 1).await;
    assert_eq!(probe.ran(), vec![at("2026-12-01T00:01:00Z")]);

    // Stopped while running: recorded as interrupted, and the next start runs it again.
    next.stop().await;
    let recorded = attempts(lake.path(), "probe/job");
    assert_eq!(recorded[1].1, "attempt-2.json");
    assert_eq!(recorded[1].2, Outcome::Interrupted);
    let again = start(lake.path(), vec![probe.twin()], &clock);
    wait_until("the rerun", || probe.ran().len() == 2).await;
    gate.add_permits(1);
    again.settled().await;
    again.stop().await;
    let recorded = attempts(lake.path(), "probe/job");
    let last = recorded.last().unwrap();
    assert_eq!(
        (last.0.as_str(), last.1.as_str(), &last.2),
        ("2026-12-01T00-01-00Z", "attempt-3.json", &Outcome::Ok)
    );
    assert_eq!(probe.ran().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_does_not_stop_the_others_and_metrics_count_runs() {
    let lake = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(at("2026-12-01T00:00:30Z")));
    let good = Probe::new("probe/good", Behaviour::Succeed);
    let failing = Probe::new("probe/failing", Behaviour::Fail);
    let panicking = Probe::new("probe/panicking", Behaviour::Panic);
    let running = start(
        lake.path(),
        vec![good.twin(), failing.twin(), panicking.twin()],
        &clock,
    );
    for minute in 1..=3 {
        clock.set(at("2026-12-01T00:00:00Z") + chrono::Duration::minutes(minute));
        running.settled().await;
    }
    assert_eq!(good.ran().len(), 3);
    assert_eq!(failing.ran().len(), 3);
    assert_eq!(panicking.ran().len(), 3);
    let metrics = running.metrics.render();
    for expected in [
        "gamelake_schedule_runs_total{job=\"probe/good\"} 3",
        "gamelake_schedule_runs_total{job=\"probe/failing\"} 3",
        "gamelake_schedule_failures_total{job=\"probe/failing\"} 3",
        "gamelake_schedule_failures_total{job=\"probe/panicking\"} 3",
        "gamelake_schedule_run_seconds_count{job=\"probe/good\"} 3",
    ] {
        assert!(metrics.contains(expected), "{expected} not in:\n{metrics}");
    }
    assert!(!metrics.contains("gamelake_schedule_failures_total{job=\"probe/good\"}"));
    running.stop().await;
    let failed = attempts(lake.path(), "probe/failing");
    assert!(failed.iter().all(|r| r.2 == Outcome::Failed), "{failed:?}");
    let record: Record = serde_json::from_slice(
        &std::fs::read(
            lake.path()
                .join("_schedule/probe/failing/2026-12-01T00-03-00Z/attempt-1.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(record.detail.unwrap().contains("the query failed"));
}

/// The real server (`gamelake serve --schedule --metrics`): a report every two seconds, a broken
/// report beside it, and the recommendations sink every two seconds into a real PostgreSQL;
/// the runs land in the lake and in PostgreSQL, and /metrics counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_scheduled_reports_and_sinks_and_counts_them_in_metrics() {
    use crate::support::{ServeProcess, repo_root};

    let (lake, db, pg) = crate::pipelines::demo_lake_and_database().await;
    let loc = lake.location();
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("reports");
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir_all(&reports).unwrap();
    std::fs::create_dir_all(&pipelines).unwrap();
    let every_two_seconds = "schedule = \"*/2 * * * * *\"\ntimezone = \"UTC\"\n";
    std::fs::write(
        reports.join("dau.toml"),
        format!(
            "title = \"DAU\"\n{every_two_seconds}[[query]]\nfile = \"{}\"\n",
            repo_root().join("queries/dau_by_region.sql").display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("broken.sql"),
        "SELECT * FROM game.no_such_table",
    )
    .unwrap();
    std::fs::write(
        reports.join("broken.toml"),
        format!("{every_two_seconds}[[query]]\nfile = \"../broken.sql\"\n"),
    )
    .unwrap();
    crate::pipelines::recommendations_pipeline(&pipelines, |text| {
        let every_two_seconds =
            text.replace("schedule = \"30 4 * * *\"", "schedule = \"*/2 * * * * *\"");
        assert!(every_two_seconds.contains("*/2 * * * * *"));
        every_two_seconds
    });
    // An unscheduled pipeline whose ${VAR} is not set is not loaded.
    let unscheduled = std::fs::read_to_string(repo_root().join("pipelines/oltp_snapshot.toml"))
        .unwrap()
        .replace("${PG_URL}", "${GAMELAKE_TEST_NEVER_SET}");
    std::fs::write(pipelines.join("oltp_snapshot.toml"), unscheduled).unwrap();
    let config = dir.path().join("gamelake.toml");
    std::fs::write(&config, "").unwrap();

    let url = db.url();
    let serve = ServeProcess::spawn(
        &lake,
        &config,
        &[
            "--schedule",
            "--reports",
            reports.to_str().unwrap(),
            "--pipelines",
            pipelines.to_str().unwrap(),
            "--metrics",
            "127.0.0.1:0",
        ],
        &[("PG_URL", &url)],
    );
    let metrics_url = format!("http://{}/metrics", serve.metrics_addr());
    let client = reqwest::Client::new();
    let count = |text: &str, metric: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(metric))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let mut metrics = String::new();
    for _ in 0..240 {
        metrics = client
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // Finished runs (a run in progress at the stop is recorded as interrupted).
        if count(
            &metrics,
            "gamelake_schedule_run_seconds_count{job=\"report/dau\"}",
        ) >= 2
            && count(
                &metrics,
                "gamelake_schedule_runs_total{job=\"pipeline/recommendations\"}",
            ) >= 1
            && count(
                &metrics,
                "gamelake_schedule_failures_total{job=\"report/broken\"}",
            ) >= 2
            && count(
                &metrics,
                "gamelake_schedule_run_seconds_count{job=\"pipeline/recommendations\"}",
            ) >= 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    assert!(
        count(
            &metrics,
            "gamelake_schedule_run_seconds_count{job=\"report/dau\"}"
        ) >= 2
            && count(
                &metrics,
                "gamelake_schedule_failures_total{job=\"report/broken\"}"
            ) >= 2,
        "{metrics}"
    );
    assert_eq!(
        count(
            &metrics,
            "gamelake_schedule_failures_total{job=\"report/dau\"}"
        ),
        0
    );
    let (status, _) = serve.terminate();
    assert!(status.success());

    // Every successful report run wrote its page, in the folder of its slot.
    let recorded = attempts(lake.path(), "report/dau");
    let ok: Vec<&String> = recorded
        .iter()
        .filter(|r| r.2 == Outcome::Ok)
        .map(|r| &r.0)
        .collect();
    assert!(ok.len() >= 2, "{recorded:?}");
    for slot in ok {
        let page = lake
            .path()
            .join("_reports/dau")
            .join(slot)
            .join("index.html");
        assert!(page.is_file(), "{} is missing", page.display());
    }
    assert!(
        attempts(lake.path(), "report/broken")
            .iter()
            .all(|r| r.2 == Outcome::Failed)
    );

    // The sink filled PostgreSQL with the suggestions the saved queries wrote to the lake.
    for table in ["reco.item_suggestions", "reco.friend_suggestions"] {
        let expected = crate::pipelines::lake_rows(&loc, &format!("SELECT count(*) FROM {table}"));
        let published: i64 = pg
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(published.to_string(), expected[0], "{table}");
    }
}
