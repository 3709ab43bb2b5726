-- Peak concurrent players per server, counted per minute.
-- Answers: how many players must each game server carry at its busiest minute?
-- Parameters: none.
WITH changes AS (
    SELECT server_id, date_trunc('minute', login_at) AS minute, 1 AS delta FROM game.sessions
    UNION ALL
    SELECT server_id, date_trunc('minute', logout_at) AS minute, -1 AS delta FROM game.sessions
), per_minute AS (
    SELECT server_id, minute, SUM(delta) AS delta
    FROM changes
    GROUP BY server_id, minute
), online AS (
    SELECT server_id,
           SUM(delta) OVER (PARTITION BY server_id ORDER BY minute
                            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS players_online
    FROM per_minute
)
SELECT server_id, MAX(players_online) AS peak_concurrent_players
FROM online
GROUP BY server_id
ORDER BY server_id;
