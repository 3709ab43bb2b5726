-- Player interests as of a day, from behaviour only: the game modes a player spends time in (each
-- mode belongs to an item category: arena players buy weapons) and the categories they buy from,
-- each weighted by age (halved every 30 days; a purchase counts as much as an hour of play), as
-- shares that sum to 1 per player. Written to reco.player_interests, which the item and friend
-- suggestions read.
-- Answers: what does each player like, as far as what they did before the day shows?
-- Parameters: $as_of (DATE): the first day not read, e.g.
--   gamelake sql -f queries/reco/player_interests.sql --param as_of=2026-11-01
CREATE OR REPLACE TABLE reco.player_interests
    CLUSTER BY player_id, interest
AS
WITH modes (game_mode, interest) AS (
    VALUES ('fashion_show', 'skins'), ('arena', 'weapons'), ('speedrun', 'boosts'),
           ('lucky_draw', 'gacha'), ('season_quest', 'battle_pass'), ('trading', 'currency_pack')
), played AS (
    SELECT s.player_id,
           m.interest,
           (EXTRACT(EPOCH FROM s.logout_at) - EXTRACT(EPOCH FROM s.login_at)) / 3600.0
               * power(0.5, (CAST(CAST($as_of AS DATE) AS INT) - CAST(s.session_date AS INT)) / 30.0) AS weight
    FROM game.sessions s
    JOIN modes m ON m.game_mode = s.game_mode
    WHERE s.session_date >= CAST($as_of AS DATE) - INTERVAL '90 days'
      AND s.session_date < CAST($as_of AS DATE)
), bought AS (
    SELECT p.player_id,
           i.category AS interest,
           power(0.5, (CAST(CAST($as_of AS DATE) AS INT) - CAST(p.purchase_date AS INT)) / 30.0) AS weight
    FROM game.purchases p
    JOIN game.items i ON i.item_id = p.item_id
    WHERE p.purchase_date >= CAST($as_of AS DATE) - INTERVAL '365 days'
      AND p.purchase_date < CAST($as_of AS DATE)
), summed AS (
    SELECT player_id, interest, SUM(weight) AS weight
    FROM (SELECT * FROM played UNION ALL SELECT * FROM bought) behaviour
    GROUP BY player_id, interest
)
SELECT player_id,
       interest,
       ROUND(weight / SUM(weight) OVER (PARTITION BY player_id), 9) AS weight,
       CAST($as_of AS DATE) AS as_of
FROM summed;
