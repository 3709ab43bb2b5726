//! gamelake's own plan rules: a subquery named twice is computed once, and a hash join's
//! filter skips rows in the scan it reaches while it keeps few of them. Each is checked for
//! its answer (the same as without the rule) and for doing what it claims, from the plan and
//! from `EXPLAIN ANALYZE`'s counts.

use std::sync::Arc;

use datafusion::physical_plan::{ExecutionPlan, collect};
use gamelake::query::Session;

use crate::support::{TempLake, execute, explain, rows};

/// `shop.sales`: 100 suppliers, supplier `n` selling `n` items of price `n` on each of 30 days
/// (so supplier 100 has the largest revenue), and `shop.suppliers` holding suppliers 1-10 only.
async fn sales(session: &Session) {
    for sql in [
        "CREATE TABLE shop.sales AS SELECT s.value AS supplier, d.value AS day, \
         s.value * s.value AS amount \
         FROM generate_series(1, 100) s CROSS JOIN generate_series(1, 30) d",
        "CREATE TABLE shop.suppliers AS SELECT value AS id, 'supplier ' || value AS name \
         FROM generate_series(1, 10)",
    ] {
        execute(session, sql).await;
    }
}

/// TPC-H Q15's shape: the suppliers whose revenue is the largest of all suppliers'.
const TOP_SUPPLIER: &str = "WITH revenue AS (\
        SELECT supplier, sum(amount) AS total FROM shop.sales WHERE day <= 20 GROUP BY supplier) \
    SELECT s.id, s.name, r.total FROM shop.suppliers s JOIN revenue r ON s.id = r.supplier \
    WHERE r.total = (SELECT max(total) FROM revenue) ORDER BY s.id";

/// Runs a query and answers its executed plan, whose nodes hold their counts.
async fn analyze(session: &Session, sql: &str) -> Arc<dyn ExecutionPlan> {
    let ctx = session.context();
    let plan = ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .create_physical_plan()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    collect(Arc::clone(&plan), ctx.task_ctx())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    plan
}

/// A count summed over every node of an executed plan that reports it (a node that appears
/// twice counts twice).
fn metric(plan: &Arc<dyn ExecutionPlan>, name: &str) -> usize {
    let own = plan
        .metrics()
        .and_then(|m| m.sum_by_name(name))
        .map_or(0, |v| v.as_usize());
    own + plan
        .children()
        .into_iter()
        .map(|child| metric(child, name))
        .sum::<usize>()
}

#[tokio::test]
async fn a_subquery_named_twice_is_computed_once_and_answers_the_same() {
    let lake = TempLake::new();
    let session = lake.session().await;
    sales(&session).await;

    let plan = explain(&session, TOP_SUPPLIER).await;
    assert_eq!(plan.matches("SharedExec").count(), 2, "{plan}");
    // The largest revenue is supplier 100's, who is not among `shop.suppliers`: no row. Had
    // the join's filter (suppliers 1-10) reached the shared aggregation, the maximum would
    // have been taken over suppliers 1-10 only and supplier 10 would be the answer.
    assert!(rows(&session, TOP_SUPPLIER).await.is_empty());
    let analyzed = analyze(&session, TOP_SUPPLIER).await;
    // Both consumers read the one computation: each of its partitions ran once and was handed
    // out twice (the count shows at both places the node appears in the plan).
    let computed = metric(&analyzed, "partitions_computed");
    let served = metric(&analyzed, "partitions_served");
    assert!(
        computed > 0 && served == 2 * computed,
        "{computed} computed, {served} served"
    );

    let top_of_all = TOP_SUPPLIER.replace(
        "shop.suppliers s",
        "(SELECT value AS id, 'supplier ' || value AS name FROM generate_series(1, 100)) s",
    );
    let shared = rows(&session, &top_of_all).await;
    assert_eq!(shared, ["100|supplier 100|200000"]);

    execute(&session, "SET gamelake.shared_subplans = false").await;
    assert!(!explain(&session, TOP_SUPPLIER).await.contains("SharedExec"));
    assert_eq!(rows(&session, &top_of_all).await, shared);
    assert!(rows(&session, TOP_SUPPLIER).await.is_empty());
}

