-- Daily active users (DAU) by region over the last 7 days of data.
-- Answers: how many distinct players played each day in each region?
-- Parameters: none; the window ends on the last day that has sessions.
SELECT s.session_date AS day,
       s.region,
       COUNT(DISTINCT s.player_id) AS dau
FROM game.sessions s
WHERE s.session_date > (SELECT MAX(session_date) FROM game.sessions) - INTERVAL '7 days'
GROUP BY s.session_date, s.region
ORDER BY day, s.region;
