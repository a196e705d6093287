/* The C API (shmalloc/shmalloc.h) from a C program that links only
 * libshmalloc_c, against a real shmallocd. Run by c_api_wrapper_test (which
 * starts the daemon and sets SHMALLOC_SOCKET); it can also run by hand:
 *   SHMALLOC_SOCKET=/path/to.sock c_api_test
 * Leaves one detached allocation in region "c-frames" for the wrapper to
 * find after this process has exited. Exit 0 when every check passes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmalloc/shmalloc.h"

static int checks = 0;

#define CHECK(cond)                                                           \
  do {                                                                        \
    ++checks;                                                                 \
    if (!(cond)) {                                                            \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, \
              __LINE__, #cond, shmalloc_last_error());                        \
      exit(1);                                                                \
    }                                                                         \
  } while (0)

#define CHECK_STATUS(call, expected)                                         \
  do {                                                                       \
    shmalloc_status_t s_ = (call);                                           \
    ++checks;                                                                \
    if (s_ != (expected)) {                                                  \
      fprintf(stderr, "%s:%d: %s returned %s, expected %s (%s)\n", __FILE__, \
              __LINE__, #call, shmalloc_status_name(s_),                     \
              shmalloc_status_name(expected), shmalloc_last_error());        \
      exit(1);                                                               \
    }                                                                        \
  } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, SHMALLOC_OK)

static void TestConnectFailure(void) {
  shmalloc_connect_options_t options;
  memset(&options, 0, sizeof(options));
  options.target = "/nonexistent/shmalloc.sock";
  options.connect_timeout_ms = 200;
  shmalloc_client_t* client = NULL;
  CHECK_STATUS(shmalloc_connect_with_options(&options, &client),
               SHMALLOC_UNAVAILABLE);
  CHECK(client == NULL);
  CHECK(strstr(shmalloc_last_error(), "UNAVAILABLE") != NULL);
  CHECK(strcmp(shmalloc_status_name(SHMALLOC_NOT_FOUND), "NOT_FOUND") == 0);
}

static void TestRegionsAndAllocation(shmalloc_client_t* client) {
  shmalloc_region_config_t config;
  memset(&config, 0, sizeof(config));
  config.name = "c-frames";
  config.strategy = SHMALLOC_STRATEGY_FREE_LIST;
  config.size_bytes = 1 << 20;
  CHECK_OK(shmalloc_region_create(client, &config));
  CHECK_STATUS(shmalloc_region_create(client, &config),
               SHMALLOC_ALREADY_EXISTS);
  config.name = "Bad/Name";
  CHECK_STATUS(shmalloc_region_create(client, &config),
               SHMALLOC_INVALID_ARGUMENT);
  CHECK(strstr(shmalloc_last_error(), "INVALID_ARGUMENT") != NULL);

  shmalloc_region_t* region = NULL;
  CHECK_STATUS(shmalloc_region_open(client, "nope", &region),
               SHMALLOC_NOT_FOUND);
  CHECK_OK(shmalloc_region_open(client, "c-frames", &region));
  shmalloc_region_info_t info;
  CHECK_OK(shmalloc_region_info(region, &info));
  CHECK(strcmp(info.name, "c-frames") == 0);
  CHECK(info.strategy == SHMALLOC_STRATEGY_FREE_LIST);
  CHECK(info.heap_end - info.heap_begin == (1u << 20));

  /* One owned allocation: write through the pointer, read back. */
  uint64_t offset = 0;
  CHECK_OK(shmalloc_allocate(region, 1000, 64, 0, &offset));
  CHECK(offset != 0 && offset % 64 == 0);
  unsigned char* p = shmalloc_to_pointer(region, offset);
  CHECK(p != NULL);
  for (int i = 0; i < 1000; ++i) p[i] = (unsigned char)(i * 7);
  uint64_t back = 0;
  CHECK_OK(shmalloc_to_offset(region, p + 10, &back));
  CHECK(back == offset + 10);
  CHECK(shmalloc_to_pointer(region, 0) == NULL);
  CHECK(shmalloc_to_pointer(region, info.heap_end) == NULL);
  CHECK_STATUS(shmalloc_to_offset(region, &back, &back),
               SHMALLOC_INVALID_ARGUMENT);
  CHECK_STATUS(shmalloc_allocate(region, 64, 3, 0, &back),
               SHMALLOC_INVALID_ARGUMENT);
  CHECK_STATUS(shmalloc_allocate(region, 2 << 20, 0, 0, &back),
               SHMALLOC_INVALID_ARGUMENT);

  /* A batch, freed in one call; a second free is refused. */
  uint64_t batch[10];
  CHECK_OK(shmalloc_allocate_batch(region, 256, 10, 0, 0, batch));
  for (int i = 0; i < 10; ++i) {
    CHECK(batch[i] != offset);
    for (int j = 0; j < i; ++j) CHECK(batch[i] != batch[j]);
  }
  shmalloc_region_stats_t stats;
  CHECK_OK(shmalloc_region_stats(region, &stats));
  CHECK(stats.live_allocations == 11);
  CHECK(stats.capacity_bytes == (1u << 20));
  CHECK(stats.used_bytes + stats.free_bytes == stats.capacity_bytes);
  CHECK_OK(shmalloc_free_batch(region, batch, 10));
  CHECK_STATUS(shmalloc_free(region, batch[0]), SHMALLOC_FAILED_PRECONDITION);
  for (int i = 0; i < 1000; ++i) CHECK(p[i] == (unsigned char)(i * 7));
  CHECK_OK(shmalloc_free(region, offset));

  /* Adopt: detached blocks become this session's (freed at its end);
   * adopting them again, owned now, is refused and changes nothing. */
  uint64_t handed[2];
  CHECK_OK(shmalloc_allocate_batch(region, 128, 2, 0, 1, handed));
  CHECK_OK(shmalloc_region_stats(region, &stats));
  CHECK(stats.live_allocations == 2 && stats.detached_allocations == 2);
  CHECK_OK(shmalloc_adopt(region, handed, 2, 0));
  CHECK_OK(shmalloc_region_stats(region, &stats));
  CHECK(stats.live_allocations == 2 && stats.detached_allocations == 0);
  CHECK_STATUS(shmalloc_adopt(region, handed, 2, 0),
               SHMALLOC_FAILED_PRECONDITION);
  CHECK_OK(shmalloc_region_stats(region, &stats));
  CHECK(stats.live_allocations == 2 && stats.detached_allocations == 0);
  CHECK_OK(shmalloc_free_batch(region, handed, 2));

  /* One detached allocation, left for the wrapper to find. */
  CHECK_OK(shmalloc_allocate(region, 4096, 0, 1, &offset));
  memset(shmalloc_to_pointer(region, offset), 0xab, 4096);
  CHECK_OK(shmalloc_region_stats(region, &stats));
  CHECK(stats.live_allocations == 1 && stats.detached_allocations == 1);
  CHECK_STATUS(shmalloc_region_delete(client, "c-frames", 0),
               SHMALLOC_FAILED_PRECONDITION);

  /* An arena inside this FREE_LIST region: one extent from the daemon. */
  shmalloc_arena_t* arena = NULL;
  CHECK_OK(shmalloc_arena_create(region, 64 << 10, &arena));
  void* a = shmalloc_arena_allocate(arena, 100, 0);
  void* b = shmalloc_arena_allocate(arena, 100, 64);
  CHECK(a != NULL && b != NULL && a != b && ((uintptr_t)b % 64) == 0);
  CHECK(shmalloc_arena_allocate(arena, 1 << 20, 0) == NULL);
  shmalloc_arena_destroy(arena);
  shmalloc_region_close(region);
}

