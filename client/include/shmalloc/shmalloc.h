/* shmalloc.h: the C API of the shmalloc client library (libshmalloc_c), for
 * C programs and for foreign-function interfaces (Python ctypes, Rust).
 *
 * It wraps the C++ library (shmalloc/client.h): connect to shmallocd, create
 * and open regions, allocate offsets through the daemon, turn offsets into
 * pointers, bump-allocate on an arena without any RPC, read statistics.
 * Offsets mean the same in every process that maps a region; pointers do
 * not: hand offsets to other processes.
 *
 * Errors: every function that can fail returns a shmalloc_status_t
 * (SHMALLOC_OK = 0; the other values are the gRPC / absl status codes, with
 * the same numbers) and leaves its out-parameters untouched on error. The
 * message of the last failure on the calling thread is returned by
 * shmalloc_last_error(), e.g. "NOT_FOUND: GetRegion: no region named x";
 * it stays valid until the next failing call on the same thread. A failed
 * call changes nothing in the daemon. Exceptions: the hot-path
 * shmalloc_arena_allocate and shmalloc_to_pointer return NULL on failure and
 * set no message.
 *
 * Handles: opaque; each *_close / *_destroy accepts NULL. A region or arena
 * keeps the client's session (and the mapping) alive, so handles may be
 * closed in any order; the session ends - and the daemon frees every
 * non-detached allocation it owns - when the client and every region and
 * arena made from it are closed, or when the process exits.
 *
 * Thread-safety: every function is thread-safe, except shmalloc_arena_reset
 * (no concurrent allocation on the arena in any process) and closing a
 * handle while another thread uses it.
 *
 *   shmalloc_client_t* c;
 *   if (shmalloc_connect(NULL, &c) != SHMALLOC_OK) {
 *     fprintf(stderr, "%s\n", shmalloc_last_error());
 *   }
 *   shmalloc_region_t* r;
 *   shmalloc_region_open(c, "frames", &r);
 *   uint64_t off;
 *   shmalloc_allocate(r, 4096, 0, 1, &off);   // detached: survives us
 *   memset(shmalloc_to_pointer(r, off), 0, 4096);
 */
#ifndef CLIENT_INCLUDE_SHMALLOC_SHMALLOC_H_
#define CLIENT_INCLUDE_SHMALLOC_SHMALLOC_H_

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define SHMALLOC_C_API __attribute__((visibility("default")))
#else
#define SHMALLOC_C_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes: the gRPC / absl::StatusCode values. */
typedef enum shmalloc_status {
  SHMALLOC_OK = 0,
  SHMALLOC_CANCELLED = 1,
  SHMALLOC_UNKNOWN = 2,
  SHMALLOC_INVALID_ARGUMENT = 3,    /* bad name, size 0, bad alignment... */
  SHMALLOC_DEADLINE_EXCEEDED = 4,   /* the daemon did not answer in time */
  SHMALLOC_NOT_FOUND = 5,           /* unknown region */
  SHMALLOC_ALREADY_EXISTS = 6,      /* region name taken */
  SHMALLOC_PERMISSION_DENIED = 7,   /* cannot open the region's file */
  SHMALLOC_RESOURCE_EXHAUSTED = 8,  /* region full, quota exceeded */
  SHMALLOC_FAILED_PRECONDITION = 9, /* not a live allocation; stale */
  SHMALLOC_ABORTED = 10,
  SHMALLOC_OUT_OF_RANGE = 11,
  SHMALLOC_UNIMPLEMENTED = 12,
  SHMALLOC_INTERNAL = 13,
  SHMALLOC_UNAVAILABLE = 14, /* daemon absent, or the session ended */
  SHMALLOC_DATA_LOSS = 15,   /* a region file that is not shmalloc's */
  SHMALLOC_UNAUTHENTICATED = 16
} shmalloc_status_t;

/* How a region allocates; values match shmalloc.v1.Strategy. */
typedef enum shmalloc_strategy {
  SHMALLOC_STRATEGY_UNSPECIFIED = 0,
  SHMALLOC_STRATEGY_ARENA = 1,    /* bump; frees only as a whole (reset) */
  SHMALLOC_STRATEGY_POOL = 2,     /* fixed-size blocks of block_size */
  SHMALLOC_STRATEGY_BUDDY = 3,    /* power-of-two blocks */
  SHMALLOC_STRATEGY_SLAB = 4,     /* size classes */
  SHMALLOC_STRATEGY_FREE_LIST = 5 /* general sizes, coalescing */
} shmalloc_strategy_t;

