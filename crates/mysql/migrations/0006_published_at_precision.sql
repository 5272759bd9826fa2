-- Publication dates as precise as they are known: `1910`, `1910-03` or `1910-03-05`, as text
-- (a DATE column would turn a year into the first of January). Existing dates become
-- `YYYY-MM-DD` text, which is what they were.
-- Changing the column rebuilds the table and its FULLTEXT indexes, which read the stop-word
-- setting again: keep indexing stop words, as 0001 set it.
SET SESSION innodb_ft_enable_stopword = 0;
ALTER TABLE books MODIFY published_at VARCHAR(10) NOT NULL;
