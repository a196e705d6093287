/* c_example: the C API (shmalloc/shmalloc.h) in a few lines: connect, open
 * (or create) a region, allocate, write through the pointer, free.
 *
 *   c_example [REGION]      (default "c-demo", a FREE_LIST region) */
#include <stdio.h>
#include <string.h>

#include "shmalloc/shmalloc.h"

static int Check(shmalloc_status_t status, const char* what) {
  if (status == SHMALLOC_OK) return 0;
  fprintf(stderr, "c_example: %s: %s\n", what, shmalloc_last_error());
  return 1;
}

int main(int argc, char** argv) {
  const char* name = argc > 1 ? argv[1] : "c-demo";
  shmalloc_client_t* client = NULL;
  if (Check(shmalloc_connect(NULL, &client), "connect")) return 1;

  shmalloc_region_config_t config;
  memset(&config, 0, sizeof(config));
  config.name = name;
  config.strategy = SHMALLOC_STRATEGY_FREE_LIST;
  config.size_bytes = 1 << 20;
  shmalloc_status_t s = shmalloc_region_create(client, &config);
  if (s != SHMALLOC_ALREADY_EXISTS && Check(s, "create region")) return 1;

  shmalloc_region_t* region = NULL;
  if (Check(shmalloc_region_open(client, name, &region), "open region")) {
    return 1;
  }
  uint64_t offset = 0;
  if (Check(shmalloc_allocate(region, 64, 0, 0, &offset), "allocate")) {
    return 1;
  }
  char* p = shmalloc_to_pointer(region, offset);
  snprintf(p, 64, "hello from C at offset %llu", (unsigned long long)offset);
  printf("c_example: %s\n", p);
  if (Check(shmalloc_free(region, offset), "free")) return 1;

  shmalloc_region_stats_t stats;
  if (Check(shmalloc_region_stats(region, &stats), "stats")) return 1;
  printf("c_example: region '%s': %llu of %llu bytes used\n", name,
         (unsigned long long)stats.used_bytes,
         (unsigned long long)stats.capacity_bytes);
  shmalloc_region_close(region);
  shmalloc_client_close(client);
  return 0;
}