typedef struct shmalloc_client shmalloc_client_t;
typedef struct shmalloc_region shmalloc_region_t;
typedef struct shmalloc_arena shmalloc_arena_t;

/* ---- errors ------------------------------------------------------------ */

/* Returns the message of the last failed call on this thread ("" if none).
 * The pointer is valid until the next failing call on this thread. */
SHMALLOC_C_API const char* shmalloc_last_error(void);
/* Returns the name of a status code: "OK", "NOT_FOUND", ... (static). */
SHMALLOC_C_API const char* shmalloc_status_name(shmalloc_status_t status);

/* ---- client ------------------------------------------------------------ */

/* The session's link to the daemon; values match
 * shmalloc::client::ConnectionState. After a daemon restart the library
 * reconnects by itself and resumes the session (same id, same allocations):
 * CONNECTED -> RECONNECTING -> RESUMED; LOST is final (the daemon reclaimed
 * the session, or the client gave up): every later call fails
 * FAILED_PRECONDITION "session lost". While RECONNECTING, calls that need
 * the daemon wait up to call_wait_ms, then fail UNAVAILABLE; allocate and
 * free resent after a lost answer carry the same request id, so they are
 * applied once. Arenas keep working throughout (no RPC). */
typedef enum shmalloc_connection_state {
  SHMALLOC_CONNECTED = 0,
  SHMALLOC_RECONNECTING = 1,
  SHMALLOC_RESUMED = 2,
  SHMALLOC_LOST = 3
} shmalloc_connection_state_t;

/* Called on every state change, in order, on the library's session thread
 * (first with SHMALLOC_CONNECTED before shmalloc_connect returns). Keep it
 * short; it must not close the client. */
typedef void (*shmalloc_state_callback_t)(shmalloc_connection_state_t state,
                                          void* arg);

typedef struct shmalloc_connect_options {
  /* Socket path or gRPC target; NULL or "" = $SHMALLOC_SOCKET, else the
   * daemon's default socket. */
  const char* target;
  const char* client_name;     /* NULL = "<program>[pid]" */
  const char* shm_dir;         /* NULL = $SHMALLOC_SHM_DIR or the daemon's */
  uint32_t connect_timeout_ms; /* 0 = 5000 */
  uint32_t rpc_timeout_ms;     /* 0 = 5000; the deadline of every call */
  /* Reconnection after a daemon restart (see shmalloc_connection_state_t).
   * Waits between attempts start at the initial backoff and double up to
   * the maximum, each times a random factor in [0.8, 1.2]. */
  int disable_reconnect;                 /* != 0: a broken stream is LOST */
  uint32_t reconnect_initial_backoff_ms; /* 0 = 20 */
  uint32_t reconnect_max_backoff_ms;     /* 0 = 1000 */
  uint32_t reconnect_give_up_ms;         /* 0 = 300000; then LOST */
  uint32_t call_wait_ms; /* 0 = rpc_timeout_ms: a call's wait in an outage */
  shmalloc_state_callback_t on_state_change; /* NULL = none */
  void* on_state_change_arg;                 /* passed to it */
} shmalloc_connect_options_t;

/* Connects to shmallocd at `target` (see shmalloc_connect_options_t) and
 * opens a session; *client receives the handle. UNAVAILABLE when the daemon
 * cannot be reached in time, DEADLINE_EXCEEDED, INVALID_ARGUMENT. */
SHMALLOC_C_API shmalloc_status_t shmalloc_connect(const char* target,
                                                  shmalloc_client_t** client);
/* As shmalloc_connect, with every option; `options` may be NULL. */
SHMALLOC_C_API shmalloc_status_t shmalloc_connect_with_options(
    const shmalloc_connect_options_t* options, shmalloc_client_t** client);
/* Releases the handle (the session lives on while regions or arenas made
 * from it are open). NULL is a no-op. */
SHMALLOC_C_API void shmalloc_client_close(shmalloc_client_t* client);
/* Returns the session id the daemon gave this client (never 0). */
SHMALLOC_C_API uint64_t
shmalloc_client_session_id(const shmalloc_client_t* client);
/* Returns the link state now (SHMALLOC_LOST for NULL). */
SHMALLOC_C_API shmalloc_connection_state_t
shmalloc_client_connection_state(const shmalloc_client_t* client);
/* Returns "CONNECTED", "RECONNECTING", "RESUMED" or "LOST" (static). */
SHMALLOC_C_API const char* shmalloc_connection_state_name(
    shmalloc_connection_state_t state);

