-- Q3 with drift_psi: the same PSI as the plain-SQL query DuckDB runs (baseline
-- deciles as edges, 1e-4 for empty bins), in one pass.
SELECT model,
       drift_psi(feature_x, ts >= TIMESTAMPTZ '2025-01-07 00:00:00+00') AS psi,
       count(*) FILTER (WHERE ts <  TIMESTAMPTZ '2025-01-07 00:00:00+00') AS n_base,
       count(*) FILTER (WHERE ts >= TIMESTAMPTZ '2025-01-07 00:00:00+00') AS n_cur
FROM events
WHERE ts >= TIMESTAMPTZ '2025-01-01 00:00:00+00'
  AND ts <  TIMESTAMPTZ '2025-01-08 00:00:00+00'
  AND feature_x IS NOT NULL
GROUP BY model
ORDER BY model;
