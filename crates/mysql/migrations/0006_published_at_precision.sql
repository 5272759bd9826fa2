-- Publication dates as precise as they are known: `1910`, `1910-03` or `1910-03-05`, as text
-- (a DATE column would turn a year into the first of January). Existing dates become
-- `YYYY-MM-DD` text, which is what they were.
ALTER TABLE books MODIFY published_at VARCHAR(10) NOT NULL;
