//! The catalog keeps tables open between queries; a query still sees every other writer's
//! newest commit, on a local lake and on S3.

use gamelake::query::Session;

use crate::support::{S3Server, TempLake, execute, rows, session_at};

/// Two sessions, as two processes would have: `reader` keeps the table open between its
/// queries, `writer` appends, drops and re-creates it.
async fn reader_follows_writer(reader: &Session, writer: &Session) {
    let sum = "SELECT sum(n) FROM game.scores";
    execute(writer, "CREATE TABLE game.scores AS SELECT 1 AS n").await;
    assert_eq!(rows(reader, sum).await, vec!["1"]);
    // Asked again with nothing new: the kept table, still right.
    assert_eq!(rows(reader, sum).await, vec!["1"]);

    execute(writer, "INSERT INTO game.scores VALUES (2)").await;
    assert_eq!(rows(reader, sum).await, vec!["3"], "a newer commit");

    // Dropped and written again up to the same version the reader holds (create, first rows,
    // one insert), so only the commit file itself (its ETag, its write time) tells them apart.
    let version = "SELECT max(version) FROM game.\"scores$history\"";
    let held = rows(reader, version).await;
    execute(writer, "DROP TABLE game.scores").await;
    execute(writer, "CREATE TABLE game.scores AS SELECT 10 AS n").await;
    execute(writer, "INSERT INTO game.scores VALUES (20)").await;
    assert_eq!(rows(writer, version).await, held, "same version again");
    assert_eq!(rows(reader, sum).await, vec!["30"], "the re-created table");

    execute(writer, "DROP TABLE game.scores").await;
    let gone = reader.query(sum).await.expect_err("a dropped table");
    assert!(gone.to_string().contains("scores"), "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_table_follows_other_writers_on_a_local_lake() {
    let lake = TempLake::new();
    let reader = lake.session().await;
    let writer = lake.session().await;
    reader_follows_writer(&reader, &writer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_table_follows_other_writers_on_s3() {
    let s3 = S3Server::start();
    let url = s3.lake_url("fresh");
    let reader = session_at(&url, s3.options()).await;
    let writer = session_at(&url, s3.options()).await;
    reader_follows_writer(&reader, &writer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_sees_each_tables_newest_commit() {
    let lake = TempLake::new();
    let reader = lake.session().await;
    let writer = lake.session().await;
    execute(
        &writer,
        "CREATE TABLE game.players AS SELECT 1 AS id, 'ann' AS name",
    )
    .await;
    execute(
        &writer,
        "CREATE TABLE game.buys AS SELECT 1 AS id, 5 AS gold",
    )
    .await;
    let join = "SELECT p.name, sum(b.gold) FROM game.players p JOIN game.buys b USING (id) \
                JOIN game.players q ON q.id = b.id GROUP BY p.name ORDER BY p.name";
    assert_eq!(rows(&reader, join).await, vec!["ann|5"]);
    execute(&writer, "INSERT INTO game.players VALUES (2, 'bo')").await;
    execute(&writer, "INSERT INTO game.buys VALUES (2, 7), (1, 1)").await;
    assert_eq!(rows(&reader, join).await, vec!["ann|6", "bo|7"]);
}
