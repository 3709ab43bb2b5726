-- ARPU, ARPPU and paying rate by region and month.
-- Answers: how much does an active player, and a paying player, spend per month in each region?
-- Parameters: none. Amounts are in the region's currency (CNY in China, USD overseas).
WITH active AS (
    SELECT CAST(date_trunc('month', session_date) AS DATE) AS month,
           region,
           COUNT(DISTINCT player_id) AS active_players
    FROM game.sessions
    GROUP BY 1, 2
), paying AS (
    SELECT CAST(date_trunc('month', purchase_date) AS DATE) AS month,
           region,
           COUNT(DISTINCT player_id) AS payers,
           SUM(amount) AS revenue
    FROM game.purchases
    GROUP BY 1, 2
)
SELECT a.month,
       a.region,
       a.active_players,
       COALESCE(p.payers, 0) AS payers,
       ROUND(100.0 * COALESCE(p.payers, 0) / a.active_players, 2) AS paying_rate_pct,
       ROUND(CAST(COALESCE(p.revenue, 0) AS DOUBLE) / a.active_players, 2) AS arpu,
       ROUND(CAST(p.revenue AS DOUBLE) / p.payers, 2) AS arppu
FROM active a
LEFT JOIN paying p ON p.month = a.month AND p.region = a.region
ORDER BY a.month, a.region;
