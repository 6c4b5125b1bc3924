-- Continuous reconciliation (issue: admin monitoring stream and reconciliation). The system keeps
-- seat state in three places — the category actor's memory, Postgres (the truth) and the Redis
-- read-model mirror — and order state across orders, seats, payment bills and the provider. A
-- reconciler pass compares them; every divergence becomes a finding that operators see.

-- V1's findings table predates the design: statuses now follow the operators' vocabulary, a
-- finding names its subject (so a pass updates the open finding instead of adding a duplicate)
-- and says what was repaired automatically.
ALTER TABLE reconciliation_findings DROP CONSTRAINT reconciliation_findings_status_check;
ALTER TABLE reconciliation_findings ALTER COLUMN status SET DEFAULT 'unreconciled';
UPDATE reconciliation_findings SET status = CASE status WHEN 'problem' THEN 'reconciled_with_problem'
                                                        WHEN 'handled' THEN 'problem_handled'
                                                        ELSE 'reconciled_ok' END;
ALTER TABLE reconciliation_findings ADD CONSTRAINT reconciliation_findings_status_check
    CHECK (status IN ('unreconciled', 'reconciled_with_problem', 'reconciled_ok', 'problem_handled'));
-- What the finding is about within its kind: a seat id, an order number, a category id.
ALTER TABLE reconciliation_findings ADD COLUMN subject TEXT NOT NULL DEFAULT '';
-- The automatic repair applied, if the fix was certain (NULL: raised for an operator).
ALTER TABLE reconciliation_findings ADD COLUMN repair TEXT;
ALTER TABLE reconciliation_findings ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now();
ALTER TABLE reconciliation_findings ADD COLUMN handled_by BIGINT;
ALTER TABLE reconciliation_findings ADD COLUMN handled_note TEXT;
-- One open finding per subject: a divergence seen on every pass stays one row.
CREATE UNIQUE INDEX reconciliation_findings_open ON reconciliation_findings (kind, subject)
    WHERE status IN ('unreconciled', 'reconciled_with_problem');
-- The operators' list, newest first per status.
CREATE INDEX reconciliation_findings_by_status ON reconciliation_findings (status, id DESC);

-- One row per reconciler pass: what it compared and what it cost (shown in the admin stream).
CREATE TABLE reconciliation_runs (
    id              BIGSERIAL PRIMARY KEY,
    trigger         TEXT NOT NULL CHECK (trigger IN ('continuous', 'on_demand')),
    started_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    duration_ms     DOUBLE PRECISION NOT NULL,
    categories      INT NOT NULL,
    seats           INT NOT NULL,
    orders          INT NOT NULL,
    findings        INT NOT NULL,
    repaired        INT NOT NULL
);
