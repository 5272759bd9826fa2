//! International Standard Book Numbers: ISBN-10 and ISBN-13 read with their checksums checked,
//! kept as ISBN-13 (an ISBN-10 is the same book as `978` + its first nine digits + a new check
//! digit).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A valid ISBN, as its 13 digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Isbn(String);

impl TryFrom<String> for Isbn {
    type Error = &'static str;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<Isbn> for String {
    fn from(isbn: Isbn) -> Self {
        isbn.0
    }
}

impl Isbn {
    /// Reads an ISBN-10 or ISBN-13, with or without hyphens and spaces between its digits
    /// (`0-14-143951-3`, `978 0 14 143951 8`); a final `X` (or `x`) is ISBN-10's check digit 10.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let text = text.trim();
        let text = text
            .strip_prefix("ISBN")
            .or_else(|| text.strip_prefix("isbn"))
            .map_or(text, |rest| rest.trim_start_matches([':', ' ']));
        let mut digits: Vec<u32> = Vec::with_capacity(13);
        let chars: Vec<char> = text.chars().filter(|c| !matches!(c, '-' | ' ')).collect();
        for (i, c) in chars.iter().enumerate() {
            match c {
                '0'..='9' => digits.push(u32::from(*c) - u32::from('0')),
                'X' | 'x' if i == 9 && chars.len() == 10 => digits.push(10),
                _ => {
                    return Err(
                        "must be an ISBN-10 or ISBN-13: digits, hyphens, and X last in an ISBN-10",
                    );
                }
            }
        }
        match digits.len() {
            10 => {
                let sum: u32 = digits.iter().zip((1..=10).rev()).map(|(d, w)| d * w).sum();
                if sum % 11 != 0 {
                    return Err("is not a valid ISBN-10: its check digit does not match");
                }
                let mut thirteen = vec![9, 7, 8];
                thirteen.extend_from_slice(&digits[..9]);
                let check = isbn13_check(&thirteen);
                thirteen.push(check);
                Ok(Self(to_text(&thirteen)))
            }
            13 => {
                if !(digits.starts_with(&[9, 7, 8]) || digits.starts_with(&[9, 7, 9])) {
                    return Err("is not a valid ISBN-13: it must start with 978 or 979");
                }
                if isbn13_check(&digits[..12]) != digits[12] {
                    return Err("is not a valid ISBN-13: its check digit does not match");
                }
                Ok(Self(to_text(&digits)))
            }
            _ => Err("must be an ISBN-10 or ISBN-13 (10 or 13 digits)"),
        }
    }

    /// The ISBN a search query is, if the whole query is one (hyphens and spaces allowed).
    pub fn in_query(query: &str) -> Option<Self> {
        let digits = query.chars().filter(char::is_ascii_digit).count();
        if (9..=13).contains(&digits) {
            Self::parse(query).ok()
        } else {
            None
        }
    }

    /// The 13 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Isbn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The ISBN-13 check digit of its first twelve digits.
fn isbn13_check(twelve: &[u32]) -> u32 {
    let sum: u32 = twelve
        .iter()
        .enumerate()
        .map(|(i, d)| if i % 2 == 0 { *d } else { d * 3 })
        .sum();
    (10 - sum % 10) % 10
}

fn to_text(digits: &[u32]) -> String {
    digits
        .iter()
        .filter_map(|d| char::from_digit(*d, 10))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isbn_10_and_13_are_kept_as_isbn_13() {
        // Pride and Prejudice (Penguin Classics): the same book both ways.
        let ten = Isbn::parse("0-14-143951-3").map(|i| i.to_string());
        let thirteen = Isbn::parse("978-0-14-143951-8").map(|i| i.to_string());
        assert_eq!(ten, Ok("9780141439518".to_owned()));
        assert_eq!(thirteen, ten);
        assert_eq!(
            Isbn::parse("ISBN: 978 0 14 143951 8").map(|i| i.to_string()),
            ten
        );
        // A check digit of 10 is written X.
        assert_eq!(
            Isbn::parse("080442957X").map(|i| i.to_string()),
            Ok("9780804429573".to_owned())
        );
        assert_eq!(Isbn::parse("080442957x"), Isbn::parse("080442957X"));
        assert!(Isbn::parse("979-10-90636-07-1").is_ok());
    }

    #[test]
    fn wrong_checksums_lengths_and_characters_are_refused() {
        for bad in [
            "0-14-143951-4",
            "978-0-14-143951-9",
            "977-0-14-143951-8",
            "014143951",
            "97801414395180",
            "X141439513",
            "97801414395X8",
            "0-14-143951-3a",
            "",
            "isbn",
            "١٢٣٤٥٦٧٨٩٠",
        ] {
            assert!(Isbn::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_query_that_is_an_isbn_is_found_as_one() {
        assert_eq!(
            Isbn::in_query(" 978-0-14-143951-8 ").map(|i| i.to_string()),
            Some("9780141439518".to_owned())
        );
        assert_eq!(Isbn::in_query("pride and prejudice"), None);
        assert_eq!(Isbn::in_query("1813"), None);
        assert_eq!(Isbn::in_query("0141439513 austen"), None);
    }

    #[test]
    fn only_valid_isbns_deserialize() {
        let read: Result<Isbn, _> = serde_json::from_str("\"0-14-143951-3\"");
        assert_eq!(
            read.map(|i| i.to_string()).ok(),
            Some("9780141439518".to_owned())
        );
        assert!(serde_json::from_str::<Isbn>("\"12345\"").is_err());
        assert_eq!(
            serde_json::to_string(&Isbn::parse("9780141439518").ok()).ok(),
            Some("\"9780141439518\"".to_owned())
        );
    }
}
