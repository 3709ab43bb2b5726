-- Friend recommendations: friends of friends, ranked by the number of mutual friends,
-- excluding the player and people who are already friends. Top 20 overall.
-- Answers: whom should the game suggest as a friend?
-- Parameters: none.
WITH friends_of_friends AS (
    SELECT f1.player_id,
           f2.friend_id AS suggested_id,
           COUNT(*) AS mutual_friends
    FROM game.friendships f1
    JOIN game.friendships f2 ON f2.player_id = f1.friend_id
    WHERE f2.friend_id <> f1.player_id
    GROUP BY f1.player_id, f2.friend_id
)
SELECT fof.player_id,
       fof.suggested_id,
       fof.mutual_friends
FROM friends_of_friends fof
LEFT JOIN game.friendships existing
       ON existing.player_id = fof.player_id AND existing.friend_id = fof.suggested_id
WHERE existing.player_id IS NULL
ORDER BY fof.mutual_friends DESC, fof.player_id, fof.suggested_id
LIMIT 20;