static void TestArenaRegion(shmalloc_client_t* client) {
  shmalloc_region_config_t config;
  memset(&config, 0, sizeof(config));
  config.name = "c-arena";
  config.strategy = SHMALLOC_STRATEGY_ARENA;
  config.size_bytes = 1 << 20;
  CHECK_OK(shmalloc_region_create(client, &config));
  shmalloc_region_t* region = NULL;
  CHECK_OK(shmalloc_region_open(client, "c-arena", &region));
  /* The daemon allocates on an ARENA region too, but frees only as a whole. */
  uint64_t offset = 0;
  CHECK_OK(shmalloc_allocate(region, 64, 0, 0, &offset));
  CHECK_STATUS(shmalloc_free(region, offset), SHMALLOC_FAILED_PRECONDITION);

  shmalloc_arena_t* arena = NULL;
  CHECK_OK(shmalloc_arena_create(region, 0, &arena));
  unsigned char* seen[100];
  for (int i = 0; i < 100; ++i) {
    seen[i] = shmalloc_arena_allocate(arena, 64, 0);
    CHECK(seen[i] != NULL);
    memset(seen[i], i, 64);
  }
  for (int i = 0; i < 100; ++i) CHECK(seen[i][0] == i && seen[i][63] == i);
  uint64_t capacity = 0, used = 0;
  CHECK_OK(shmalloc_arena_usage(arena, &capacity, &used));
  CHECK(capacity > 0 && used >= 100 * 64 + 64 && used <= capacity);

  shmalloc_region_info_t before, after;
  CHECK_OK(shmalloc_region_info(region, &before));
  CHECK_OK(shmalloc_arena_reset(arena));
  CHECK_OK(shmalloc_region_info(region, &after));
  CHECK(after.generation == before.generation + 1);
  CHECK_OK(shmalloc_arena_usage(arena, NULL, &used));
  CHECK(used == 0);
  /* The client goes first; the region and arena keep the session. */
  shmalloc_client_close(client);
  CHECK(shmalloc_arena_allocate(arena, 64, 0) != NULL);
  shmalloc_arena_destroy(arena);
  shmalloc_region_close(region);
}

int main(void) {
  TestConnectFailure();
  shmalloc_client_t* client = NULL;
  CHECK_OK(shmalloc_connect(NULL, &client)); /* $SHMALLOC_SOCKET */
  CHECK(shmalloc_client_session_id(client) != 0);
  TestRegionsAndAllocation(client);
  TestArenaRegion(client); /* closes the client */
  shmalloc_client_close(NULL);
  shmalloc_region_close(NULL);
  shmalloc_arena_destroy(NULL);
  printf("c_api_test: %d checks passed\n", checks);
  return 0;
}
