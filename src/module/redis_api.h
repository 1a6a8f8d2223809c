/* redis_api.h - the part of the Redis Modules API (Redis 7.0) that kvsql
 * uses, declared here because no Debian package ships redismodule.h.
 *
 * Names, signatures and constant values follow the Redis 7.0 API. Every
 * entry is a function pointer that redis_api_init() resolves at load time
 * through RedisModule_GetApi; a missing entry fails the load with a message
 * naming it. Included by every file of src/module/. */
#ifndef KVSQL_REDIS_API_H
#define KVSQL_REDIS_API_H

#include <stddef.h>
#include <stdint.h>

#define REDISMODULE_OK 0
#define REDISMODULE_ERR 1
#define REDISMODULE_APIVER_1 1

#define REDISMODULE_READ (1 << 0)
#define REDISMODULE_WRITE (1 << 1)
#define REDISMODULE_OPEN_KEY_NOTOUCH (1 << 16)

#define REDISMODULE_KEYTYPE_EMPTY 0
#define REDISMODULE_KEYTYPE_STRING 1
#define REDISMODULE_KEYTYPE_HASH 3
#define REDISMODULE_KEYTYPE_LIST 2
#define REDISMODULE_KEYTYPE_ZSET 5


#define REDISMODULE_HASH_NONE 0
#define REDISMODULE_HASH_CFIELDS (1 << 2)
#define REDISMODULE_HASH_DELETE ((RedisModuleString *)(long)1)

#define REDISMODULE_CTX_FLAGS_LUA (1 << 0)
#define REDISMODULE_CTX_FLAGS_MULTI (1 << 1)
#define REDISMODULE_CTX_FLAGS_CLUSTER (1 << 5)

#define REDISMODULE_NOTIFY_GENERIC (1 << 2)
#define REDISMODULE_NOTIFY_STRING (1 << 3)
#define REDISMODULE_NOTIFY_HASH (1 << 6)
#define REDISMODULE_NOTIFY_EXPIRED (1 << 8)
#define REDISMODULE_NOTIFY_EVICTED (1 << 9)
#define REDISMODULE_NOTIFY_STREAM (1 << 10)
#define REDISMODULE_NO_EXPIRE -1
#define REDISMODULE_OPTION_NO_IMPLICIT_SIGNAL_MODIFIED (1 << 1)

#define REDISMODULE_YIELD_FLAG_CLIENTS (1 << 1)

/* Key-spec flags and the command info of RedisModule_SetCommandInfo. */
#define REDISMODULE_CMD_KEY_RO (1ULL << 0)
#define REDISMODULE_CMD_KEY_RW (1ULL << 1)
#define REDISMODULE_CMD_KEY_ACCESS (1ULL << 4)
#define REDISMODULE_CMD_KEY_UPDATE (1ULL << 5)
#define REDISMODULE_CMD_KEY_DELETE (1ULL << 7)

typedef enum {
    REDISMODULE_KSPEC_BS_INVALID = 0,
    REDISMODULE_KSPEC_BS_UNKNOWN,
    REDISMODULE_KSPEC_BS_INDEX,
    REDISMODULE_KSPEC_BS_KEYWORD
} RedisModuleKeySpecBeginSearchType;

typedef enum {
    REDISMODULE_KSPEC_FK_OMITTED = 0,
    REDISMODULE_KSPEC_FK_UNKNOWN,
    REDISMODULE_KSPEC_FK_RANGE,
    REDISMODULE_KSPEC_FK_KEYNUM
} RedisModuleKeySpecFindKeysType;

typedef struct RedisModuleCommandArg RedisModuleCommandArg; /* completed below */

typedef struct {
    const char *since;
    const char *changes;
} RedisModuleCommandHistoryEntry;

typedef struct {
    const char *notes;
    uint64_t flags;
    RedisModuleKeySpecBeginSearchType begin_search_type;
    union {
        struct {
            int pos;
        } index;
        struct {
            const char *keyword;
            int startfrom;
        } keyword;
    } bs;
    RedisModuleKeySpecFindKeysType find_keys_type;
    union {
        struct {
            int lastkey;
            int keystep;
            int limit;
        } range;
        struct {
            int keynumidx;
            int firstkey;
            int keystep;
        } keynum;
    } fk;
} RedisModuleCommandKeySpec;


typedef struct {
    int version;
    size_t sizeof_historyentry;
    size_t sizeof_keyspec;
    size_t sizeof_arg;
} RedisModuleCommandInfoVersion;