#[tokio::test]
async fn subqueries_with_volatile_functions_are_not_shared() {
    let lake = TempLake::new();
    let session = lake.session().await;
    sales(&session).await;
    let sql = "WITH noisy AS (\
            SELECT supplier, sum(amount * random()) AS total FROM shop.sales GROUP BY supplier) \
        SELECT count(*) FROM noisy a JOIN noisy b ON a.supplier = b.supplier \
        WHERE a.total <> b.total";
    let plan = explain(&session, sql).await;
    assert!(!plan.contains("SharedExec"), "{plan}");
    // Each side draws its own random numbers, so every supplier's two totals differ (shared,
    // they would be equal and the count 0).
    assert_eq!(rows(&session, sql).await, ["100"]);
}

/// `logs.events`: 200,000 events of players 1-200,000, and `logs.watched` with the
/// players of interest.
async fn events(session: &Session, watched: &str) {
    for sql in [
        "CREATE TABLE logs.events AS SELECT value AS player_id, value % 7 AS kind \
         FROM generate_series(1, 200000)"
            .to_string(),
        format!("CREATE TABLE logs.watched AS SELECT value AS player_id FROM {watched}"),
    ] {
        execute(session, &sql).await;
    }
}

const WATCHED_EVENTS: &str = "SELECT count(*), sum(e.kind) FROM logs.events e \
    JOIN logs.watched w ON e.player_id = w.player_id";

#[tokio::test]
async fn a_selective_join_filter_skips_rows_while_decoding() {
    let lake = TempLake::new();
    let session = lake.session().await;
    // 20 players spread over the whole range: the join keeps 0.01% of the events, and no row
    // group or page can be skipped by the filter's bounds (10,000 to 200,000).
    events(&session, "generate_series(10000, 200000, 10000)").await;

    let plan = explain(&session, WATCHED_EVENTS).await;
    assert!(plan.contains("adaptive(DynamicFilter"), "{plan}");
    let expected: i64 = (1..=20).map(|i| i * 10000 % 7).sum();
    assert_eq!(
        rows(&session, WATCHED_EVENTS).await,
        [format!("20|{expected}")]
    );
    let analyzed = analyze(&session, WATCHED_EVENTS).await;
    // Every row the scan decoded was judged; all but the 20 dropped (the page index had
    // already skipped the first page, below the filter's lower bound).
    assert_eq!(metric(&analyzed, "pushdown_rows_matched"), 20);
    let pruned = metric(&analyzed, "pushdown_rows_pruned");
    assert!(
        (190_000..=199_980).contains(&pruned),
        "{pruned} rows dropped"
    );

    // Switched off, the scan decodes every row and the join drops them.
    execute(&session, "SET gamelake.adaptive_join_filters = false").await;
    assert!(
        !explain(&session, WATCHED_EVENTS)
            .await
            .contains("adaptive(")
    );
    let analyzed = analyze(&session, WATCHED_EVENTS).await;
    assert_eq!(metric(&analyzed, "pushdown_rows_pruned"), 0);
    assert_eq!(
        rows(&session, WATCHED_EVENTS).await,
        [format!("20|{expected}")]
    );
}

#[tokio::test]
async fn a_join_filter_that_keeps_most_rows_stops_filtering() {
    let lake = TempLake::new();
    let session = lake.session().await;
    // Nine players in ten: filtering rows would drop 20,000 of the 200,000 events, at the cost
    // of looking each of them up twice.
    events(&session, "generate_series(1, 200000) WHERE value % 10 <> 0").await;
    let expected: i64 = (1..=200_000i64)
        .filter(|v| v % 10 != 0)
        .map(|v| v % 7)
        .sum();
    assert_eq!(
        rows(&session, WATCHED_EVENTS).await,
        [format!("180000|{expected}")]
    );
    // The filter judged its first batches (a tenth of their rows dropped), then stood aside.
    let analyzed = analyze(&session, WATCHED_EVENTS).await;
    let pruned = metric(&analyzed, "pushdown_rows_pruned");
    assert!(pruned > 0 && pruned < 10_000, "{pruned} rows dropped");
    assert_eq!(metric(&analyzed, "pushdown_rows_matched") + pruned, 200_000);
}

