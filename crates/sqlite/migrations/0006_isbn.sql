-- An optional ISBN per book, kept as its 13 digits. Unique where present: an import matches
-- books by it, so re-running an import updates books instead of adding them again.
ALTER TABLE books ADD COLUMN isbn TEXT;
CREATE UNIQUE INDEX books_isbn ON books (isbn) WHERE isbn IS NOT NULL;
