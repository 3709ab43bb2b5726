-- Revenue, paying players and purchases per region since a day.
-- Answers: where does the money come from? (a breakdown for a bar chart)
-- Parameters: $since (DATE): the first day counted, e.g. --param since=2026-10-01
SELECT region,
       SUM(amount) AS revenue,
       COUNT(DISTINCT player_id) AS payers,
       COUNT(*) AS purchases
FROM game.purchases
WHERE purchase_date >= $since
GROUP BY region
ORDER BY revenue DESC;
