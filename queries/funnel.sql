-- Funnel by region: signed up -> came back on a later day -> first purchase -> repeat purchase.
-- Answers: where do new players drop off before paying?
-- Parameters: none.
WITH returned AS (
    SELECT DISTINCT s.player_id
    FROM game.sessions s
    JOIN game.players p ON p.player_id = s.player_id
    WHERE s.session_date > p.signup_date
), buyers AS (
    SELECT player_id, COUNT(*) AS purchases
    FROM game.purchases
    GROUP BY player_id
)
SELECT p.region,
       COUNT(*) AS signed_up,
       COUNT(r.player_id) AS returned,
       COUNT(b.player_id) AS purchased,
       SUM(CASE WHEN b.purchases > 1 THEN 1 ELSE 0 END) AS purchased_again
FROM game.players p
LEFT JOIN returned r ON r.player_id = p.player_id
LEFT JOIN buyers b ON b.player_id = p.player_id
GROUP BY p.region
ORDER BY p.region;
