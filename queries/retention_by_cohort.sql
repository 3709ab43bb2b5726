-- D1 / D7 / D30 retention by monthly signup cohort (server day, UTC+8).
-- Answers: of the players who signed up in a month, what share came back 1, 7 and 30 days later?
-- Parameters: none.
WITH returns AS (
    SELECT p.player_id,
           CAST(date_trunc('month', p.signup_date) AS DATE) AS cohort_month,
           MAX(CASE WHEN s.session_date = p.signup_date + INTERVAL '1 day' THEN 1 ELSE 0 END) AS d1,
           MAX(CASE WHEN s.session_date = p.signup_date + INTERVAL '7 days' THEN 1 ELSE 0 END) AS d7,
           MAX(CASE WHEN s.session_date = p.signup_date + INTERVAL '30 days' THEN 1 ELSE 0 END) AS d30
    FROM game.players p
    LEFT JOIN game.sessions s ON s.player_id = p.player_id
    GROUP BY p.player_id, 2
)
SELECT cohort_month,
       COUNT(*) AS players,
       ROUND(100.0 * SUM(d1) / COUNT(*), 1) AS d1_pct,
       ROUND(100.0 * SUM(d7) / COUNT(*), 1) AS d7_pct,
       ROUND(100.0 * SUM(d30) / COUNT(*), 1) AS d30_pct
FROM returns
GROUP BY cohort_month
ORDER BY cohort_month;
