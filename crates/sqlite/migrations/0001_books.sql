-- The catalog. Dates are stored as ISO 8601 text, which sorts and compares correctly.
CREATE TABLE books (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    title        TEXT NOT NULL,
    author       TEXT NOT NULL,
    published_at TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- Full-text index over the three searched columns, an external-content table kept in sync by the
-- triggers below. unicode61 with remove_diacritics folds case and accents. The index of four-letter
-- prefixes keeps word-prefix queries (`franken*`, `aust*`) fast; more prefix lengths would slow every
-- insert for little gain (see the README's benchmark).
CREATE VIRTUAL TABLE books_fts USING fts5(
    title, author, description,
    content = 'books',
    content_rowid = 'id',
    prefix = '4',
    tokenize = 'unicode61 remove_diacritics 2'
);

-- Rank with bm25, a title match weighing more than an author match, more than a description match.
INSERT INTO books_fts (books_fts, rank) VALUES ('rank', 'bm25(10.0, 5.0, 1.0)');

CREATE TRIGGER books_ai AFTER INSERT ON books BEGIN
    INSERT INTO books_fts (rowid, title, author, description)
    VALUES (new.id, new.title, new.author, new.description);
END;

CREATE TRIGGER books_ad AFTER DELETE ON books BEGIN
    INSERT INTO books_fts (books_fts, rowid, title, author, description)
    VALUES ('delete', old.id, old.title, old.author, old.description);
END;

CREATE TRIGGER books_au AFTER UPDATE ON books BEGIN
    INSERT INTO books_fts (books_fts, rowid, title, author, description)
    VALUES ('delete', old.id, old.title, old.author, old.description);
    INSERT INTO books_fts (rowid, title, author, description)
    VALUES (new.id, new.title, new.author, new.description);
END;
