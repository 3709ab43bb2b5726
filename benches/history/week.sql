-- One week's aggregate: daily active players and revenue by region, the last week of data
-- (the benchmarks generate the demo with --end 2026-10-31). Partition pruning keeps it flat.
WITH active AS (
    SELECT session_date AS day, region, COUNT(DISTINCT player_id) AS dau
    FROM game.sessions
    WHERE session_date BETWEEN DATE '2026-10-25' AND DATE '2026-10-31'
    GROUP BY 1, 2
), revenue AS (
    SELECT purchase_date AS day, region, SUM(amount) AS revenue
    FROM game.purchases
    WHERE purchase_date BETWEEN DATE '2026-10-25' AND DATE '2026-10-31'
    GROUP BY 1, 2
)
SELECT a.day, a.region, a.dau, COALESCE(r.revenue, 0) AS revenue
FROM active a LEFT JOIN revenue r ON r.day = a.day AND r.region = a.region
ORDER BY a.day, a.region;
