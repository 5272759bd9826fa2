//! Publication dates as precise as they are known: a year (`1910`), a month (`1910-03`) or a day
//! (`1910-03-05`). A year-only date is kept and shown as a year, never as 1 January.

use std::fmt;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

/// When a book was first published, to the precision the catalog knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum PublishedDate {
    Year(i32),
    /// A year and a month (1 to 12).
    Month(i32, u32),
    Day(NaiveDate),
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

impl PublishedDate {
    /// Reads `YYYY`, `YYYY-MM` or `YYYY-MM-DD` strictly (four-digit year, two-digit month and
    /// day, a day that exists in the calendar): `2023-02-29`, `2023-2` and `1910-13` are refused.
    /// Year 0000 is read, as earlier versions stored it.
    pub fn parse(raw: &str) -> Option<Self> {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let mut parts = raw.split('-');
        let year = parts.next().filter(|y| y.len() == 4 && digits(y))?;
        let year: i32 = year.parse().ok()?;
        let month = match parts.next() {
            None => return Some(Self::Year(year)),
            Some(m) if m.len() == 2 && digits(m) => {
                m.parse::<u32>().ok().filter(|m| (1..=12).contains(m))?
            }
            Some(_) => return None,
        };
        let day = match parts.next() {
            None => return Some(Self::Month(year, month)),
            Some(d) if d.len() == 2 && digits(d) => d.parse::<u32>().ok()?,
            Some(_) => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        NaiveDate::from_ymd_opt(year, month, day).map(Self::Day)
    }

    /// For people: `1910`, `March 1910`, `5 March 1910`.
    pub fn label(&self) -> String {
        let month_name = |m: u32| {
            (m as usize)
                .checked_sub(1)
                .and_then(|i| MONTHS.get(i))
                .copied()
                .unwrap_or("")
        };
        match self {
            Self::Year(y) => format!("{y}"),
            Self::Month(y, m) => format!("{} {y}", month_name(*m)),
            Self::Day(d) => format!("{} {} {}", d.day(), month_name(d.month()), d.year()),
        }
    }
}

impl From<NaiveDate> for PublishedDate {
    fn from(date: NaiveDate) -> Self {
        Self::Day(date)
    }
}

/// `YYYY`, `YYYY-MM` or `YYYY-MM-DD`: what [`PublishedDate::parse`] reads.
impl fmt::Display for PublishedDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Year(y) => write!(f, "{y:04}"),
            Self::Month(y, m) => write!(f, "{y:04}-{m:02}"),
            Self::Day(d) => write!(f, "{}", d.format("%Y-%m-%d")),
        }
    }
}

impl From<PublishedDate> for String {
    fn from(date: PublishedDate) -> Self {
        date.to_string()
    }
}

impl TryFrom<String> for PublishedDate {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
            .ok_or_else(|| format!("{raw:?} is not a date written YYYY, YYYY-MM or YYYY-MM-DD"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_keep_their_precision() {
        for (raw, label) in [
            ("1910", "1910"),
            ("1910-03", "March 1910"),
            ("1910-03-05", "5 March 1910"),
            ("0800", "800"),
        ] {
            let date = PublishedDate::parse(raw).unwrap_or_else(|| panic!("{raw}"));
            assert_eq!(date.to_string(), raw);
            assert_eq!(date.label(), label);
            let json = serde_json::to_string(&date).unwrap_or_default();
            assert_eq!(json, format!("\"{raw}\""));
            assert_eq!(
                serde_json::from_str::<PublishedDate>(&json).ok(),
                Some(date)
            );
        }
    }

    #[test]
    fn only_real_dates_in_the_three_forms_are_read() {
        for bad in [
            "",
            "191",
            "19100",
            "1910-3",
            "1910-13",
            "1910-00",
            "2023-02-29",
            "1910-03-5",
            "1910-03-05-01",
            "1910/03",
            " 1910",
            "1910-",
            "+1910",
            "１９１０",
        ] {
            assert_eq!(PublishedDate::parse(bad), None, "{bad:?}");
        }
        assert!(serde_json::from_str::<PublishedDate>("\"1910-13\"").is_err());
    }
}
