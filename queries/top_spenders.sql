-- Top 10 spenders in CNY regions, with their VIP tier and number of purchases.
-- Answers: who are the whales?
-- Parameters: none.
SELECT p.player_id,
       p.region,
       p.vip_tier,
       COUNT(*) AS purchases,
       SUM(pu.amount) AS spent
FROM game.purchases pu
JOIN game.players p ON p.player_id = pu.player_id
WHERE pu.currency = 'CNY'
GROUP BY p.player_id, p.region, p.vip_tier
ORDER BY spent DESC, p.player_id
LIMIT 10;