typedef struct {
    const RedisModuleCommandInfoVersion *version;
    const char *summary;
    const char *complexity;
    const char *since;
    RedisModuleCommandHistoryEntry *history;
    const char *tips;
    int arity;
    RedisModuleCommandKeySpec *key_specs;
    RedisModuleCommandArg *args;
} RedisModuleCommandInfo;

#define REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED 0
#define REDISMODULE_EVENT_FLUSHDB 2
#define REDISMODULE_EVENT_LOADING 3
#define REDISMODULE_EVENT_SHUTDOWN 5
#define REDISMODULE_EVENT_SWAPDB 11
#define REDISMODULE_SUBEVENT_FLUSHDB_END 1

#define REDISMODULE_ERRORMSG_WRONGTYPE "WRONGTYPE Operation against a key holding the wrong kind of value"

typedef struct RedisModuleCtx RedisModuleCtx;
typedef struct RedisModuleKey RedisModuleKey;
typedef struct RedisModuleString RedisModuleString;
typedef struct RedisModuleDict RedisModuleDict;
typedef struct RedisModuleCommand RedisModuleCommand;
typedef struct RedisModuleInfoCtx RedisModuleInfoCtx;
typedef struct RedisModuleCommandFilterCtx RedisModuleCommandFilterCtx;
typedef struct RedisModuleCommandFilter RedisModuleCommandFilter;

typedef struct RedisModuleEvent {
    uint64_t id;
    uint64_t dataver;
} RedisModuleEvent;

typedef struct RedisModuleFlushInfo {
    uint64_t version;
    int32_t sync;
    int32_t dbnum; /* -1: all */
} RedisModuleFlushInfo;

typedef struct RedisModuleSwapDbInfo {
    uint64_t version;
    int32_t dbnum_first;
    int32_t dbnum_second;
} RedisModuleSwapDbInfo;

