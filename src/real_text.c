/* real_text.c - a REAL as kvsql writes it in text (real_text.h): the
 * shortest decimal that reads back exactly. Called by the module's replies
 * (module/commands/result.c) and by the change entries (change_entry.c), in the
 * module and in the library alike. */
#include "real_text.h"
#include "sqlite.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Makes "100" read "100.0" and "1e+300" read "1.0e+300", as SQLite's own
 * rendering of a REAL does, so that a REAL never looks like an INTEGER. */
static void mark_real(char *out) {
    if (strpbrk(out, ".ni")) return; /* has a point, or is inf/nan */
    char *e = strchr(out, 'e');
    size_t at = e ? (size_t)(e - out) : strlen(out);
    memmove(out + at + 2, out + at, strlen(out + at) + 1);
    memcpy(out + at, ".0", 2);
}

/* Whether v printed with this many significant digits reads back as v. */
static int reads_back(double v, int digits, char out[40]) {
    snprintf(out, 36, "%.*g", digits, v);
    return strtod(out, NULL) == v;
}

/* Drops the zeros that end the mantissa of "d.ddd000e+XX", keeping a
 * digit after the point. */
static void trim_mantissa(char *out) {
    char *e = strchr(out, 'e'), *end = e;
    while (end[-1] == '0' && end[-2] != '.') end--;
    memmove(end, e, strlen(e) + 1);
}

/* The 16-digit decimals nearest a double are one below and one above it;
 * printf gives the nearer, which may still not read back while the other
 * does (near a power of two). Tries the other: non-zero when it reads
 * back, in out as "d.ddde+XX". */
static int other_16_digits(double v, char out[40]) {
    snprintf(out, 36, "%.15e", v);
    int up = (strtod(out, NULL) < v) != (v < 0); /* away from zero */
    for (char *p = strchr(out, 'e') - 1; p >= out && *p != '-'; p--) {
        if (*p == '.') continue;
        if (up && *p == '9') *p = '0';
        else if (!up && *p == '0') *p = '9';
        else {
            *p = (char)(*p + (up ? 1 : -1));
            if (strtod(out, NULL) != v) return 0;
            trim_mantissa(out);
            return 1;
        }
    }
    return 0; /* the carry left the first digit: 17 digits will do */
}

/* The shortest decimal that reads back as exactly the same double: "1.5",
 * "100.0", "0.30000000000000004". The C library's printf is exact for
 * every double; SQLite's own printf is not in the last digit. A normal
 * double has 15 digits' precision, so when 15 digits read back they are
 * also the shortest (printf drops trailing zeros); subnormals have less,
 * so fewer digits are tried for them. */
void kvsql_real_text(double v, char out[40]) {
    if (isinf(v)) {
        strcpy(out, v < 0 ? "-Inf" : "Inf");
        return;
    }
    if (reads_back(v, 15, out)) {
        int digits = 15;
        if (v != 0 && fabs(v) < DBL_MIN) { /* a subnormal: maybe fewer */
            char shorter[40];
            while (digits > 1 && reads_back(v, digits - 1, shorter)) digits--;
            reads_back(v, digits, out);
        }
    } else if (!reads_back(v, 16, out) && !other_16_digits(v, out)) {
        reads_back(v, 17, out);
    }
    mark_real(out);
}
