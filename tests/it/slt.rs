//! SQL behaviour in `testdata/slt/*.slt`, run by the sqllogictest crate: each file gets its own
//! lake, once in a local folder and once on a loopback S3 server.

use std::collections::HashMap;
use std::path::PathBuf;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use gamelake::{Output, Session};
use sqllogictest::{DBOutput, DefaultColumnType};

use crate::support::{S3Server, TempLake, render, repo_root, session_at};

struct LakeDb {
    session: Session,
}

#[async_trait]
impl sqllogictest::AsyncDB for LakeDb {
    type Error = gamelake::Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, gamelake::Error> {
        let mut last = DBOutput::StatementComplete(0);
        for output in self.session.sql(sql).await? {
            last = match output {
                Output::Done(_) => DBOutput::StatementComplete(0),
                Output::Rows(df) => {
                    let schema = df.schema().as_arrow().clone();
                    let batches = df
                        .collect()
                        .await
                        .map_err(gamelake::Error::from_datafusion)?;
                    let types = schema
                        .fields()
                        .iter()
                        .map(|f| column_type(f.data_type()))
                        .collect();
                    let rows = render(&batches)
                        .into_iter()
                        .map(|line| {
                            line.split('|')
                                .map(|v| {
                                    if v.is_empty() {
                                        "(empty)".to_string()
                                    } else {
                                        v.to_string()
                                    }
                                })
                                .collect()
                        })
                        .collect();
                    DBOutput::Rows { types, rows }
                }
            };
        }
        Ok(last)
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "gamelake"
    }
}

fn column_type(t: &DataType) -> DefaultColumnType {
    if t.is_integer() {
        DefaultColumnType::Integer
    } else if t.is_floating() || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)) {
        DefaultColumnType::FloatingPoint
    } else {
        DefaultColumnType::Text
    }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = repo_root().join("testdata/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("testdata/slt")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

async fn run_all(make_location: impl Fn(&str) -> (String, HashMap<String, String>)) {
    let mut failures = Vec::new();
    for file in slt_files() {
        let name = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let (location, options) = make_location(&name);
        let session = session_at(&location, options).await;
        let mut runner = sqllogictest::Runner::new(move || {
            let session = session.clone();
            async move { Ok(LakeDb { session }) }
        });
        if let Err(e) = runner.run_file_async(&file).await {
            failures.push(format!("{}: {e}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} slt file(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_on_local_lake() {
    let lakes: Vec<TempLake> = slt_files().iter().map(|_| TempLake::new()).collect();
    let paths: Vec<String> = lakes.iter().map(TempLake::location).collect();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    run_all(|_| {
        let i = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (paths[i].clone(), HashMap::new())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_on_s3_lake() {
    let s3 = S3Server::start();
    run_all(|name| (s3.lake_url(&format!("slt-{name}")), s3.options())).await;
}
