-- One player's last 30 active days: sessions, minutes played, purchases and money spent per day.
-- Answers: what did this player do? (support tickets, fraud checks, a one-player lookup)
-- Parameters: $player_id (BIGINT): the player, e.g. gamelake sql -f queries/player_activity.sql --param player_id=42
WITH days AS (
    SELECT session_date AS day,
           COUNT(*) AS sessions,
           ROUND(SUM(EXTRACT(EPOCH FROM logout_at) - EXTRACT(EPOCH FROM login_at)) / 60.0, 1) AS minutes_played
    FROM game.sessions
    WHERE player_id = $player_id
    GROUP BY session_date
), buys AS (
    SELECT purchase_date AS day,
           COUNT(*) AS purchases,
           SUM(amount) AS spent
    FROM game.purchases
    WHERE player_id = $player_id
    GROUP BY purchase_date
)
SELECT d.day,
       d.sessions,
       d.minutes_played,
       COALESCE(b.purchases, 0) AS purchases,
       COALESCE(b.spent, 0) AS spent
FROM days d
LEFT JOIN buys b ON b.day = d.day
ORDER BY d.day DESC
LIMIT 30;