/* ---- regions ----------------------------------------------------------- */

typedef struct shmalloc_region_config {
  const char* name;             /* [a-z0-9][a-z0-9_.-]{0,62} */
  shmalloc_strategy_t strategy; /* required */
  uint64_t size_bytes;          /* heap bytes, > 0 */
  uint64_t block_size;          /* POOL block size; BUDDY minimum block */
  const uint64_t* size_classes; /* SLAB classes (ascending); NULL = default */
  size_t size_class_count;
  uint64_t quota_bytes_per_session; /* 0 = no quota */
  /* Nonzero: the data file on the daemon's --huge_dir (hugetlbfs or a
   * huge=always tmpfs), rounded up to whole huge pages; FAILED_PRECONDITION
   * when the daemon has none. */
  int huge_pages;
} shmalloc_region_config_t;

/* Creates a region in the daemon (it is not opened). ALREADY_EXISTS,
 * INVALID_ARGUMENT, RESOURCE_EXHAUSTED (no room in the shm directory). */
SHMALLOC_C_API shmalloc_status_t shmalloc_region_create(
    shmalloc_client_t* client, const shmalloc_region_config_t* config);
/* Deletes a region and its files. FAILED_PRECONDITION when it has live
 * allocations and !force; NOT_FOUND. Processes mapping it keep the mapping. */
SHMALLOC_C_API shmalloc_status_t
shmalloc_region_delete(shmalloc_client_t* client, const char* name, int force);
/* Maps region `name` read-write; *region receives the handle. NOT_FOUND,
 * PERMISSION_DENIED, DATA_LOSS. */
SHMALLOC_C_API shmalloc_status_t shmalloc_region_open(
    shmalloc_client_t* client, const char* name, shmalloc_region_t** region);
/* Unmaps (once no arena uses the region) and releases the handle. NULL ok. */
SHMALLOC_C_API void shmalloc_region_close(shmalloc_region_t* region);

typedef struct shmalloc_region_info {
  char name[64];
  shmalloc_strategy_t strategy;
  uint64_t size_bytes; /* data file bytes (header + heap) */
  uint64_t block_size;
  uint64_t generation; /* as read now from the shared header */
  uint64_t heap_begin; /* first allocatable offset */
  uint64_t heap_end;   /* one past the last */
} shmalloc_region_info_t;

/* Fills *info with the region's description. Never fails for a valid
 * handle. */
SHMALLOC_C_API shmalloc_status_t shmalloc_region_info(
    const shmalloc_region_t* region, shmalloc_region_info_t* info);
/* Frees everything in the region and bumps its generation. FAILED_
 * PRECONDITION when it has live allocations and !force. */
SHMALLOC_C_API shmalloc_status_t
shmalloc_region_reset(shmalloc_region_t* region, int force);

/* ---- allocation -------------------------------------------------------- */

/* Allocates `size` bytes aligned to `alignment` (a power of two <= 2 MiB,
 * BUDDY/POOL/SLAB: <= 4096; 0 = 16) through the daemon; *offset receives the
 * offset. Owned by this session (freed when it ends) unless `detached` != 0.
 * INVALID_ARGUMENT, RESOURCE_EXHAUSTED, NOT_FOUND, UNAVAILABLE. On an ARENA
 * region this takes from the shared cursor through the daemon (an arena does it
 * without an RPC) and the allocation is freed only by a reset. */
SHMALLOC_C_API shmalloc_status_t shmalloc_allocate(shmalloc_region_t* region,
                                                   uint64_t size,
                                                   uint64_t alignment,
                                                   int detached,
                                                   uint64_t* offset);
/* Allocates `count` blocks of `size` bytes in one call, all or nothing;
 * offsets[0..count) receive them. Errors as shmalloc_allocate. */
SHMALLOC_C_API shmalloc_status_t shmalloc_allocate_batch(
    shmalloc_region_t* region, uint64_t size, uint32_t count,
    uint64_t alignment, int detached, uint64_t* offsets);
/* Frees a live allocation (any session's: the consumer of a hand-off frees
 * what the producer allocated). FAILED_PRECONDITION (not a live allocation
 * start; ARENA region), INVALID_ARGUMENT (out of range), NOT_FOUND. */
SHMALLOC_C_API shmalloc_status_t shmalloc_free(shmalloc_region_t* region,
                                               uint64_t offset);
/* Frees `count` allocations in one call, all or nothing. */
SHMALLOC_C_API shmalloc_status_t shmalloc_free_batch(shmalloc_region_t* region,
                                                     const uint64_t* offsets,
                                                     size_t count);

