-- Item recommendations from similar players: "players who bought what you bought also bought",
-- scored by how many such co-purchases point at an item the player does not own. Top 20 overall.
-- Answers: what should the shop suggest, beyond what friends bought?
-- Parameters: none.
WITH owned AS (
    SELECT DISTINCT player_id, item_id FROM game.purchases
), bought_together AS (
    SELECT a.item_id, b.item_id AS also_item, COUNT(*) AS buyers
    FROM owned a
    JOIN owned b ON a.player_id = b.player_id AND a.item_id <> b.item_id
    GROUP BY a.item_id, b.item_id
), scores AS (
    SELECT o.player_id, t.also_item AS item_id, SUM(t.buyers) AS score
    FROM owned o
    JOIN bought_together t ON t.item_id = o.item_id
    GROUP BY o.player_id, t.also_item
)
SELECT s.player_id,
       s.item_id,
       i.category,
       s.score
FROM scores s
JOIN game.items i ON i.item_id = s.item_id
LEFT JOIN owned mine ON mine.player_id = s.player_id AND mine.item_id = s.item_id
WHERE mine.player_id IS NULL
ORDER BY s.score DESC, s.player_id, s.item_id
LIMIT 20;
