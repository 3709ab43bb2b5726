-- Similar players as of a day, for matchmaking and guild suggestions: for each player who played
-- in the 30 days before it, up to 10 others who also played then, in the same region, at a close
-- level (in the same band of 5 levels), with the same favourite interest (among at most 200 such
-- players drawn at random), ranked by how much their interests overlap (0..1, from
-- reco.player_interests) and by how many items both own (each shared item counting 0.1, at most 1).
-- Run after queries/reco/player_interests.sql with the same day; writes reco.similar_players.
-- Parameters: $as_of (DATE): the first day not read, e.g.
--   gamelake sql -f queries/reco/player_interests.sql -f queries/reco/similar_players.sql --param as_of=2026-11-01
CREATE OR REPLACE TABLE reco.similar_players
    CLUSTER BY player_id, rank
AS
WITH active AS (
    SELECT DISTINCT player_id
    FROM game.sessions
    WHERE session_date >= CAST($as_of AS DATE) - INTERVAL '30 days'
      AND session_date < CAST($as_of AS DATE)
), favourite AS (
    SELECT player_id, interest
    FROM (SELECT player_id, interest,
                 ROW_NUMBER() OVER (PARTITION BY player_id ORDER BY weight DESC, interest) AS n
          FROM reco.player_interests) ranked
    WHERE n = 1
), alike AS (
    SELECT p.player_id, p.region, CAST(p.level / 5 AS INT) AS band, f.interest
    FROM game.players p
    JOIN active a ON a.player_id = p.player_id
    JOIN favourite f ON f.player_id = p.player_id
), profiles AS (
    -- Groups of at most 200 alike players, cut in a fixed random order (a hash of the id), so
    -- the pairs grow with the players, not with their square.
    SELECT player_id, region, band, interest,
           CAST(ROW_NUMBER() OVER (PARTITION BY region, band, interest
                                   ORDER BY md5(CAST(player_id AS VARCHAR))) AS BIGINT) / 200 AS grp
    FROM alike
), pairs AS (
    SELECT a.player_id, b.player_id AS similar_id
    FROM profiles a
    JOIN profiles b ON b.region = a.region AND b.band = a.band AND b.interest = a.interest
                   AND b.grp = a.grp AND b.player_id <> a.player_id
), overlap AS (
    SELECT p.player_id, p.similar_id, ROUND(SUM(LEAST(x.weight, y.weight)), 9) AS shared_interests
    FROM pairs p
    JOIN reco.player_interests x ON x.player_id = p.player_id
    JOIN reco.player_interests y ON y.player_id = p.similar_id AND y.interest = x.interest
    GROUP BY p.player_id, p.similar_id
), owned AS (
    SELECT DISTINCT player_id, item_id
    FROM game.purchases
    WHERE purchase_date < CAST($as_of AS DATE)
), both_own AS (
    SELECT p.player_id, p.similar_id, COUNT(*) AS items
    FROM pairs p
    JOIN owned x ON x.player_id = p.player_id
    JOIN owned y ON y.player_id = p.similar_id AND y.item_id = x.item_id
    GROUP BY p.player_id, p.similar_id
), ranked AS (
    SELECT o.player_id, o.similar_id,
           o.shared_interests + LEAST(COALESCE(b.items, 0) * 0.1, 1.0) AS score,
           ROW_NUMBER() OVER (PARTITION BY o.player_id
                              ORDER BY o.shared_interests + LEAST(COALESCE(b.items, 0) * 0.1, 1.0) DESC, o.similar_id) AS rank
    FROM overlap o
    LEFT JOIN both_own b ON b.player_id = o.player_id AND b.similar_id = o.similar_id
)
SELECT player_id, similar_id, CAST(rank AS INT) AS rank, score, CAST($as_of AS DATE) AS computed_at
FROM ranked
WHERE rank <= 10;
