//! Plans, their price versions, and which accounts may buy them.
//!
//! A plan's price is versioned: changing it adds a version (the database refuses to
//! change one in place), and a licence keeps the version it was sold on until it ends —
//! a new licence takes the current one. A plan is offered to every account, or, when
//! not `offered`, only to the accounts the platform granted it to (a partner's discount
//! plan).

use sqlx::Row;

use super::{Db, DbError, Result, conflict};

/// What a plan costs, in one version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Price {
    /// ISO 4217, three letters.
    pub currency: String,
    pub monthly_price_cents: i64,
    pub included_viewer_hours: i64,
    pub overage_cents_per_viewer_hour: i64,
}

/// A plan: what a licence sells.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    pub name: String,
    /// Licences on it allow ads.
    pub commercial: bool,
    /// Every account may buy it; otherwise only those it was granted to.
    pub offered: bool,
    #[serde(flatten)]
    pub price: Price,
}

/// A plan as sold now: its id, its current version and that version's price.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlanVersion {
    pub id: i64,
    pub version: i64,
    #[serde(flatten)]
    pub plan: Plan,
}

fn check_price(p: &Price) -> Result<()> {
    let amounts = [p.monthly_price_cents, p.included_viewer_hours, p.overage_cents_per_viewer_hour];
    if p.currency.len() != 3 || !p.currency.bytes().all(|b| b.is_ascii_uppercase()) || amounts.iter().any(|&a| a < 0) {
        return Err(DbError::Invalid("plan price: a 3-letter currency (EUR) and amounts of 0 or more".into()));
    }
    Ok(())
}

/// Plans with their current version's price; `{where}` filters `p`.
const CURRENT: &str = "SELECT p.id, v.version, p.name, p.commercial, p.offered, v.currency, v.monthly_price_cents, \
       v.included_viewer_hours, v.overage_cents_per_viewer_hour \
     FROM plans p JOIN plan_versions v ON v.plan_id = p.id \
       AND v.version = (SELECT MAX(version) FROM plan_versions WHERE plan_id = p.id)";

fn plan_version(r: &sqlx::any::AnyRow) -> Result<PlanVersion> {
    Ok(PlanVersion {
        id: r.try_get(0)?,
        version: r.try_get(1)?,
        plan: Plan {
            name: r.try_get(2)?,
            commercial: r.try_get::<i64, _>(3)? == 1,
            offered: r.try_get::<i64, _>(4)? == 1,
            price: Price {
                currency: r.try_get(5)?,
                monthly_price_cents: r.try_get(6)?,
                included_viewer_hours: r.try_get(7)?,
                overage_cents_per_viewer_hour: r.try_get(8)?,
            },
        },
    })
}

impl Db {
    /// A plan and its first price version; returns the plan's id.
    pub async fn create_plan(&self, p: &Plan, now: i64) -> Result<i64> {
        if p.name.is_empty() || p.name.len() > 64 {
            return Err(DbError::Invalid("plan: a name of 1-64 characters".into()));
        }
        check_price(&p.price)?;
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query("INSERT INTO plans (name, commercial, offered) VALUES ($1, $2, $3) RETURNING id")
            .bind(&p.name)
            .bind(i64::from(p.commercial))
            .bind(i64::from(p.offered))
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| conflict(e, || format!("plan {} exists", p.name)))?
            .try_get(0)?;
        insert_version(&mut tx, id, 1, &p.price, now).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// A new price for a plan: its next version. Running licences keep theirs; licences
    /// added from now on take this one. Returns the plan as sold now.
    pub async fn reprice_plan(&self, name: &str, price: &Price, now: i64) -> Result<PlanVersion> {
        check_price(price)?;
        let current = self.plan(name).await?;
        let mut tx = self.pool.begin().await?;
        insert_version(&mut tx, current.id, current.version + 1, price, now).await.map_err(|e| match e {
            DbError::Conflict(_) => DbError::Conflict(format!("plan {name} was repriced meanwhile; try again")),
            e => e,
        })?;
        tx.commit().await?;
        self.plan(name).await
    }

    /// Every plan as sold now, by name.
    pub async fn plans(&self) -> Result<Vec<PlanVersion>> {
        let rows = sqlx::query(&format!("{CURRENT} ORDER BY p.name")).fetch_all(&self.pool).await?;
        rows.iter().map(plan_version).collect()
    }

    /// One plan as sold now.
    pub async fn plan(&self, name: &str) -> Result<PlanVersion> {
        let row = sqlx::query(&format!("{CURRENT} WHERE p.name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(DbError::NotFound("plan"))?;
        plan_version(&row)
    }

    /// The plans an account may buy: those offered to all, and those granted to it.
    pub async fn plans_for(&self, account_id: i64) -> Result<Vec<PlanVersion>> {
        let rows = sqlx::query(&format!(
            "{CURRENT} WHERE p.offered = 1 OR EXISTS \
               (SELECT 1 FROM plan_grants g WHERE g.plan_id = p.id AND g.account_id = $1) ORDER BY p.name"
        ))
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(plan_version).collect()
    }

    /// A plan the account may buy, or why not.
    pub async fn plan_for(&self, account_id: i64, name: &str) -> Result<PlanVersion> {
        self.plans_for(account_id).await?.into_iter().find(|p| p.plan.name == name).ok_or_else(|| {
            DbError::Invalid(format!("plan {name:?} is not one this account may buy; GET /v1/plans lists those"))
        })
    }

    /// Lets an account buy a plan that is not offered to all (a platform action).
    pub async fn grant_plan(&self, account_id: i64, name: &str, now: i64) -> Result<()> {
        let plan = self.plan(name).await?;
        sqlx::query(
            "INSERT INTO plan_grants (account_id, plan_id, granted_at) VALUES ($1, $2, $3) \
             ON CONFLICT (account_id, plan_id) DO NOTHING",
        )
        .bind(account_id)
        .bind(plan.id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

async fn insert_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    plan_id: i64,
    version: i64,
    p: &Price,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO plan_versions (plan_id, version, currency, monthly_price_cents, included_viewer_hours, \
           overage_cents_per_viewer_hour, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(plan_id)
    .bind(version)
    .bind(&p.currency)
    .bind(p.monthly_price_cents)
    .bind(p.included_viewer_hours)
    .bind(p.overage_cents_per_viewer_hour)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(|e| conflict(e, || format!("plan {plan_id} version {version} exists")))?;
    Ok(())
}
