PRAGMA page_size = 512;
CREATE TABLE t1(a, b);
INSERT INTO t1 VALUES (1, 'one'), (2, x'00ff'), (3, 3.5), (NULL, NULL);
CREATE INDEX i1 ON t1(a, b);
