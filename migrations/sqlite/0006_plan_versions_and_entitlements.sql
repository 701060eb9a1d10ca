-- Plans are versioned (issue 22): a price change is a new version, and a licence keeps
-- the version it was sold on until it ends (a new licence takes the current one).
-- Versions never change (the triggers below refuse it). The prices move off `plans`.
-- Keep in step with ../postgres/0006_plan_versions_and_entitlements.sql.
CREATE TABLE plan_versions (
    id                            INTEGER PRIMARY KEY,
    plan_id                       INTEGER NOT NULL REFERENCES plans(id),
    version                       INTEGER NOT NULL CHECK (version > 0),
    currency                      TEXT NOT NULL,
    monthly_price_cents           INTEGER NOT NULL CHECK (monthly_price_cents >= 0),
    included_viewer_hours         INTEGER NOT NULL CHECK (included_viewer_hours >= 0),
    overage_cents_per_viewer_hour INTEGER NOT NULL CHECK (overage_cents_per_viewer_hour >= 0),
    created_at                    INTEGER NOT NULL,
    UNIQUE (plan_id, version)
);
INSERT INTO plan_versions (plan_id, version, currency, monthly_price_cents, included_viewer_hours,
    overage_cents_per_viewer_hour, created_at)
SELECT id, 1, currency, monthly_price_cents, included_viewer_hours, overage_cents_per_viewer_hour, 0 FROM plans;
ALTER TABLE plans DROP COLUMN currency;
ALTER TABLE plans DROP COLUMN monthly_price_cents;
ALTER TABLE plans DROP COLUMN included_viewer_hours;
ALTER TABLE plans DROP COLUMN overage_cents_per_viewer_hour;

ALTER TABLE licenses ADD COLUMN plan_version_id INTEGER REFERENCES plan_versions(id);
UPDATE licenses SET plan_version_id =
    (SELECT v.id FROM plan_versions v WHERE v.plan_id = licenses.plan_id AND v.version = 1);

-- An issued line names the plan version it was priced on.
ALTER TABLE invoice_lines ADD COLUMN plan_version INTEGER NOT NULL DEFAULT 1;

-- Entitlements: a plan is offered to every account, or only to the accounts it is
-- granted to (a partner's discount plan); the platform grants.
ALTER TABLE plans ADD COLUMN offered INTEGER NOT NULL DEFAULT 1 CHECK (offered IN (0, 1));
CREATE TABLE plan_grants (
    account_id  INTEGER NOT NULL REFERENCES accounts(id),
    plan_id     INTEGER NOT NULL REFERENCES plans(id),
    granted_at  INTEGER NOT NULL,
    PRIMARY KEY (account_id, plan_id)
);

CREATE TRIGGER plan_versions_no_update BEFORE UPDATE ON plan_versions
BEGIN
    SELECT RAISE(ABORT, 'a price is changed by adding a plan version, never in place');
END;
CREATE TRIGGER plan_versions_no_delete BEFORE DELETE ON plan_versions
BEGIN
    SELECT RAISE(ABORT, 'a price is changed by adding a plan version, never in place');
END;
