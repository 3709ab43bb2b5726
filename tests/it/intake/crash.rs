//! `kill -9` during a steady stream of senders: no acknowledged record lost, none committed
//! twice.

use super::*;

/// Ids per sender: room for ten million batches, more than a sender sends in a test.
const SENDER_IDS: usize = 1_000_000_000;

/// One sender's batches: ids `sender * SENDER_IDS + batch * 100 + i`.
fn batch_body(sender: usize, batch: usize, size: usize) -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..size {
        let id = sender * SENDER_IDS + batch * 100 + i;
        writeln!(body, "{{\"id\":{id},\"payload\":\"{}\"}}", "x".repeat(200)).unwrap();
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_steady_stream_loses_no_acknowledged_record_and_commits_none_twice() {
    let lake = TempLake::new();
    let config = config(&lake, "");
    let server = Arc::new(Mutex::new(Some(start(&lake, &config))));
    let addr = Arc::new(Mutex::new(
        server.lock().unwrap().as_ref().unwrap().http_addr(),
    ));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    const SENDERS: usize = 4;
    const BATCH: usize = 50;

    // Senders retry a batch until it is acknowledged, like Fluent Bit and Fluentd do, with the
    // same Idempotency-Key: a batch stored by an attempt whose answer was lost to the kill is
    // not stored again by the retry. Every acknowledged batch must be there exactly once.
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (addr, stop) = (addr.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut attempts: Vec<usize> = Vec::new();
                let mut batch = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    attempts.push(0);
                    loop {
                        attempts[batch] += 1;
                        let target = *addr.lock().unwrap();
                        let sent = client
                            .post(format!("http://{target}/ingest/logs.stream"))
                            .bearer_auth(TOKEN)
                            .header("Idempotency-Key", format!("{sender}-{batch}"))
                            .body(batch_body(sender, batch, BATCH))
                            .send()
                            .await;
                        if matches!(&sent, Ok(r) if r.status().as_u16() == 200) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    batch += 1;
                }
                attempts
            })
        })
        .collect();

    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(300 + rand_ms())).await;
        let mut slot = server.lock().unwrap();
        if let Some(mut running) = slot.take() {
            running.child.kill().unwrap(); // SIGKILL
            running.child.wait().unwrap();
        }
        let next = start(&lake, &config);
        *addr.lock().unwrap() = next.http_addr();
        *slot = Some(next);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut attempts = Vec::new();
    for sender in senders {
        attempts.push(sender.await.unwrap());
    }
    let last = server.lock().unwrap().take().unwrap();
    let (status, out) = last.terminate();
    assert!(status.success(), "{out}");

    let session = lake.session().await;
    let copies: HashMap<usize, usize> = rows(
        &session,
        &format!(
            "SELECT id / 100, count(*) / {BATCH}, count(DISTINCT id) FROM logs.stream GROUP BY 1"
        ),
    )
    .await
    .into_iter()
    .map(|line| {
        let parts: Vec<usize> = line.split('|').map(|p| p.parse().unwrap()).collect();
        assert_eq!(parts[2], BATCH, "batch {} is incomplete: {line}", parts[0]);
        (parts[0], parts[1])
    })
    .collect();
    let mut acknowledged = 0;
    for (sender, tries) in attempts.iter().enumerate() {
        for (batch, tries) in tries.iter().enumerate() {
            let key = sender * (SENDER_IDS / 100) + batch;
            let n = copies.get(&key).copied().unwrap_or(0);
            assert_eq!(
                n, 1,
                "acknowledged batch {batch} of sender {sender} is there {n} times after {tries} attempts"
            );
            acknowledged += 1;
        }
    }
    let retried: usize = attempts.iter().flatten().map(|t| t - 1).sum();
    eprintln!("{acknowledged} batches acknowledged, {retried} retries over 20 kills");
    assert!(
        acknowledged > 20 * SENDERS,
        "only {acknowledged} batches were sent"
    );
    assert_eq!(copies.len(), acknowledged, "rows of batches never sent");
    assert!(
        !lake.path().join("logs/_rejected").exists(),
        "no record was malformed, so none may be rejected"
    );
}

/// A pseudo-random delay below 500 ms (no rand dependency for one number).
fn rand_ms() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    u64::from(nanos % 500)
}
