-- Index stop words too, so that a title such as "The Time Machine" is found by every word of it.
-- The setting is read when the FULLTEXT indexes below are built.
SET SESSION innodb_ft_enable_stopword = 0;

-- The catalog. utf8mb4_unicode_ci makes comparisons, and so full-text matches, ignore case and
-- accents. created_at is UTC (the connection's time zone is set to +00:00).
CREATE TABLE books (
    id           BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    title        VARCHAR(255) NOT NULL,
    author       VARCHAR(255) NOT NULL,
    published_at DATE NOT NULL,
    description  TEXT NOT NULL,
    created_at   DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    FULLTEXT KEY books_ft_all (title, author, description),
    FULLTEXT KEY books_ft_title (title),
    FULLTEXT KEY books_ft_author (author)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