#[tokio::test]
async fn a_filter_compares_numbers_before_strings() {
    let lake = TempLake::new();
    let session = lake.session().await;
    execute(
        &session,
        "CREATE TABLE logs.moves AS SELECT value AS day, \
         CASE value % 3 WHEN 0 THEN 'ship' WHEN 1 THEN 'mail' ELSE 'air' END AS mode \
         FROM generate_series(1, 30000)",
    )
    .await;
    // Written string comparison first; the day range is moved ahead of it.
    let sql = "SELECT count(*) FROM logs.moves WHERE mode IN ('ship', 'mail') \
        AND day >= 100 AND day < 400";
    let filter = |plan: String| {
        plan.lines()
            .find_map(|line| line.split("FilterExec: ").nth(1).map(str::to_string))
            .unwrap_or_else(|| panic!("no FilterExec in {plan}"))
    };
    let reordered = filter(explain(&session, sql).await);
    assert!(
        reordered.starts_with("day@0 >= 100 AND day@0 < 400 AND"),
        "{reordered}"
    );
    assert_eq!(rows(&session, sql).await, ["200"]);

    execute(&session, "SET gamelake.cheap_filters_first = false").await;
    let written = filter(explain(&session, sql).await);
    assert!(!written.starts_with("day@0"), "{written}");
    assert_eq!(rows(&session, sql).await, ["200"]);
}

#[tokio::test]
async fn decimal_arithmetic_skips_overflow_checks_with_the_same_answers() {
    let lake = TempLake::new();
    let session = lake.session().await;
    execute(
        &session,
        "CREATE TABLE shop.lines AS SELECT \
         CAST(value * 1.37 AS DECIMAL(15, 2)) AS price, \
         CAST((value % 11) / 100.0 AS DECIMAL(15, 2)) AS discount, \
         CAST(CASE WHEN value % 5 = 0 THEN NULL ELSE value % 9 END AS DECIMAL(15, 2)) AS tax, \
         CAST(value AS DECIMAL(38, 0)) * CAST('10000000000000000000000000000' AS DECIMAL(38, 0)) AS huge \
         FROM generate_series(1, 20000)",
    )
    .await;
    // TPC-H Q1's arithmetic: a product, a product of a product, sums and differences with
    // literals (of another scale than the column), nulls, and a filter.
    let sql = "SELECT sum(price * (1 - discount)), sum(price * (1 - discount) * (1 + tax)), \
        min(price - tax), max(tax + discount), count(*) \
        FROM shop.lines WHERE price * discount > 10";
    let plan = explain(&session, sql).await;
    for function in ["decimal_mul", "decimal_sub", "decimal_add"] {
        assert!(plan.contains(function), "no {function} in {plan}");
    }
    let fast = rows(&session, sql).await;
    // Column names are the operator's, whatever computes them.
    let name = |session: Session| async move {
        let batches = session
            .query("SELECT price * discount FROM shop.lines LIMIT 1")
            .await
            .expect("query");
        batches[0].schema().field(0).name().clone()
    };
    let fast_name = name(session.clone()).await;
    assert!(fast_name.contains("price * "), "{fast_name}");

    // A product that overflows 128 bits is an error, as it is without the rule.
    let overflow = "SELECT sum(huge * huge) FROM shop.lines";
    let err = session.query(overflow).await.expect_err("overflow");
    assert!(err.to_string().contains("Overflow"), "{err}");

    execute(&session, "SET gamelake.fast_decimal_arithmetic = false").await;
    assert!(!explain(&session, sql).await.contains("decimal_"));
    assert_eq!(rows(&session, sql).await, fast);
    assert_eq!(name(session.clone()).await, fast_name);
    let err = session.query(overflow).await.expect_err("overflow");
    assert!(err.to_string().contains("Overflow"), "{err}");
}

