//! Matched words as HTML: each part of a [`Marked`] text escaped, the matched ones in `<mark>`.

use std::fmt::Write;

use bookstore_domain::Marked;

/// `marked` as HTML, escaped, with `…` where the text was cut.
pub fn html(marked: &Marked) -> String {
    let mut out = String::with_capacity(marked.text.len() + 16);
    if marked.cut_before {
        out.push('…');
    }
    for (part, is_match) in marked.parts() {
        if is_match {
            let _ = write!(out, "<mark>{}</mark>", Escaped(part));
        } else {
            let _ = write!(out, "{}", Escaped(part));
        }
    }
    if marked.cut_after {
        out.push('…');
    }
    out
}

/// Text escaped for HTML element content and attribute values.
struct Escaped<'a>(&'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&#x27;")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_are_marked_and_everything_is_escaped() {
        let marked = Marked {
            text: "<b>Frankenstein</b> & \"Co\"".to_owned(),
            marks: std::iter::once(3..15).collect(),
            cut_before: false,
            cut_after: true,
        };
        assert_eq!(
            html(&marked),
            "&lt;b&gt;<mark>Frankenstein</mark>&lt;/b&gt; &amp; &quot;Co&quot;…"
        );
    }
}
