-- Item recommendations: items a player's friends bought that the player does not own,
-- ranked by how many friends bought them. Top 20 overall.
-- Answers: what should the shop suggest to a player?
-- Parameters: none.
WITH owned AS (
    SELECT DISTINCT player_id, item_id FROM game.purchases
), bought_by_friends AS (
    SELECT f.player_id, o.item_id, COUNT(DISTINCT f.friend_id) AS friends_bought
    FROM game.friendships f
    JOIN owned o ON o.player_id = f.friend_id
    GROUP BY f.player_id, o.item_id
)
SELECT b.player_id,
       b.item_id,
       i.category,
       b.friends_bought
FROM bought_by_friends b
JOIN game.items i ON i.item_id = b.item_id
LEFT JOIN owned mine ON mine.player_id = b.player_id AND mine.item_id = b.item_id
WHERE mine.player_id IS NULL
ORDER BY b.friends_bought DESC, b.player_id, b.item_id
LIMIT 20;
