-- An optional ISBN per book, kept as its 13 digits. Unique where present (NULLs do not collide):
-- an import matches books by it, so re-running an import updates books instead of adding them
-- again.
ALTER TABLE books ADD COLUMN isbn CHAR(13) NULL, ADD UNIQUE KEY books_isbn (isbn);
