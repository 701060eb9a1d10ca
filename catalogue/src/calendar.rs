//! UTC calendar months and dates for billing: invoices cover calendar months and
//! prorate by the month's own length (28 to 31 days), not by a 30-day month.
//! Days from and to civil dates after Howard Hinnant's `days_from_civil` /
//! `civil_from_days` (proleptic Gregorian calendar, any year of `i64` seconds).

use std::fmt;

/// Seconds in a day.
pub const DAY: i64 = 86_400;

/// A calendar month in UTC, written `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i64,
    /// 1-12.
    month: u8,
}

impl Month {
    /// The month `YYYY-MM` (years 1970-9999), or why not.
    pub fn parse(s: &str) -> Result<Month, String> {
        let bad = || format!("month {s:?}: write YYYY-MM, e.g. 2026-11");
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let (year, month) = (y.parse::<i64>().map_err(|_| bad())?, m.parse::<u8>().map_err(|_| bad())?);
        if !(1..=12).contains(&month) || year < 1970 {
            return Err(bad());
        }
        Ok(Month { year, month })
    }

    /// The month holding Unix time `t`.
    pub fn of(t: i64) -> Month {
        let (year, month, _) = civil_from_days(t.div_euclid(DAY));
        Month { year, month }
    }

    /// Its first second (Unix).
    pub fn start(self) -> i64 {
        days_from_civil(self.year, self.month, 1) * DAY
    }

    /// The first second after it: the next month's start.
    pub fn end(self) -> i64 {
        self.next().start()
    }

    /// Its length in seconds.
    pub fn seconds(self) -> i64 {
        self.end() - self.start()
    }

    pub fn next(self) -> Month {
        if self.month == 12 { Month { year: self.year + 1, month: 1 } } else { Month { month: self.month + 1, ..self } }
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Unix time `t` as its UTC date, `YYYY-MM-DD`.
pub fn date(t: i64) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(DAY));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u8, d: u8) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day counted from 1970-01-01: (year, month 1-12, day 1-31).
fn civil_from_days(z: i64) -> (i64, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // In range by construction: d is 1-31 and m 1-12.
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn months_have_their_own_lengths() {
        let days = |s: &str| Month::parse(s).unwrap().seconds() / DAY;
        assert_eq!([days("2026-01"), days("2026-02"), days("2026-04"), days("2026-11")], [31, 28, 30, 30]);
        assert_eq!(days("2028-02"), 29, "a leap year");
        assert_eq!(days("2100-02"), 28, "a century is not a leap year");
        assert_eq!(days("2000-02"), 29, "but every 400th year is");
        assert_eq!(Month::parse("1970-01").unwrap().start(), 0);
        assert_eq!(Month::parse("2026-12").unwrap().start(), 1_796_083_200, "2026-12-01T00:00:00Z");
        assert_eq!(Month::parse("2026-12").unwrap().next().to_string(), "2027-01");
        assert_eq!(date(1_796_083_200 - 1), "2026-11-30");
    }

    #[test]
    fn bad_months_are_refused_with_the_form_to_use() {
        for bad in ["2026-13", "2026-00", "2026-1", "26-11", "2026/11", "", "1969-12", "2026-11-01", "+026-11"] {
            let e = Month::parse(bad).unwrap_err();
            assert!(e.contains("YYYY-MM"), "{bad:?}: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn every_second_lies_in_its_month(t in 0i64..400 * 366 * DAY) {
            let m = Month::of(t);
            proptest::prop_assert!(m.start() <= t && t < m.end());
            proptest::prop_assert_eq!(Month::parse(&m.to_string()).unwrap(), m);
            proptest::prop_assert_eq!(Month::of(m.end()), m.next());
            proptest::prop_assert!(date(t).starts_with(&m.to_string()));
        }
    }
}
