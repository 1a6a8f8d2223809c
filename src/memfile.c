/* memfile.c - files in process memory; see memfile.h. Called by SQLite
 * through the methods memfile_open() installs. */
#include "memfile.h"
#include "sqlite.h"

#include <string.h>

static int mem_close(sqlite3_file *pf) {
    sqlite3_free(((memfile *)pf)->buf);
    return SQLITE_OK;
}

static int mem_read(sqlite3_file *pf, void *dst, int amt, sqlite3_int64 off) {
    memfile *f = (memfile *)pf;
    if (off + amt > f->len) {
        sqlite3_int64 have = off < f->len ? f->len - off : 0;
        if (have) memcpy(dst, f->buf + off, have);
        memset((char *)dst + have, 0, amt - have);
        return SQLITE_IOERR_SHORT_READ;
    }
    memcpy(dst, f->buf + off, amt);
    return SQLITE_OK;
}

static int mem_write(sqlite3_file *pf, const void *src, int amt, sqlite3_int64 off) {
    memfile *f = (memfile *)pf;
    sqlite3_int64 end = off + amt;
    if (end > f->cap) {
        sqlite3_int64 cap = f->cap ? f->cap : 4096;
        while (cap < end) cap *= 2;
        unsigned char *b = sqlite3_realloc64(f->buf, cap);
        if (!b) return SQLITE_NOMEM;
        f->buf = b;
        f->cap = cap;
    }
    if (off > f->len) memset(f->buf + f->len, 0, off - f->len);
    memcpy(f->buf + off, src, amt);
    if (end > f->len) f->len = end;
    return SQLITE_OK;
}

static int mem_truncate(sqlite3_file *pf, sqlite3_int64 size) {
    memfile *f = (memfile *)pf;
    if (size < f->len) f->len = size;
    return SQLITE_OK;
}

static int mem_sync(sqlite3_file *pf, int flags) {
    (void)pf;
    (void)flags;
    return SQLITE_OK;
}

static int mem_file_size(sqlite3_file *pf, sqlite3_int64 *size) {
    *size = ((memfile *)pf)->len;
    return SQLITE_OK;
}

static int mem_lock(sqlite3_file *pf, int level) {
    (void)pf;
    (void)level;
    return SQLITE_OK; /* one connection's own file: nothing to share */
}

static int mem_check_reserved(sqlite3_file *pf, int *out) {
    (void)pf;
    *out = 0;
    return SQLITE_OK;
}

static int mem_file_control(sqlite3_file *pf, int op, void *arg) {
    (void)pf;
    (void)op;
    (void)arg;
    return SQLITE_NOTFOUND;
}

static int mem_sector_size(sqlite3_file *pf) {
    (void)pf;
    return 512;
}

static int mem_device_characteristics(sqlite3_file *pf) {
    (void)pf;
    return SQLITE_IOCAP_POWERSAFE_OVERWRITE;
}

static const sqlite3_io_methods mem_methods = {
    .iVersion = 1,
    .xClose = mem_close,
    .xRead = mem_read,
    .xWrite = mem_write,
    .xTruncate = mem_truncate,
    .xSync = mem_sync,
    .xFileSize = mem_file_size,
    .xLock = mem_lock,
    .xUnlock = mem_lock,
    .xCheckReservedLock = mem_check_reserved,
    .xFileControl = mem_file_control,
    .xSectorSize = mem_sector_size,
    .xDeviceCharacteristics = mem_device_characteristics,
};

void memfile_open(sqlite3_file *f) {
    memset(f, 0, sizeof(memfile));
    f->pMethods = &mem_methods;
}
