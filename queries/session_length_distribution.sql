-- Distribution of session lengths in minutes.
-- Answers: how long do players stay when they log in?
-- Parameters: none.
SELECT CASE
           WHEN minutes < 5 THEN '1: under 5 min'
           WHEN minutes < 15 THEN '2: 5-15 min'
           WHEN minutes < 30 THEN '3: 15-30 min'
           WHEN minutes < 60 THEN '4: 30-60 min'
           WHEN minutes < 120 THEN '5: 1-2 h'
           ELSE '6: over 2 h'
       END AS session_length,
       COUNT(*) AS sessions
FROM (
    SELECT (EXTRACT(EPOCH FROM logout_at) - EXTRACT(EPOCH FROM login_at)) / 60.0 AS minutes
    FROM game.sessions
) t
GROUP BY 1
ORDER BY 1;