/// `ANALYZE` counts each column's distinct values and keeps them in the table, and join
/// planning estimates string equalities by them: one row in 25 for a column of 25 brands,
/// where without counts DataFusion guesses a fifth whatever the column. The estimate decides
/// which side of a join builds the hash table (the smaller).
#[tokio::test]
async fn analyze_records_distinct_counts_that_join_planning_uses() {
    let lake = TempLake::new();
    let session = lake.session().await;
    for sql in [
        "CREATE TABLE shop.parts AS SELECT value AS part_id, 'Brand#' || (value % 25) AS brand, \
         'size ' || (value % 50) AS size FROM generate_series(1, 10000)",
        "CREATE TABLE shop.offers AS SELECT value * 7 AS offer_part FROM generate_series(1, 1000)",
    ] {
        execute(&session, sql).await;
    }
    // 10,000 parts, a 25th of them of brand 3 (400), against 1,000 offers.
    let join = "SELECT count(*) FROM shop.parts JOIN shop.offers ON part_id = offer_part \
                WHERE brand = 'Brand#3'";
    let build_side = |plan: String| -> String {
        let line = plan
            .lines()
            .find(|l| l.contains("HashJoinExec"))
            .unwrap_or_else(|| panic!("no HashJoinExec in {plan}"));
        let start = line.find("on=[(").expect(line) + "on=[(".len();
        line[start..].split('@').next().unwrap().to_string()
    };
    // Without counts the filter is guessed at 2,000 parts: the offers build.
    assert_eq!(build_side(explain(&session, join).await), "offer_part");
    let answer = rows(&session, join).await;
    assert_eq!(answer, ["40"]);

    // Columns named: only those are counted.
    let counted = rows(&session, "ANALYZE shop.parts (brand)").await;
    assert_eq!(counted, ["brand|25"]);
    assert_eq!(build_side(explain(&session, join).await), "part_id");
    assert_eq!(rows(&session, join).await, answer);
    // Two brands of 25: 800 parts.
    let two = join.replace("= 'Brand#3'", "IN ('Brand#3', 'Brand#4')");
    assert_eq!(build_side(explain(&session, &two).await), "part_id");
    assert_eq!(rows(&session, &two).await, ["80"]);
    // DataFusion's own estimates, as before, when the statistics registry is off.
    execute(
        &session,
        "SET datafusion.optimizer.use_statistics_registry = false",
    )
    .await;
    assert_eq!(build_side(explain(&session, join).await), "offer_part");
    execute(
        &session,
        "SET datafusion.optimizer.use_statistics_registry = true",
    )
    .await;

    // All columns, in the table's order, close to the truth (a sketch, not an exact count).
    let counted = rows(&session, "ANALYZE TABLE shop.parts").await;
    let columns: Vec<&str> = counted
        .iter()
        .map(|r| r.split('|').next().unwrap())
        .collect();
    assert_eq!(columns, ["part_id", "brand", "size"]);
    let ids: f64 = counted[0].split('|').nth(1).unwrap().parse().unwrap();
    assert!((ids - 10000.0).abs() < 500.0, "{counted:?}");
    assert_eq!(counted[1..], ["brand|25", "size|50"]);

    // A new session reads them from the table, after a write too.
    execute(
        &session,
        "INSERT INTO shop.parts VALUES (10001, 'Brand#3', 'size 1')",
    )
    .await;
    let session = lake.session().await;
    assert_eq!(build_side(explain(&session, join).await), "part_id");
    assert_eq!(rows(&session, join).await, answer);

    // Mistakes are named.
    for (sql, expected) in [
        (
            "ANALYZE shop.parts (colour)",
            "has no column 'colour' (its columns: part_id, brand, size)",
        ),
        ("ANALYZE shop.partz", "shop.partz does not exist"),
        ("ANALYZE", "ANALYZE needs a table"),
    ] {
        let err = session.sql(sql).await.err().expect(sql).to_string();
        assert!(err.contains(expected), "{sql}: {err}");
    }
}

/// The first key of each hash join in a plan, top join first.
fn join_keys(plan: &str) -> Vec<String> {
    plan.lines()
        .filter(|l| l.contains("HashJoinExec"))
        .map(|line| {
            let start = line.find("on=[(").expect(line) + "on=[(".len();
            line[start..].split('@').next().unwrap().to_string()
        })
        .collect()
}

#[tokio::test]
async fn inner_joins_run_in_the_order_that_keeps_results_small() {
    let lake = TempLake::new();
    let session = lake.session().await;
    for sql in [
        // 50,000 items of 5,000 orders, sold by 100 sellers in 25 countries.
        "CREATE TABLE shop.items AS SELECT value AS item, value % 5000 AS order_id, \
         value % 100 AS seller_id FROM generate_series(1, 50000)",
        "CREATE TABLE shop.orders AS SELECT value AS order_id, value % 1000 AS buyer \
         FROM generate_series(0, 4999)",
        "CREATE TABLE shop.sellers AS SELECT value AS seller_id, \
         'country ' || (value % 25) AS country FROM generate_series(0, 99)",
    ] {
        execute(&session, sql).await;
    }
    // Written: all 50,000 items joined with their orders, then with the 4 sellers of one
    // country. Ordered: the items of those sellers (2,000) first, then their orders.
    let sql = "SELECT count(*), sum(o.buyer) FROM shop.items i, shop.orders o, shop.sellers s \
               WHERE i.order_id = o.order_id AND i.seller_id = s.seller_id \
               AND s.country = 'country 3'";
    let ordered = rows(&session, sql).await;
    assert_eq!(join_keys(&explain(&session, sql).await)[0], "order_id");
    execute(&session, "SET gamelake.join_order = false").await;
    assert_eq!(join_keys(&explain(&session, sql).await)[0], "seller_id");
    let written = rows(&session, sql).await;
    assert_eq!(ordered, written);
    assert_eq!(ordered, ["2000|981000"]);

    // A query written in a good order keeps it.
    let good = "SELECT count(*) FROM shop.sellers s JOIN shop.items i ON i.seller_id = s.seller_id \
                JOIN shop.orders o ON i.order_id = o.order_id WHERE s.country = 'country 3'";
    let as_written = explain(&session, good).await;
    execute(&session, "SET gamelake.join_order = true").await;
    assert_eq!(explain(&session, good).await, as_written);
    assert_eq!(rows(&session, good).await, ["2000"]);
}

