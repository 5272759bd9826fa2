//! How an import matches books by ISBN, so that importing a file again updates its books instead
//! of adding them twice. Pure: an adapter reads the stored books under a batch's ISBNs, plans,
//! adds the new books in one go, then replaces the others.

use std::collections::HashMap;

use crate::book::{Book, BookId, NewBook};
use crate::ports::Imported;

/// Which book a step of an import is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A book the catalog had before the batch.
    Stored(BookId),
    /// The book added for the batch's book at this index.
    Added(usize),
}

/// What an import does with each book of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportPlan {
    steps: Vec<Step>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Add it: it has no ISBN, or one neither the catalog nor an earlier book of the batch has.
    Create,
    /// Replace the target's fields with this book's.
    Replace(Target),
    /// The target has exactly this book's fields already.
    Keep(Target),
}

impl ImportPlan {
    /// Plans `books` against `stored`, the catalog's books under the batch's ISBNs.
    pub fn new(books: &[NewBook], stored: &[Book]) -> Self {
        // Per ISBN: the book it names now, and its fields as they will be.
        let mut current: HashMap<&str, (Target, Fields<'_>)> = stored
            .iter()
            .filter_map(|b| {
                Some((
                    b.isbn.as_ref()?.as_str(),
                    (Target::Stored(b.id), Fields::Stored(b)),
                ))
            })
            .collect();
        let mut steps = Vec::with_capacity(books.len());
        for (i, book) in books.iter().enumerate() {
            let Some(isbn) = book.isbn() else {
                steps.push(Step::Create);
                continue;
            };
            let step = match current.get(isbn.as_str()) {
                Some((target, fields)) if fields.same_as(book) => Step::Keep(*target),
                Some((target, _)) => Step::Replace(*target),
                None => Step::Create,
            };
            let target = match step {
                Step::Create => Target::Added(i),
                Step::Replace(target) | Step::Keep(target) => target,
            };
            current.insert(isbn.as_str(), (target, Fields::New(book)));
            steps.push(step);
        }
        Self { steps }
    }

    /// The books to add, in order (each with its `book.created` event).
    pub fn to_create<'a>(&self, books: &'a [NewBook]) -> Vec<&'a NewBook> {
        self.steps
            .iter()
            .zip(books)
            .filter(|(step, _)| **step == Step::Create)
            .map(|(_, book)| book)
            .collect()
    }

    /// Given the ids the books of [`Self::to_create`] were added as (in the same order): what
    /// became of each book, and the replacements still to make; `None` when `added` is short.
    pub fn finish(&self, added: &[BookId]) -> Option<Finished> {
        let mut ids: HashMap<usize, BookId> = HashMap::new();
        let mut next = added.iter();
        let mut outcomes = Vec::with_capacity(self.steps.len());
        let mut replacements = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            let resolve = |target: &Target| match target {
                Target::Stored(id) => Some(*id),
                Target::Added(k) => ids.get(k).copied(),
            };
            let outcome = match step {
                Step::Create => {
                    let id = *next.next()?;
                    ids.insert(i, id);
                    Imported::Created(id)
                }
                Step::Replace(target) => {
                    let id = resolve(target)?;
                    replacements.push((id, i));
                    Imported::Updated(id)
                }
                Step::Keep(target) => Imported::Unchanged(resolve(target)?),
            };
            outcomes.push(outcome);
        }
        Some(Finished {
            outcomes,
            replacements,
        })
    }
}

/// What [`ImportPlan::finish`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// What became of each book of the batch, in order.
    pub outcomes: Vec<Imported>,
    /// The replacements still to make, in order: `(book id, index of the batch's book whose
    /// fields it takes)`.
    pub replacements: Vec<(BookId, usize)>,
}

/// A book's fields as an import sees them: stored, or from an earlier row of the batch.
#[derive(Debug, Clone, Copy)]
enum Fields<'a> {
    Stored(&'a Book),
    New(&'a NewBook),
}

impl Fields<'_> {
    fn same_as(&self, book: &NewBook) -> bool {
        match self {
            Fields::Stored(stored) => book.describes(stored),
            Fields::New(new) => *new == book,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, Utc};

    use super::*;
    use crate::book::NewBookInput;
    use crate::isbn::Isbn;

    fn new(title: &str, isbn: Option<&str>) -> NewBook {
        NewBook::parse(NewBookInput {
            title: Some(title.into()),
            author: Some("Jane Austen".into()),
            published_at: Some("1813-01-28".into()),
            description: None,
            isbn: isbn.map(str::to_owned),
        })
        .unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn stored(id: i64, title: &str, isbn: &str) -> Book {
        Book {
            id: BookId(id),
            title: title.into(),
            author: "Jane Austen".into(),
            published_at: NaiveDate::from_ymd_opt(1813, 1, 28)
                .unwrap_or_default()
                .into(),
            description: String::new(),
            created_at: Utc::now(),
            isbn: Isbn::parse(isbn).ok(),
        }
    }

    #[test]
    fn known_isbns_are_replaced_or_kept_and_the_rest_added() {
        let pride = "9780141439518";
        let persuasion = "9780141439686";
        let emma = "9780141439587";
        let books = vec![
            new("Pride and Prejudice, revised", Some(pride)),
            new("Persuasion", Some(persuasion)),
            new("No ISBN", None),
            new("Emma", Some(emma)),
            // Emma again in the same batch, changed: the book just added is replaced.
            new("Emma, revised", Some("0141439580")),
            // And once more, as it now is: nothing to do.
            new("Emma, revised", Some(emma)),
        ];
        let stored = [
            stored(7, "Pride and Prejudice", pride),
            stored(8, "Persuasion", persuasion),
        ];
        let plan = ImportPlan::new(&books, &stored);
        let to_create: Vec<&str> = plan.to_create(&books).iter().map(|b| b.title()).collect();
        assert_eq!(to_create, ["No ISBN", "Emma"]);
        let Finished {
            outcomes,
            replacements,
        } = plan.finish(&[BookId(20), BookId(21)]).unwrap();
        assert_eq!(
            outcomes,
            [
                Imported::Updated(BookId(7)),
                Imported::Unchanged(BookId(8)),
                Imported::Created(BookId(20)),
                Imported::Created(BookId(21)),
                Imported::Updated(BookId(21)),
                Imported::Unchanged(BookId(21)),
            ]
        );
        assert_eq!(replacements, [(BookId(7), 0), (BookId(21), 4)]);
        // Fewer ids than books to add is a broken adapter, not a plan.
        assert_eq!(plan.finish(&[BookId(20)]), None);
    }
}