/* Returns the address of `offset` in this process, or NULL when it lies
 * outside the heap. Lock-free; sets no error message. */
SHMALLOC_C_API void* shmalloc_to_pointer(const shmalloc_region_t* region,
                                         uint64_t offset);
/* Returns in *offset the offset of `pointer`. INVALID_ARGUMENT unless it
 * points into this mapping's heap. */
SHMALLOC_C_API shmalloc_status_t shmalloc_to_offset(
    const shmalloc_region_t* region, const void* pointer, uint64_t* offset);

/* ---- arenas (the hot path: no RPC per allocation) ---------------------- */

/* Creates an arena on `region`: on an ARENA region the region's own shared
 * cursor (capacity_bytes ignored); on any other region one extent of
 * capacity_bytes (> 4096) taken from the daemon and owned by this session.
 * INVALID_ARGUMENT, RESOURCE_EXHAUSTED, errors of shmalloc_allocate. */
SHMALLOC_C_API shmalloc_status_t
shmalloc_arena_create(shmalloc_region_t* region, uint64_t capacity_bytes,
                      shmalloc_arena_t** arena);
/* Releases the arena (its extent is freed on a non-ARENA region). NULL ok. */
SHMALLOC_C_API void shmalloc_arena_destroy(shmalloc_arena_t* arena);
/* Returns `size` bytes aligned to `alignment` (power of two <= 2 MiB; 0 =
 * 16), or NULL when the arena is exhausted or the arguments are bad. Sets no
 * error message. Lock-free. */
SHMALLOC_C_API void* shmalloc_arena_allocate(shmalloc_arena_t* arena,
                                             uint64_t size, uint64_t alignment);
/* Releases everything allocated on the arena (an ARENA region is reset
 * through the daemon, bumping its generation). REQUIRES: no concurrent
 * allocation on it in any process. */
SHMALLOC_C_API shmalloc_status_t shmalloc_arena_reset(shmalloc_arena_t* arena);
/* Returns the arena's capacity and the bytes used on its shared cursor (by
 * every process); either pointer may be NULL. */
SHMALLOC_C_API shmalloc_status_t
shmalloc_arena_usage(const shmalloc_arena_t* arena, uint64_t* capacity_bytes,
                     uint64_t* used_bytes);

/* ---- statistics -------------------------------------------------------- */

typedef struct shmalloc_region_stats {
  uint64_t capacity_bytes; /* heap bytes */
  uint64_t used_bytes;     /* reserved by live allocations */
  uint64_t free_bytes;     /* capacity - used */
  uint64_t peak_used_bytes;
  uint64_t live_allocations;
  uint64_t failed_allocations; /* refused for lack of space */
  uint64_t largest_free_bytes; /* largest allocation possible now */
  double fragmentation;        /* 1 - largest_free / free, in [0, 1] */
  uint64_t detached_allocations;
  uint64_t detached_bytes;
  uint64_t sessions; /* sessions holding allocations in the region */
  uint64_t generation;
} shmalloc_region_stats_t;

/* Fills *stats with the region's figures from the daemon. NOT_FOUND when the
 * region was deleted. */
SHMALLOC_C_API shmalloc_status_t shmalloc_region_stats(
    const shmalloc_region_t* region, shmalloc_region_stats_t* stats);

/* ---- richer calls for foreign-function layers (Python, Rust) ----------- */

/* As shmalloc_allocate_batch, and also: sizes[0..count) (may be NULL)
 * receive the bytes reserved for each block (>= size), *generation (may be
 * NULL) the region generation the daemon allocated in (pass it to
 * shmalloc_free_generation). Errors as shmalloc_allocate. */
SHMALLOC_C_API shmalloc_status_t shmalloc_allocate_extents(
    shmalloc_region_t* region, uint64_t size, uint32_t count,
    uint64_t alignment, int detached, uint64_t* offsets, uint64_t* sizes,
    uint64_t* generation);
/* As shmalloc_free_batch, fenced: FAILED_PRECONDITION when the region was
 * reset since `generation` (0 = unchecked), so a stale offset never frees
 * another holder's block. */
SHMALLOC_C_API shmalloc_status_t
shmalloc_free_generation(shmalloc_region_t* region, const uint64_t* offsets,
                         size_t count, uint64_t generation);

