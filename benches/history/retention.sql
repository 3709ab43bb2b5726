-- One month's retention: of the players who signed up in September 2026, the share that came
-- back 1, 7 and 30 days later. Only September's and October's session partitions are read.
WITH cohort AS (
    SELECT player_id, signup_date
    FROM game.players
    WHERE signup_date BETWEEN DATE '2026-09-01' AND DATE '2026-09-30'
), returns AS (
    SELECT c.player_id,
           MAX(CASE WHEN s.session_date = c.signup_date + INTERVAL '1 day' THEN 1 ELSE 0 END) AS d1,
           MAX(CASE WHEN s.session_date = c.signup_date + INTERVAL '7 days' THEN 1 ELSE 0 END) AS d7,
           MAX(CASE WHEN s.session_date = c.signup_date + INTERVAL '30 days' THEN 1 ELSE 0 END) AS d30
    FROM cohort c
    LEFT JOIN game.sessions s
      ON s.player_id = c.player_id
     AND s.session_date BETWEEN DATE '2026-09-02' AND DATE '2026-10-31'
    GROUP BY c.player_id
)
SELECT COUNT(*) AS players,
       ROUND(100.0 * SUM(d1) / COUNT(*), 1) AS d1_pct,
       ROUND(100.0 * SUM(d7) / COUNT(*), 1) AS d7_pct,
       ROUND(100.0 * SUM(d30) / COUNT(*), 1) AS d30_pct
FROM returns;