/// A join on one integer key whose keys are sparse (one in a hundred over a range of 200,000)
/// looks them up in an array indexed by the key, which DataFusion by itself keeps for ranges
/// under 1,024 or keys filling 15% of theirs, and answers as a hash table does.
#[tokio::test]
async fn sparse_integer_join_keys_are_looked_up_in_an_array() {
    let lake = TempLake::new();
    let session = lake.session().await;
    for sql in [
        "CREATE TABLE shop.orders AS SELECT value * 100 + 1 AS id, value % 7 AS region \
         FROM generate_series(0, 1999)",
        "CREATE TABLE shop.lines AS SELECT (value % 2000) * 100 + 1 AS order_id, value AS amount \
         FROM generate_series(1, 20000)",
    ] {
        execute(&session, sql).await;
    }
    let sql = "SELECT o.region, count(*), sum(l.amount) FROM shop.lines l \
               JOIN shop.orders o ON o.id = l.order_id GROUP BY o.region ORDER BY o.region";
    let total = "SELECT count(*), sum(l.amount) FROM shop.lines l \
                 JOIN shop.orders o ON o.id = l.order_id";
    assert!(metric(&analyze(&session, sql).await, "array_map_created_count") > 0);
    let with_array = rows(&session, sql).await;
    assert_eq!(with_array.len(), 7);
    assert_eq!(rows(&session, total).await, ["20000|200010000"]);

    execute(
        &session,
        "SET datafusion.execution.perfect_hash_join_small_build_threshold = 1024",
    )
    .await;
    assert_eq!(
        metric(&analyze(&session, sql).await, "array_map_created_count"),
        0
    );
    assert_eq!(rows(&session, sql).await, with_array);
}

/// A build side estimated at 200,000 rows (over DataFusion's 128 K) builds one hash table
/// for every partition, so the larger probe side is not repartitioned; the answer is the one
/// the partitioned join gives.
#[tokio::test]
async fn a_mid_sized_build_side_builds_one_table_for_every_partition() {
    let lake = TempLake::new();
    let session = lake.session().await;
    for sql in [
        "SET datafusion.execution.target_partitions = 2",
        "CREATE TABLE shop.orders AS SELECT value AS id, value % 7 AS region \
         FROM generate_series(1, 200000)",
        "CREATE TABLE shop.lines AS SELECT value % 400000 AS order_id, value AS amount \
         FROM generate_series(1, 800000)",
    ] {
        execute(&session, sql).await;
    }
    let sql = "SELECT o.region, count(*), sum(l.amount) FROM shop.lines l \
               JOIN shop.orders o ON o.id = l.order_id GROUP BY o.region ORDER BY o.region";
    let mode = |plan: String| {
        let line = plan
            .lines()
            .find(|l| l.contains("HashJoinExec"))
            .unwrap_or_else(|| panic!("{plan}"))
            .to_string();
        line.contains("mode=CollectLeft")
    };
    assert!(mode(explain(&session, sql).await));
    let one_table = rows(&session, sql).await;
    assert_eq!(one_table.len(), 7);

    execute(
        &session,
        "SET datafusion.optimizer.hash_join_single_partition_threshold_rows = 131072",
    )
    .await;
    execute(
        &session,
        "SET datafusion.optimizer.hash_join_single_partition_threshold = 1048576",
    )
    .await;
    assert!(!mode(explain(&session, sql).await));
    assert_eq!(rows(&session, sql).await, one_table);
}
