-- Item suggestions as of a day: for each player who played in the 30 days before it, the 20 items
-- they do not own with the best blend of three signals, each scaled to 0..1 per player:
--   interests        the player's interest in the item's category (reco.player_interests) times
--                    the item's share of its category's sales in the last 30 days;
--   friends_bought   how many of the player's friends bought the item in the last 30 days;
--   bought_together  how often the item is owned with the items the player owns (cosine
--                    similarity of buyers, summed over what the player owns).
-- `reason` names the signal that added most to the score ("because your friends bought it").
-- Run after queries/reco/player_interests.sql with the same day; writes reco.item_suggestions.
-- Parameters: $as_of (DATE): the first day not read, e.g.
--   gamelake sql -f queries/reco/player_interests.sql -f queries/reco/item_suggestions.sql --param as_of=2026-11-01
CREATE OR REPLACE TABLE reco.item_suggestions
    CLUSTER BY player_id, rank               -- sorted: one player's rows are one page of the page index
AS
WITH owned AS (
    SELECT DISTINCT player_id, item_id
    FROM game.purchases
    WHERE purchase_date < CAST($as_of AS DATE)
), active AS (
    SELECT DISTINCT player_id
    FROM game.sessions
    WHERE session_date >= CAST($as_of AS DATE) - INTERVAL '30 days'
      AND session_date < CAST($as_of AS DATE)
), recent AS (
    SELECT player_id, item_id
    FROM game.purchases
    WHERE purchase_date >= CAST($as_of AS DATE) - INTERVAL '30 days'
      AND purchase_date < CAST($as_of AS DATE)
), sales AS (
    SELECT i.item_id, i.category, CAST(COUNT(r.item_id) + 1 AS DOUBLE) AS sold
    FROM game.items i
    LEFT JOIN recent r ON r.item_id = i.item_id
    GROUP BY i.item_id, i.category
), shares AS (
    SELECT item_id, category, sold / SUM(sold) OVER (PARTITION BY category) AS share
    FROM sales
), by_interest AS (
    SELECT t.player_id, s.item_id, t.weight * s.share AS score
    FROM reco.player_interests t
    JOIN active a ON a.player_id = t.player_id
    JOIN shares s ON s.category = t.interest
), by_friends AS (
    SELECT f.player_id, r.item_id, CAST(COUNT(DISTINCT f.friend_id) AS DOUBLE) AS score
    FROM game.friendships f
    JOIN active a ON a.player_id = f.player_id
    JOIN recent r ON r.player_id = f.friend_id
    WHERE CAST(f.since + INTERVAL '8 hours' AS DATE) < CAST($as_of AS DATE)
    GROUP BY f.player_id, r.item_id
), buyers AS (
    SELECT item_id, CAST(COUNT(*) AS DOUBLE) AS buyers FROM owned GROUP BY item_id
), together AS (
    SELECT a.item_id, b.item_id AS other, CAST(COUNT(*) AS DOUBLE) AS both_bought
    FROM owned a
    JOIN owned b ON b.player_id = a.player_id AND b.item_id <> a.item_id
    GROUP BY a.item_id, b.item_id
), similar_items AS (
    SELECT t.item_id, t.other, t.both_bought / sqrt(x.buyers * y.buyers) AS similarity
    FROM together t
    JOIN buyers x ON x.item_id = t.item_id
    JOIN buyers y ON y.item_id = t.other
), by_together AS (
    SELECT o.player_id, s.other AS item_id, SUM(s.similarity) AS score
    FROM owned o
    JOIN active a ON a.player_id = o.player_id
    JOIN similar_items s ON s.item_id = o.item_id
    GROUP BY o.player_id, s.other
), signals AS (
    SELECT player_id, item_id, score AS interests, 0.0 AS friends, 0.0 AS together FROM by_interest
    UNION ALL
    SELECT player_id, item_id, 0.0, score, 0.0 FROM by_friends
    UNION ALL
    SELECT player_id, item_id, 0.0, 0.0, score FROM by_together
), candidates AS (
    SELECT s.player_id, s.item_id,
           SUM(s.interests) AS interests, SUM(s.friends) AS friends, SUM(s.together) AS together
    FROM signals s
    LEFT JOIN owned o ON o.player_id = s.player_id AND o.item_id = s.item_id
    WHERE o.player_id IS NULL
    GROUP BY s.player_id, s.item_id
), scaled AS (
    SELECT player_id, item_id,
           1.0 * COALESCE(interests / NULLIF(MAX(interests) OVER (PARTITION BY player_id), 0), 0) AS interests,
           0.8 * COALESCE(friends / NULLIF(MAX(friends) OVER (PARTITION BY player_id), 0), 0) AS friends,
           0.5 * COALESCE(together / NULLIF(MAX(together) OVER (PARTITION BY player_id), 0), 0) AS together
    FROM candidates
), ranked AS (
    SELECT player_id, item_id, ROUND(interests + friends + together, 9) AS score,
           CASE WHEN friends >= interests AND friends >= together THEN 'friends_bought'
                WHEN together >= interests THEN 'bought_together'
                ELSE 'interests' END AS reason,
           ROW_NUMBER() OVER (PARTITION BY player_id ORDER BY ROUND(interests + friends + together, 9) DESC, item_id) AS rank
    FROM scaled
)
SELECT player_id, item_id, CAST(rank AS INT) AS rank, score, reason, CAST($as_of AS DATE) AS computed_at
FROM ranked
WHERE rank <= 20;
