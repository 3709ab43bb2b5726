-- Revenue by item category and month, per currency.
-- Answers: what sells, and how does it move over the year?
-- Parameters: none.
SELECT CAST(date_trunc('month', pu.purchase_date) AS DATE) AS month,
       i.category,
       pu.currency,
       COUNT(*) AS purchases,
       SUM(pu.amount) AS revenue
FROM game.purchases pu
JOIN game.items i ON i.item_id = pu.item_id
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3;
