/* utf8.h - strict UTF-8 (RFC 3629): what counts as text. Used by the
 * module to decide that an argument binds as TEXT (exec.c) and that a value
 * can be published as text (change_entry.c). */
#ifndef KVSQL_UTF8_H
#define KVSQL_UTF8_H

#include <stddef.h>

/* The length of the UTF-8 sequence at s (n bytes left), or 0 when it is
 * not valid UTF-8: overlong forms, UTF-16 surrogates (U+D800..U+DFFF) and
 * code points past U+10FFFF are not. */
static inline size_t utf8_sequence(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (len == 0 || n < len) return 0;
    /* the second byte's range depends on the first */
    unsigned char lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
    unsigned char hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t k = 2; k < len; k++)
        if ((s[k] & 0xC0) != 0x80) return 0;
    return len;
}

/* Whether the n bytes at s are valid UTF-8 throughout. */
static inline int utf8_valid(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t len = utf8_sequence(s + i, n - i);
        if (!len) return 0;
        i += len;
    }
    return 1;
}

#endif
