/* scripts.c - unit tests of the one-hash layout's Lua scripts as text
 * (src/client/hash/scripts.{c,h}): that every script refers to its keys by
 * name, and that the names its Lua declares are the keys its C list
 * (kvsql_script_keys) puts in KEYS, in the same order.
 *
 * Built as build/test_scripts by `make`, run by tests/run (make test);
 * prints "ok NAME"/"FAIL NAME: why" per test (check.h). What the scripts do
 * against Redis is tested by tests/test_library*.py. */
#include "check.h"
#include "client/hash/scripts.h"

#include <stdio.h>
#include <string.h>

#define KEY_NAME_(name, suffix) #name,
static const char *const key_names[SKEY_COUNT] = {SCRIPT_KEYS_ALL(KEY_NAME_)};

static int every_hash_script_names_its_keys_instead_of_indexing_KEYS(void) {
    for (int i = 0; i < SCRIPT_COUNT; i++) {
        if (strstr(kvsql_scripts[i], "KEYS[")) {
            snprintf(failure, sizeof(failure), "script %d says KEYS[n]", i);
            return 1;
        }
    }
    return 0;
}

/* The first line of script id as it should be: its keys' names, in the
 * order of kvsql_script_keys[id]. */
static void expected_first_line(int id, char *out, size_t cap) {
    size_t n = (size_t)snprintf(out, cap, "local _");
    for (int j = 0; j < kvsql_script_keys[id].n && n < cap; j++)
        n += (size_t)snprintf(out + n, cap - n, ", %s", key_names[kvsql_script_keys[id].which[j]]);
    if (n < cap) snprintf(out + n, cap - n, " = 0, unpack(KEYS)\n");
}

static int every_script_names_its_keys_in_the_order_they_are_sent(void) {
    char want[512];
    for (int i = 0; i < SCRIPT_COUNT; i++) {
        CHECK(kvsql_script_keys[i].n > 0 && kvsql_script_keys[i].n <= SCRIPT_KEYS_MAX);
        expected_first_line(i, want, sizeof(want));
        if (strncmp(kvsql_scripts[i], want, strlen(want)) != 0) {
            snprintf(failure, sizeof(failure), "script %d does not begin with: %.400s", i, want);
            return 1;
        }
    }
    return 0;
}

static int a_key_appears_once_in_a_scripts_list(void) {
    for (int i = 0; i < SCRIPT_COUNT; i++) {
        int seen[SKEY_COUNT] = {0};
        for (int j = 0; j < kvsql_script_keys[i].n; j++) {
            unsigned w = kvsql_script_keys[i].which[j];
            CHECK(w < SKEY_COUNT && !seen[w]);
            seen[w] = 1;
        }
    }
    return 0;
}

static const test tests[] = {
    T(every_hash_script_names_its_keys_instead_of_indexing_KEYS),
    T(every_script_names_its_keys_in_the_order_they_are_sent),
    T(a_key_appears_once_in_a_scripts_list),
};

int main(void) {
    return run_tests(tests, sizeof(tests) / sizeof(tests[0]));
}
