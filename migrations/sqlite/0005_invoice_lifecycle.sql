-- Invoices become issued documents (issue 22): a preview is computed and never
-- written; finalizing gives an invoice a gapless number in its issuer's series and
-- copies every price onto it; a finalized invoice never changes (the triggers below
-- refuse it) except to be voided, which issues a credit note. The old tables only
-- ever held drafts (nothing could issue one), so they are replaced.
-- Keep in step with ../postgres/0005_invoice_lifecycle.sql.
DROP TABLE invoice_lines;
DROP TABLE invoices;

-- One gapless series per issuer: the last number given. Taken and advanced in the
-- transaction that issues the document, so a failed issue leaves no gap.
CREATE TABLE invoice_series (
    issuer  TEXT PRIMARY KEY,
    last    INTEGER NOT NULL CHECK (last > 0)
);

CREATE TABLE invoices (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    issuer        TEXT NOT NULL,
    seq           INTEGER NOT NULL CHECK (seq > 0),
    number        TEXT NOT NULL UNIQUE,
    kind          TEXT NOT NULL CHECK (kind IN ('invoice', 'credit_note')),
    account_id    INTEGER NOT NULL REFERENCES accounts(id),
    period_start  INTEGER NOT NULL,
    period_end    INTEGER NOT NULL,
    currency      TEXT NOT NULL,
    total_cents   INTEGER NOT NULL,
    -- issuing: lines are being written (only inside the issuing transaction).
    status        TEXT NOT NULL CHECK (status IN ('issuing', 'finalized', 'void')),
    -- A credit note: the invoice it voids.
    credits       INTEGER REFERENCES invoices(id),
    issued_at     INTEGER NOT NULL,
    voided_at     INTEGER,
    void_reason   TEXT,
    UNIQUE (issuer, seq),
    CHECK (period_end > period_start),
    CHECK ((kind = 'credit_note') = (credits IS NOT NULL)),
    CHECK ((status = 'void') = (voided_at IS NOT NULL))
);
-- One live invoice per account, month and currency (a voided one can be reissued).
CREATE UNIQUE INDEX invoices_live ON invoices (account_id, period_start, currency)
    WHERE kind = 'invoice' AND status <> 'void';
CREATE INDEX invoices_account ON invoices (account_id, id);

-- Every price is copied here: a plan changed later changes no issued line.
CREATE TABLE invoice_lines (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    invoice_id        INTEGER NOT NULL REFERENCES invoices(id),
    kind              TEXT NOT NULL CHECK (kind IN ('licence', 'overage', 'adjustment', 'credit')),
    channel_id        INTEGER REFERENCES channels(id),
    channel           TEXT NOT NULL,
    plan              TEXT NOT NULL,
    description       TEXT NOT NULL,
    quantity          INTEGER NOT NULL,
    unit_cents        INTEGER NOT NULL,
    amount_cents      INTEGER NOT NULL,
    -- What the line bills: the licence's time in the period, the viewer-seconds
    -- watched in it and those the plan includes (the basis of a later adjustment).
    span_start        INTEGER NOT NULL,
    span_end          INTEGER NOT NULL,
    viewer_seconds    INTEGER NOT NULL CHECK (viewer_seconds >= 0),
    included_seconds  INTEGER NOT NULL CHECK (included_seconds >= 0),
    -- An adjustment or credit: the line it adds to or cancels.
    adjusts           INTEGER REFERENCES invoice_lines(id),
    CHECK (amount_cents = quantity * unit_cents),
    CHECK ((kind IN ('adjustment', 'credit')) = (adjusts IS NOT NULL))
);
CREATE INDEX invoice_lines_invoice ON invoice_lines (invoice_id);
CREATE INDEX invoice_lines_adjusts ON invoice_lines (adjusts);

CREATE TRIGGER invoice_series_no_delete BEFORE DELETE ON invoice_series
BEGIN
    SELECT RAISE(ABORT, 'invoice series: numbers only ever advance by one');
END;
CREATE TRIGGER invoice_series_advance BEFORE UPDATE ON invoice_series
WHEN NEW.issuer IS NOT OLD.issuer OR NEW.last IS NOT OLD.last + 1
BEGIN
    SELECT RAISE(ABORT, 'invoice series: numbers only ever advance by one');
END;

CREATE TRIGGER invoices_no_delete BEFORE DELETE ON invoices
BEGIN
    SELECT RAISE(ABORT, 'an issued invoice is never deleted (void it)');
END;
CREATE TRIGGER invoices_immutable BEFORE UPDATE ON invoices
WHEN NEW.id IS NOT OLD.id OR NEW.issuer IS NOT OLD.issuer OR NEW.seq IS NOT OLD.seq
  OR NEW.number IS NOT OLD.number OR NEW.kind IS NOT OLD.kind OR NEW.account_id IS NOT OLD.account_id
  OR NEW.period_start IS NOT OLD.period_start OR NEW.period_end IS NOT OLD.period_end
  OR NEW.currency IS NOT OLD.currency OR NEW.total_cents IS NOT OLD.total_cents
  OR NEW.credits IS NOT OLD.credits OR NEW.issued_at IS NOT OLD.issued_at
  OR NOT (
    (OLD.status = 'issuing' AND NEW.status = 'finalized' AND NEW.voided_at IS NULL
      AND NEW.total_cents = (SELECT COALESCE(SUM(amount_cents), 0) FROM invoice_lines WHERE invoice_id = NEW.id))
    OR (OLD.status = 'finalized' AND NEW.status = 'void' AND NEW.kind = 'invoice')
  )
BEGIN
    SELECT RAISE(ABORT, 'a finalized invoice cannot be changed (void it with a credit note)');
END;

CREATE TRIGGER invoice_lines_only_while_issuing BEFORE INSERT ON invoice_lines
WHEN (SELECT status FROM invoices WHERE id = NEW.invoice_id) IS NOT 'issuing'
BEGIN
    SELECT RAISE(ABORT, 'invoice line: its invoice is already issued');
END;
CREATE TRIGGER invoice_lines_no_update BEFORE UPDATE ON invoice_lines
BEGIN
    SELECT RAISE(ABORT, 'lines of an issued invoice never change');
END;
CREATE TRIGGER invoice_lines_no_delete BEFORE DELETE ON invoice_lines
BEGIN
    SELECT RAISE(ABORT, 'lines of an issued invoice never change');
END;
