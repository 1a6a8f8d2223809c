/* real_text.h - the text of a REAL: the shortest decimal that reads back
 * as exactly v, never looking like an integer ("100.0"), or Inf/-Inf. The
 * TYPED reply (module/commands/result.c) and the changes stream (change_entry.c,
 * module and library) write REALs this way. No Redis or SQLite API. */
#ifndef KVSQL_REAL_TEXT_H
#define KVSQL_REAL_TEXT_H

void kvsql_real_text(double v, char out[40]);

#endif