typedef int (*RedisModuleCmdFunc)(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
typedef int (*RedisModuleNotificationFunc)(RedisModuleCtx *ctx, int type, const char *event,
                                           RedisModuleString *key);
typedef void (*RedisModuleEventCallback)(RedisModuleCtx *ctx, RedisModuleEvent eid, uint64_t subevent,
                                         void *data);
typedef void (*RedisModuleInfoFunc)(RedisModuleInfoCtx *ctx, int for_crash_report);
typedef void (*RedisModuleCommandFilterFunc)(RedisModuleCommandFilterCtx *filter);
typedef void (*RedisModuleTimerProc)(RedisModuleCtx *ctx, void *data);
typedef uint64_t RedisModuleTimerID;
typedef long long (*RedisModuleConfigGetNumericFunc)(const char *name, void *privdata);
typedef int (*RedisModuleConfigSetNumericFunc)(const char *name, long long val, void *privdata,
                                               RedisModuleString **err);
typedef int (*RedisModuleConfigApplyFunc)(RedisModuleCtx *ctx, void *privdata, RedisModuleString **err);

#define REDISMODULE_CONFIG_DEFAULT 0

/* X(return type, name without the RedisModule_ prefix, parameter list) */
#define REDIS_API_ENTRIES(X)                                                                         \
    X(void *, Alloc, (size_t bytes))                                                                 \
    X(void *, Realloc, (void *ptr, size_t bytes))                                                    \
    X(void, Free, (void *ptr))                                                                       \
    X(size_t, MallocSize, (void *ptr))                                                               \
    X(int, CreateCommand, (RedisModuleCtx * ctx, const char *name, RedisModuleCmdFunc cmdfunc,      \
                           const char *strflags, int firstkey, int lastkey, int keystep))           \
    X(void, SetModuleAttribs, (RedisModuleCtx * ctx, const char *name, int ver, int apiver))         \
    X(int, IsModuleNameBusy, (const char *name))                                                     \
    X(void, SetModuleOptions, (RedisModuleCtx * ctx, int options))                                   \
    X(void, Log, (RedisModuleCtx * ctx, const char *level, const char *fmt, ...))                    \
    X(int, WrongArity, (RedisModuleCtx * ctx))                                                       \
    X(int, ReplyWithLongLong, (RedisModuleCtx * ctx, long long ll))                                  \
    X(int, ReplyWithError, (RedisModuleCtx * ctx, const char *err))                                  \
    X(int, ReplyWithSimpleString, (RedisModuleCtx * ctx, const char *msg))                           \
    X(int, ReplyWithArray, (RedisModuleCtx * ctx, long len))                                         \
    X(int, ReplyWithStringBuffer, (RedisModuleCtx * ctx, const char *buf, size_t len))               \
    X(int, ReplyWithNull, (RedisModuleCtx * ctx))                                                    \
    X(int, GetSelectedDb, (RedisModuleCtx * ctx))                                                    \
    X(int, SelectDb, (RedisModuleCtx * ctx, int newid))                                              \
    X(RedisModuleTimerID, CreateTimer, (RedisModuleCtx * ctx, long long period, RedisModuleTimerProc callback, \
                                        void *data))                                                 \
    X(int, GetContextFlags, (RedisModuleCtx * ctx))                                                  \
    X(RedisModuleKey *, OpenKey, (RedisModuleCtx * ctx, RedisModuleString * keyname, int mode))      \
    X(void, CloseKey, (RedisModuleKey * kp))                                                         \
    X(int, KeyExists, (RedisModuleCtx * ctx, RedisModuleString * keyname))                           \
    X(int, KeyType, (RedisModuleKey * kp))                                                           \
    X(size_t, ValueLength, (RedisModuleKey * kp))                                                    \
    X(long long, GetExpire, (RedisModuleKey * key))                                                  \
    X(int, HashSet, (RedisModuleKey * key, int flags, ...))                                          \
    X(int, HashGet, (RedisModuleKey * key, int flags, ...))                                          \
    X(RedisModuleString *, CreateString, (RedisModuleCtx * ctx, const char *ptr, size_t len))        \
    X(void, FreeString, (RedisModuleCtx * ctx, RedisModuleString * str))                             \
    X(void, RetainString, (RedisModuleCtx * ctx, RedisModuleString * str))                             \
    X(const char *, StringPtrLen, (const RedisModuleString *str, size_t *len))                       \
    X(int, Replicate, (RedisModuleCtx * ctx, const char *cmdname, const char *fmt, ...))             \
    X(int, SignalModifiedKey, (RedisModuleCtx * ctx, RedisModuleString * keyname))                   \
    X(int, NotifyKeyspaceEvent, (RedisModuleCtx * ctx, int type, const char *event,                  \
                                 RedisModuleString *key))                                            \
    X(int, SubscribeToKeyspaceEvents, (RedisModuleCtx * ctx, int types, RedisModuleNotificationFunc cb)) \
    X(int, SubscribeToServerEvent, (RedisModuleCtx * ctx, RedisModuleEvent event,                    \
                                    RedisModuleEventCallback callback))                              \
    X(RedisModuleDict *, CreateDict, (RedisModuleCtx * ctx))                                         \
    X(void *, DictGetC, (RedisModuleDict * d, void *key, size_t keylen, int *nokey))                 \
    X(int, DictSetC, (RedisModuleDict * d, void *key, size_t keylen, void *ptr))                     \
    X(int, DictDelC, (RedisModuleDict * d, void *key, size_t keylen, void *oldval))                  \
    X(int, RegisterNumericConfig, (RedisModuleCtx * ctx, const char *name, long long default_val,    \
                                   unsigned int flags, long long min, long long max,                 \
                                   RedisModuleConfigGetNumericFunc getfn,                            \
                                   RedisModuleConfigSetNumericFunc setfn,                            \
                                   RedisModuleConfigApplyFunc applyfn, void *privdata))              \
    X(int, LoadConfigs, (RedisModuleCtx * ctx))                                                      \
    X(RedisModuleCommand *, GetCommand, (RedisModuleCtx * ctx, const char *name))                    \
    X(int, SetCommandInfo, (RedisModuleCommand * command, const RedisModuleCommandInfo *info))       \
    X(void, Yield, (RedisModuleCtx * ctx, int flags, const char *busy_reply))                        \
    X(int, RegisterInfoFunc, (RedisModuleCtx * ctx, RedisModuleInfoFunc cb))                         \
    X(int, InfoAddSection, (RedisModuleInfoCtx * ctx, const char *name))                             \
    X(int, InfoAddFieldLongLong, (RedisModuleInfoCtx * ctx, const char *field, long long value))

/* ---- the library protocol (protocol.c): RedisModule_Call and its replies,
 * and the server's clock for reader lapse times. Owned by the storage
 * format's engineer; resolved like the entries above. */
typedef struct RedisModuleCallReply RedisModuleCallReply;

#define REDISMODULE_HASH_EXISTS (1 << 3)

#define REDISMODULE_REPLY_UNKNOWN -1
#define REDISMODULE_REPLY_STRING 0
#define REDISMODULE_REPLY_ERROR 1
#define REDISMODULE_REPLY_INTEGER 2
#define REDISMODULE_REPLY_ARRAY 3
#define REDISMODULE_REPLY_NULL 4

#define REDIS_API_PROTOCOL_ENTRIES(X)                                                                \
    X(RedisModuleCallReply *, Call, (RedisModuleCtx * ctx, const char *cmdname, const char *fmt, ...)) \
    X(void, FreeCallReply, (RedisModuleCallReply * reply))                                           \
    X(int, CallReplyType, (RedisModuleCallReply * reply))                                            \
    X(size_t, CallReplyLength, (RedisModuleCallReply * reply))                                       \
    X(RedisModuleCallReply *, CallReplyArrayElement, (RedisModuleCallReply * reply, size_t idx))     \
    X(const char *, CallReplyStringPtr, (RedisModuleCallReply * reply, size_t *len))                 \
    X(long long, Milliseconds, (void))                                                               \
    X(int, GetClientInfoById, (void *ci, uint64_t id))                                               \
    X(char *, StringDMA, (RedisModuleKey * key, size_t *len, int mode))                              \
    X(int, StringTruncate, (RedisModuleKey * key, size_t newlen))                                    \
    X(int, StringSet, (RedisModuleKey * key, RedisModuleString * str))                               \
    X(void, GetRandomBytes, (unsigned char *dst, size_t len))                                        \
    X(RedisModuleCommandFilter *, RegisterCommandFilter,                                             \
      (RedisModuleCtx * ctx, RedisModuleCommandFilterFunc cb, int flags))                            \
    X(int, CommandFilterArgsCount, (RedisModuleCommandFilterCtx * fctx))                            \
    X(RedisModuleString *, CommandFilterArgGet, (RedisModuleCommandFilterCtx * fctx, int pos))

/* Entries of later Redis versions, used when present (NULL on 7.0). */
#define REDIS_API_OPTIONAL_ENTRIES(X) \
    X(int, SetCommandACLCategories, (RedisModuleCommand * command, const char *categories))

/* ---- replies, INFO fields and command docs (exec.c, result.c, module.c):
 * typed replies for RESP3 clients, INFO kvsql versions, COMMAND DOCS
 * arguments. Owned by the commands' engineer; resolved like the above. */
#define REDISMODULE_CTX_FLAGS_RESP3 (1 << 22)

typedef enum {
    REDISMODULE_ARG_TYPE_STRING,
    REDISMODULE_ARG_TYPE_INTEGER,
    REDISMODULE_ARG_TYPE_DOUBLE,
    REDISMODULE_ARG_TYPE_KEY,
    REDISMODULE_ARG_TYPE_PATTERN,
    REDISMODULE_ARG_TYPE_UNIX_TIME,
    REDISMODULE_ARG_TYPE_PURE_TOKEN,
    REDISMODULE_ARG_TYPE_ONEOF,
    REDISMODULE_ARG_TYPE_BLOCK
} RedisModuleCommandArgType;

#define REDISMODULE_CMD_ARG_OPTIONAL (1 << 0)
#define REDISMODULE_CMD_ARG_MULTIPLE (1 << 1)

/* Completes the RedisModuleCommandArg declared above, in the layout of
 * Redis 7.2 and later (and Valkey): the 7.0 fields, then display_text.
 * Redis 7.2 reads display_text from every argument whatever size the
 * module declares (RedisModuleCommandInfoVersion.sizeof_arg), so a 7.0
 * layout showed each argument with the next one's name in COMMAND DOCS;
 * Redis 7.0 steps through the arguments by sizeof_arg and never reads past
 * deprecated_since/subargs, so this layout serves both. Keep display_text
 * NULL (COMMAND DOCS then shows the name). */
struct RedisModuleCommandArg {
    const char *name;
    RedisModuleCommandArgType type;
    int key_spec_index;
    const char *token;
    const char *summary;
    const char *since;
    int flags;
    const char *deprecated_since;
    struct RedisModuleCommandArg *subargs;
    const char *display_text; /* Redis 7.2 */
};

#define REDIS_API_REPLY_ENTRIES(X)                                                                   \
    X(int, ReplyWithDouble, (RedisModuleCtx * ctx, double d))                                        \
    X(int, ReplyWithMap, (RedisModuleCtx * ctx, long len))                                           \
    X(int, InfoAddFieldCString, (RedisModuleInfoCtx * ctx, const char *field, const char *value))

/* ---- change data capture (changes.c): stream keys and integer replies of
 * RedisModule_Call (XLEN). Owned by the changes engineer; resolved like the
 * entries above. */
#define REDISMODULE_KEYTYPE_STREAM 7

#define REDIS_API_CHANGES_ENTRIES(X) \
    X(long long, CallReplyInteger, (RedisModuleCallReply * reply))

/* ---- SQL off the main thread (worker.c, exec.c): blocked clients and
 * thread-safe contexts. */
#define REDISMODULE_CTX_FLAGS_DENY_BLOCKING (1 << 21)

typedef struct RedisModuleBlockedClient RedisModuleBlockedClient;
typedef void (*RedisModuleFreePrivDataFunc)(RedisModuleCtx *ctx, void *privdata);
typedef void (*RedisModuleDisconnectFunc)(RedisModuleCtx *ctx, RedisModuleBlockedClient *bc);

#define REDIS_API_WORKER_ENTRIES(X)                                                                  \
    X(RedisModuleBlockedClient *, BlockClient, (RedisModuleCtx * ctx, RedisModuleCmdFunc reply_callback, \
                                                RedisModuleCmdFunc timeout_callback,                  \
                                                RedisModuleFreePrivDataFunc free_privdata, long long timeout_ms)) \
    X(int, UnblockClient, (RedisModuleBlockedClient * bc, void *privdata))                           \
    X(void, SetDisconnectCallback, (RedisModuleBlockedClient * bc, RedisModuleDisconnectFunc callback)) \
    X(void *, GetBlockedClientPrivateData, (RedisModuleCtx * ctx))                                   \
    X(RedisModuleCtx *, GetDetachedThreadSafeContext, (RedisModuleCtx * ctx))                        \
    X(void, FreeThreadSafeContext, (RedisModuleCtx * ctx))                                           \
    X(void, ThreadSafeContextLock, (RedisModuleCtx * ctx))                                           \
    X(void, ThreadSafeContextUnlock, (RedisModuleCtx * ctx))

/* ---- writes paused and ACL key checks (offload.c, stage.c, acl.c):
 * Redis pauses writes for CLIENT PAUSE WRITE, FAILOVER and SHUTDOWN with a
 * lagging replica, and asserts that nothing is propagated meanwhile;
 * RedisModule_AvoidReplicaTraffic() says whether such a pause is on. */
typedef struct RedisModuleUser RedisModuleUser;
typedef void (*RedisModuleDisconnectFunc)(RedisModuleCtx *ctx, RedisModuleBlockedClient *bc);

#define REDISMODULE_CMD_KEY_UPDATE (1ULL << 5)
#define REDISMODULE_CMD_KEY_INSERT (1ULL << 6)
#define REDISMODULE_CMD_KEY_DELETE (1ULL << 7)

#define REDIS_API_PAUSE_ENTRIES(X)                                                                   \
    X(int, AvoidReplicaTraffic, (void))                                                              \
    X(void, SetDisconnectCallback, (RedisModuleBlockedClient * bc, RedisModuleDisconnectFunc callback)) \
    X(RedisModuleString *, GetCurrentUserName, (RedisModuleCtx * ctx))                               \
    X(RedisModuleUser *, GetModuleUserFromUserName, (RedisModuleString * name))                      \
    X(void, FreeModuleUser, (RedisModuleUser * user))                                                \
    X(int, ACLCheckKeyPermissions, (RedisModuleUser * user, RedisModuleString * key, int flags))

#define REDIS_API_DECLARE(ret, name, params) extern ret(*RedisModule_##name) params;
REDIS_API_ENTRIES(REDIS_API_DECLARE)
REDIS_API_PROTOCOL_ENTRIES(REDIS_API_DECLARE)
REDIS_API_OPTIONAL_ENTRIES(REDIS_API_DECLARE)
REDIS_API_REPLY_ENTRIES(REDIS_API_DECLARE)
REDIS_API_CHANGES_ENTRIES(REDIS_API_DECLARE)
REDIS_API_WORKER_ENTRIES(REDIS_API_DECLARE)
REDIS_API_PAUSE_ENTRIES(REDIS_API_DECLARE)
#undef REDIS_API_DECLARE

/* Resolves every entry above and registers the module name. On failure
 * returns REDISMODULE_ERR, with the missing entry's name in *missing. */
int redis_api_init(RedisModuleCtx *ctx, const char *name, int ver, const char **missing);

#endif
