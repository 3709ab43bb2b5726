-- DAU, WAU and MAU by region on the last day of data, and stickiness (DAU / MAU).
-- Answers: how big is each region's active base, and how often do its players come back?
-- Parameters: none.
WITH last_day AS (SELECT MAX(session_date) AS d FROM game.sessions)
SELECT s.region,
       COUNT(DISTINCT CASE WHEN s.session_date = l.d THEN s.player_id END) AS dau,
       COUNT(DISTINCT CASE WHEN s.session_date > l.d - INTERVAL '7 days' THEN s.player_id END) AS wau,
       COUNT(DISTINCT s.player_id) AS mau,
       ROUND(100.0 * COUNT(DISTINCT CASE WHEN s.session_date = l.d THEN s.player_id END)
             / COUNT(DISTINCT s.player_id), 1) AS stickiness_pct
FROM game.sessions s
CROSS JOIN last_day l
WHERE s.session_date > l.d - INTERVAL '30 days'
GROUP BY s.region
ORDER BY s.region;
