-- Friend suggestions as of a day ("people you may know"): for each player who played in the 30
-- days before it, up to 20 players who also played then and are friends of their friends but not
-- yet their friends, ranked by mutual friends, ties broken by shared interests (the overlap of
-- the two players' reco.player_interests shares, 0..1).
-- Run after queries/reco/player_interests.sql with the same day; writes reco.friend_suggestions.
-- Parameters: $as_of (DATE): the first day not read, e.g.
--   gamelake sql -f queries/reco/player_interests.sql -f queries/reco/friend_suggestions.sql --param as_of=2026-11-01
CREATE OR REPLACE TABLE reco.friend_suggestions
    CLUSTER BY player_id, rank
AS
WITH friends AS (
    SELECT player_id, friend_id, CAST(since + INTERVAL '8 hours' AS DATE) AS since_day
    FROM game.friendships
    WHERE CAST(since + INTERVAL '8 hours' AS DATE) < CAST($as_of AS DATE)
), active AS (
    SELECT DISTINCT player_id
    FROM game.sessions
    WHERE session_date >= CAST($as_of AS DATE) - INTERVAL '30 days'
      AND session_date < CAST($as_of AS DATE)
), degrees AS (
    SELECT player_id, CAST(COUNT(*) AS DOUBLE) AS friends FROM friends GROUP BY player_id
), friends_of_friends AS (
    SELECT f1.player_id, f2.friend_id AS suggested_id, COUNT(*) AS mutual_friends,
           ROUND(SUM((0.1 + power(0.5, (CAST(CAST($as_of AS DATE) AS INT)
                                  - CAST(GREATEST(f1.since_day, f2.since_day) AS INT)) / 5.0)) / d.friends), 9) AS closeness
    FROM friends f1
    JOIN active a ON a.player_id = f1.player_id
    JOIN degrees d ON d.player_id = f1.friend_id
    JOIN friends f2 ON f2.player_id = f1.friend_id
    JOIN active b ON b.player_id = f2.friend_id
    WHERE f2.friend_id <> f1.player_id
    GROUP BY f1.player_id, f2.friend_id
), new_ones AS (
    SELECT fof.*
    FROM friends_of_friends fof
    LEFT JOIN friends existing
           ON existing.player_id = fof.player_id AND existing.friend_id = fof.suggested_id
    WHERE existing.player_id IS NULL
), shared AS (
    SELECT n.player_id, n.suggested_id, ROUND(SUM(LEAST(a.weight, b.weight)), 9) AS shared_interests
    FROM new_ones n
    JOIN reco.player_interests a ON a.player_id = n.player_id
    JOIN reco.player_interests b ON b.player_id = n.suggested_id AND b.interest = a.interest
    GROUP BY n.player_id, n.suggested_id
), ranked AS (
    SELECT n.player_id, n.suggested_id, n.mutual_friends, n.closeness,
           COALESCE(s.shared_interests, 0.0) AS shared_interests,
           ROW_NUMBER() OVER (PARTITION BY n.player_id
                              ORDER BY n.closeness DESC, COALESCE(s.shared_interests, 0.0) DESC, n.suggested_id) AS rank
    FROM new_ones n
    LEFT JOIN shared s ON s.player_id = n.player_id AND s.suggested_id = n.suggested_id
)
SELECT player_id, suggested_id, CAST(rank AS INT) AS rank,
       ROUND(closeness + 0.01 * shared_interests, 9) AS score,
       CAST(mutual_friends AS INT) AS mutual_friends, shared_interests,
       CAST($as_of AS DATE) AS computed_at
FROM ranked
WHERE rank <= 20;
