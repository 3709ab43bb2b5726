-- One player's whole history: sessions and purchases per day (parameter $player_id).
-- With more years there are more files; statistics on the sorted player_id and bloom filters
-- must skip the ones without the player.
WITH days AS (
    SELECT session_date AS day, COUNT(*) AS sessions
    FROM game.sessions
    WHERE player_id = $player_id
    GROUP BY session_date
), buys AS (
    SELECT purchase_date AS day, COUNT(*) AS purchases, SUM(amount) AS spent
    FROM game.purchases
    WHERE player_id = $player_id
    GROUP BY purchase_date
)
SELECT d.day, d.sessions, COALESCE(b.purchases, 0) AS purchases, COALESCE(b.spent, 0) AS spent
FROM days d LEFT JOIN buys b ON b.day = d.day
ORDER BY d.day DESC;