/* Takes ownership of `count` live DETACHED allocations another process
 * handed over (offsets from its shmalloc_allocate with detached=1): this
 * session then owns them, so the daemon frees them when it ends (the process
 * exits or is killed) and counts them in its quota. All or nothing.
 * `generation` as in shmalloc_free_generation (0 = unchecked).
 * FAILED_PRECONDITION (an allocation a session owns, not a live allocation
 * start, duplicates, ARENA region, stale generation), INVALID_ARGUMENT (out
 * of range), RESOURCE_EXHAUSTED (quota), NOT_FOUND. */
SHMALLOC_C_API shmalloc_status_t shmalloc_adopt(shmalloc_region_t* region,
                                                const uint64_t* offsets,
                                                size_t count,
                                                uint64_t generation);

/* Sets *json to the daemon's figures (GetStats) as one line of JSON, the
 * document `shmalloc stats --json` prints: {"uptime_ms", "sessions",
 * "regions": [{"name", "used_bytes", ..., "sessions": [{"session_id",
 * "client_name", "used_bytes", "live_allocations"}], ...}], "rpcs": ...}.
 * `region` NULL or "" = every region. Free *json with shmalloc_string_free.
 * NOT_FOUND. */
SHMALLOC_C_API shmalloc_status_t shmalloc_stats_json(shmalloc_client_t* client,
                                                     const char* region,
                                                     char** json);
/* Sets *json to every region's description (ListRegions) as JSON, the
 * document `shmalloc regions list --json` prints. Free it with
 * shmalloc_string_free. */
SHMALLOC_C_API shmalloc_status_t
shmalloc_regions_json(shmalloc_client_t* client, char** json);
/* Frees a string returned by this library. NULL is a no-op. */
SHMALLOC_C_API void shmalloc_string_free(char* s);

/* ---- block cache (POOL / SLAB regions; see shmalloc/block_cache.h) ------ */

typedef struct shmalloc_block_cache shmalloc_block_cache_t;

/* Creates a cache of daemon blocks over a POOL or SLAB region: blocks are
 * taken from and returned to the daemon `batch` at a time (0 = 64), so an
 * allocate + free pair usually makes no RPC. Cached blocks stay owned by
 * this session (reclaimed if the process dies). FAILED_PRECONDITION for
 * another strategy, INVALID_ARGUMENT. */
SHMALLOC_C_API shmalloc_status_t shmalloc_block_cache_create(
    shmalloc_region_t* region, uint32_t batch, shmalloc_block_cache_t** cache);
/* Returns every cached block to the daemon and releases the cache. NULL ok.
 * REQUIRES: no concurrent use. */
SHMALLOC_C_API void shmalloc_block_cache_destroy(shmalloc_block_cache_t* cache);
/* Sets *offset to a block of at least `size` bytes. INVALID_ARGUMENT (no
 * class fits, size 0), errors of the refill RPC. */
SHMALLOC_C_API shmalloc_status_t shmalloc_block_cache_allocate(
    shmalloc_block_cache_t* cache, uint64_t size, uint64_t* offset);
/* Takes back a block this cache handed out with `size`. INVALID_ARGUMENT,
 * errors of a drain RPC. */
SHMALLOC_C_API shmalloc_status_t shmalloc_block_cache_free(
    shmalloc_block_cache_t* cache, uint64_t offset, uint64_t size);
/* Returns every cached block to the daemon. REQUIRES: no concurrent use. */
SHMALLOC_C_API shmalloc_status_t
shmalloc_block_cache_flush(shmalloc_block_cache_t* cache);
/* Returns the block size that serves `size` (0 when none does). */
SHMALLOC_C_API uint64_t shmalloc_block_cache_class_size(
    const shmalloc_block_cache_t* cache, uint64_t size);

typedef struct shmalloc_block_cache_stats {
  uint64_t allocate_rpcs;      /* batch Allocate calls to the daemon */
  uint64_t free_rpcs;          /* batch Free calls to the daemon */
  uint64_t blocks_from_daemon; /* blocks received */
  uint64_t blocks_to_daemon;   /* blocks returned */
  uint64_t cached_blocks;      /* held in the cache now */
  uint64_t rejected_frees;     /* offsets the daemon refused on drain */
} shmalloc_block_cache_stats_t;

/* Fills *stats. REQUIRES: no concurrent use for exact counts. */
SHMALLOC_C_API shmalloc_status_t shmalloc_block_cache_stats(
    const shmalloc_block_cache_t* cache, shmalloc_block_cache_stats_t* stats);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* CLIENT_INCLUDE_SHMALLOC_SHMALLOC_H_ */
