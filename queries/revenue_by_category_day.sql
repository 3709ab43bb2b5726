-- Revenue by item category and day over the last 14 days of data, per currency.
-- Answers: what sells day by day, and did an event or a new item move it?
-- Parameters: none.
SELECT pu.purchase_date AS day,
       i.category,
       pu.currency,
       COUNT(*) AS purchases,
       SUM(pu.amount) AS revenue
FROM game.purchases pu
JOIN game.items i ON i.item_id = pu.item_id
WHERE pu.purchase_date > (SELECT MAX(purchase_date) FROM game.purchases) - INTERVAL '14 days'
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3;
