// The C API (shmalloc/shmalloc.h) over the C++ client library. Every entry
// point converts absl::Status to a shmalloc_status_t (same numbers) and
// records the message in a thread-local string; no C++ exception crosses the
// boundary.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "client/cli/stats_format.h"
#include "client/rpc.h"
#include "shmalloc/arena.h"
#include "shmalloc/block_cache.h"
#include "shmalloc/client.h"
#include "shmalloc/region.h"
#include "shmalloc/shmalloc.h"

struct shmalloc_client {
  std::unique_ptr<shmalloc::client::Client> client;
};
struct shmalloc_region {
  std::shared_ptr<shmalloc::client::Region> region;
};
struct shmalloc_arena {
  std::unique_ptr<shmalloc::client::Arena> arena;
};
struct shmalloc_block_cache {
  std::unique_ptr<shmalloc::client::BlockCache> cache;
};

namespace {

namespace sc = ::shmalloc::client;

thread_local std::string tls_last_error;

static_assert(SHMALLOC_UNAUTHENTICATED ==
              static_cast<int>(absl::StatusCode::kUnauthenticated));
static_assert(SHMALLOC_NOT_FOUND ==
              static_cast<int>(absl::StatusCode::kNotFound));
static_assert(SHMALLOC_LOST == static_cast<int>(sc::ConnectionState::kLost));
static_assert(SHMALLOC_RESUMED ==
              static_cast<int>(sc::ConnectionState::kResumed));
static_assert(SHMALLOC_STRATEGY_FREE_LIST ==
              static_cast<int>(sc::Strategy::kFreeList));

shmalloc_status_t Fail(const absl::Status& status) {
  if (status.ok()) return SHMALLOC_OK;
  tls_last_error = absl::StrCat(absl::StatusCodeToString(status.code()), ": ",
                                status.message());
  return static_cast<shmalloc_status_t>(status.code());
}

shmalloc_status_t NullArgument(const char* what) {
  return Fail(absl::InvalidArgumentError(absl::StrCat(what, " is NULL")));
}

// Runs `body`, turning any C++ exception into INTERNAL.
template <typename Body>
shmalloc_status_t Guarded(Body body) noexcept {
  try {
    return body();
  } catch (const std::exception& e) {
    return Fail(absl::InternalError(absl::StrCat("C++ exception: ", e.what())));
  } catch (...) {
    return Fail(absl::InternalError("unknown C++ exception"));
  }
}

// Returns a malloc'd copy of `s` (freed by shmalloc_string_free).
char* CopyString(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, s.c_str(), s.size() + 1);
  }
  return out;
}

absl::Duration Millis(uint32_t ms) {
  return ms == 0 ? absl::Seconds(5) : absl::Milliseconds(ms);
}

}  // namespace

extern "C" {

const char* shmalloc_last_error(void) { return tls_last_error.c_str(); }

const char* shmalloc_status_name(shmalloc_status_t status) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  const int i = static_cast<int>(status);
  return i >= 0 && i < 17 ? kNames[i] : "UNKNOWN_STATUS";
}

shmalloc_status_t shmalloc_connect(const char* target,
                                   shmalloc_client_t** client) {
  shmalloc_connect_options_t options = {};
  options.target = target;
  return shmalloc_connect_with_options(&options, client);
}

shmalloc_status_t shmalloc_connect_with_options(
    const shmalloc_connect_options_t* options, shmalloc_client_t** client) {
  if (client == nullptr) return NullArgument("client");
  return Guarded([&] {
    sc::ConnectOptions o;
    if (options != nullptr) {
      if (options->target != nullptr) o.target = options->target;
      if (options->client_name != nullptr) o.client_name = options->client_name;
      if (options->shm_dir != nullptr) o.shm_dir = options->shm_dir;
      o.connect_timeout = Millis(options->connect_timeout_ms);
      o.rpc_timeout = Millis(options->rpc_timeout_ms);
      sc::ReconnectOptions& r = o.reconnect;
      r.enabled = options->disable_reconnect == 0;
      if (options->reconnect_initial_backoff_ms != 0) {
        r.initial_backoff =
            absl::Milliseconds(options->reconnect_initial_backoff_ms);
      }
      if (options->reconnect_max_backoff_ms != 0) {
        r.max_backoff = absl::Milliseconds(options->reconnect_max_backoff_ms);
      }
      if (options->reconnect_give_up_ms != 0) {
        r.give_up_after = absl::Milliseconds(options->reconnect_give_up_ms);
      }
      r.call_wait = absl::Milliseconds(options->call_wait_ms);
      if (options->on_state_change != nullptr) {
        r.on_state_change =
            [fn = options->on_state_change,
             arg = options->on_state_change_arg](sc::ConnectionState state) {
              fn(static_cast<shmalloc_connection_state_t>(state), arg);
            };
      }
    }
    auto c = sc::Client::Connect(o);
    if (!c.ok()) return Fail(c.status());
    *client = new shmalloc_client{*std::move(c)};
    return SHMALLOC_OK;
  });
}

void shmalloc_client_close(shmalloc_client_t* client) { delete client; }

uint64_t shmalloc_client_session_id(const shmalloc_client_t* client) {
  return client == nullptr ? 0 : client->client->session_id();
}

shmalloc_connection_state_t shmalloc_client_connection_state(
    const shmalloc_client_t* client) {
  if (client == nullptr) return SHMALLOC_LOST;
  return static_cast<shmalloc_connection_state_t>(
      client->client->connection_state());
}

const char* shmalloc_connection_state_name(shmalloc_connection_state_t state) {
  switch (state) {
    case SHMALLOC_CONNECTED:
      return "CONNECTED";
    case SHMALLOC_RECONNECTING:
      return "RECONNECTING";
    case SHMALLOC_RESUMED:
      return "RESUMED";
    case SHMALLOC_LOST:
      return "LOST";
  }
  return "UNKNOWN";
}

shmalloc_status_t shmalloc_region_create(
    shmalloc_client_t* client, const shmalloc_region_config_t* config) {
  if (client == nullptr) return NullArgument("client");
  if (config == nullptr || config->name == nullptr) {
    return NullArgument("config or config->name");
  }
  if (config->size_class_count > 0 && config->size_classes == nullptr) {
    return NullArgument("config->size_classes");
  }
  return Guarded([&] {
    sc::CreateRegionOptions o;
    o.name = config->name;
    o.strategy = static_cast<sc::Strategy>(config->strategy);
    o.size_bytes = config->size_bytes;
    o.block_size = config->block_size;
    o.size_classes.assign(config->size_classes,
                          config->size_classes + config->size_class_count);
    o.quota_bytes_per_session = config->quota_bytes_per_session;
    o.huge_pages = config->huge_pages != 0;
    return Fail(client->client->CreateRegion(o).status());
  });
}

shmalloc_status_t shmalloc_region_delete(shmalloc_client_t* client,
                                         const char* name, int force) {
  if (client == nullptr || name == nullptr) return NullArgument("client/name");
  return Guarded(
      [&] { return Fail(client->client->DeleteRegion(name, force != 0)); });
}

shmalloc_status_t shmalloc_region_open(shmalloc_client_t* client,
                                       const char* name,
                                       shmalloc_region_t** region) {
  if (client == nullptr || name == nullptr || region == nullptr) {
    return NullArgument("client/name/region");
  }
  return Guarded([&] {
    auto r = client->client->OpenRegion(name);
    if (!r.ok()) return Fail(r.status());
    *region = new shmalloc_region{*std::move(r)};
    return SHMALLOC_OK;
  });
}

void shmalloc_region_close(shmalloc_region_t* region) { delete region; }

shmalloc_status_t shmalloc_region_info(const shmalloc_region_t* region,
                                       shmalloc_region_info_t* info) {
  if (region == nullptr || info == nullptr) return NullArgument("region/info");
  const sc::Region& r = *region->region;
  shmalloc_region_info_t out = {};
  std::strncpy(out.name, r.name().c_str(), sizeof(out.name) - 1);
  out.strategy = static_cast<shmalloc_strategy_t>(r.strategy());
  out.size_bytes = r.size_bytes();
  out.block_size = r.info().block_size;
  out.generation = r.generation();
  out.heap_begin = r.heap_begin();
  out.heap_end = r.heap_end();
  *info = out;
  return SHMALLOC_OK;
}

shmalloc_status_t shmalloc_region_reset(shmalloc_region_t* region, int force) {
  if (region == nullptr) return NullArgument("region");
  return Guarded(
      [&] { return Fail(region->region->Reset(force != 0).status()); });
}

shmalloc_status_t shmalloc_allocate(shmalloc_region_t* region, uint64_t size,
                                    uint64_t alignment, int detached,
                                    uint64_t* offset) {
  if (offset == nullptr) return NullArgument("offset");
  return shmalloc_allocate_batch(region, size, 1, alignment, detached, offset);
}

shmalloc_status_t shmalloc_allocate_batch(shmalloc_region_t* region,
                                          uint64_t size, uint32_t count,
                                          uint64_t alignment, int detached,
                                          uint64_t* offsets) {
  if (region == nullptr || offsets == nullptr) {
    return NullArgument("region/offsets");
  }
  if (count == 0) {
    return Fail(absl::InvalidArgumentError("count must be at least 1"));
  }
  return Guarded([&] {
    sc::AllocateOptions o;
    o.alignment = alignment;
    o.detached = detached != 0;
    auto extents = region->region->AllocateExtents(size, count, o);
    if (!extents.ok()) return Fail(extents.status());
    if (extents->size() != count) {
      return Fail(absl::InternalError(absl::StrCat(
          "asked for ", count, " extents, got ", extents->size())));
    }
    for (uint32_t i = 0; i < count; ++i) offsets[i] = (*extents)[i].offset;
    return SHMALLOC_OK;
  });
}

shmalloc_status_t shmalloc_free(shmalloc_region_t* region, uint64_t offset) {
  return shmalloc_free_batch(region, &offset, 1);
}

shmalloc_status_t shmalloc_free_batch(shmalloc_region_t* region,
                                      const uint64_t* offsets, size_t count) {
  if (region == nullptr || (offsets == nullptr && count > 0)) {
    return NullArgument("region/offsets");
  }
  return Guarded([&] {
    return Fail(
        region->region->Free(std::span<const uint64_t>(offsets, count)));
  });
}

void* shmalloc_to_pointer(const shmalloc_region_t* region, uint64_t offset) {
  return region == nullptr ? nullptr : region->region->ToPointer(offset);
}

shmalloc_status_t shmalloc_to_offset(const shmalloc_region_t* region,
                                     const void* pointer, uint64_t* offset) {
  if (region == nullptr || offset == nullptr) {
    return NullArgument("region/offset");
  }
  auto o = region->region->ToOffset(pointer);
  if (!o.ok()) return Fail(o.status());
  *offset = *o;
  return SHMALLOC_OK;
}

shmalloc_status_t shmalloc_arena_create(shmalloc_region_t* region,
                                        uint64_t capacity_bytes,
                                        shmalloc_arena_t** arena) {
  if (region == nullptr || arena == nullptr)
    return NullArgument("region/arena");
  return Guarded([&] {
    sc::ArenaOptions o;
    o.capacity_bytes = capacity_bytes;
    auto a = sc::Arena::Create(region->region, o);
    if (!a.ok()) return Fail(a.status());
    *arena = new shmalloc_arena{*std::move(a)};
    return SHMALLOC_OK;
  });
}

void shmalloc_arena_destroy(shmalloc_arena_t* arena) { delete arena; }

void* shmalloc_arena_allocate(shmalloc_arena_t* arena, uint64_t size,
                              uint64_t alignment) {
  if (arena == nullptr) return nullptr;
  return arena->arena->TryAllocate(
      size, alignment == 0 ? sc::kDefaultAlignment : alignment);
}

shmalloc_status_t shmalloc_arena_reset(shmalloc_arena_t* arena) {
  if (arena == nullptr) return NullArgument("arena");
  return Guarded([&] { return Fail(arena->arena->Reset()); });
}

shmalloc_status_t shmalloc_arena_usage(const shmalloc_arena_t* arena,
                                       uint64_t* capacity_bytes,
                                       uint64_t* used_bytes) {
  if (arena == nullptr) return NullArgument("arena");
  const sc::ArenaStats s = arena->arena->Stats();
  if (capacity_bytes != nullptr) *capacity_bytes = s.capacity_bytes;
  if (used_bytes != nullptr) *used_bytes = s.used_bytes;
  return SHMALLOC_OK;
}

shmalloc_status_t shmalloc_region_stats(const shmalloc_region_t* region,
                                        shmalloc_region_stats_t* stats) {
  if (region == nullptr || stats == nullptr)
    return NullArgument("region/stats");
  return Guarded([&] {
    auto s = region->region->Stats();
    if (!s.ok()) return Fail(s.status());
    shmalloc_region_stats_t out = {};
    out.capacity_bytes = s->capacity_bytes;
    out.used_bytes = s->used_bytes;
    out.free_bytes = s->free_bytes;
    out.peak_used_bytes = s->peak_used_bytes;
    out.live_allocations = s->live_allocations;
    out.failed_allocations = s->failed_allocations;
    out.largest_free_bytes = s->largest_free_bytes;
    out.fragmentation = s->fragmentation;
    out.detached_allocations = s->detached_allocations;
    out.detached_bytes = s->detached_bytes;
    out.sessions = s->sessions.size();
    out.generation = s->generation;
    *stats = out;
    return SHMALLOC_OK;
  });
}

shmalloc_status_t shmalloc_allocate_extents(shmalloc_region_t* region,
                                            uint64_t size, uint32_t count,
                                            uint64_t alignment, int detached,
                                            uint64_t* offsets, uint64_t* sizes,
                                            uint64_t* generation) {
  if (region == nullptr || offsets == nullptr) {
    return NullArgument("region/offsets");
  }
  if (count == 0) {
    return Fail(absl::InvalidArgumentError("count must be at least 1"));
  }
  return Guarded([&] {
    sc::AllocateOptions o;
    o.alignment = alignment;
    o.detached = detached != 0;
    uint64_t gen = 0;
    auto extents = region->region->AllocateExtents(size, count, o, &gen);
    if (!extents.ok()) {
      return Fail(extents.status());
    }
    if (extents->size() != count) {
      return Fail(absl::InternalError(absl::StrCat(
          "asked for ", count, " extents, got ", extents->size())));
    }
    for (uint32_t i = 0; i < count; ++i) {
      offsets[i] = (*extents)[i].offset;
      if (sizes != nullptr) {
        sizes[i] = (*extents)[i].size_bytes;
      }
    }
    if (generation != nullptr) {
      *generation = gen;
    }
    return SHMALLOC_OK;
  });
}

shmalloc_status_t shmalloc_free_generation(shmalloc_region_t* region,
                                           const uint64_t* offsets,
                                           size_t count, uint64_t generation) {
  if (region == nullptr || (offsets == nullptr && count > 0)) {
    return NullArgument("region/offsets");
  }
  return Guarded([&] {
    return Fail(region->region->Free(std::span<const uint64_t>(offsets, count),
                                     generation));
  });
}

shmalloc_status_t shmalloc_adopt(shmalloc_region_t* region,
                                 const uint64_t* offsets, size_t count,
                                 uint64_t generation) {
  if (region == nullptr || (offsets == nullptr && count > 0)) {
    return NullArgument("region/offsets");
  }
  return Guarded([&] {
    return Fail(region->region->Adopt(std::span<const uint64_t>(offsets, count),
                                      generation));
  });
}

shmalloc_status_t shmalloc_stats_json(shmalloc_client_t* client,
                                      const char* region, char** json) {
  if (client == nullptr || json == nullptr) {
    return NullArgument("client/json");
  }
  return Guarded([&] {
    shmalloc::v1::GetStatsRequest request;
    if (region != nullptr) {
      request.set_region(region);
    }
    shmalloc::v1::Stats stats;
    absl::Status s = sc::ConnectionOf(*client->client)
                         .Call(&shmalloc::v1::Allocator::Stub::GetStats,
                               "GetStats", request, &stats);
    if (!s.ok()) {
      return Fail(s);
    }
    char* out = CopyString(shmalloc::cli::StatsToJson(stats, false));
    if (out == nullptr) {
      return Fail(absl::ResourceExhaustedError("malloc"));
    }
    *json = out;
    return SHMALLOC_OK;
  });
}

shmalloc_status_t shmalloc_regions_json(shmalloc_client_t* client,
                                        char** json) {
  if (client == nullptr || json == nullptr) {
    return NullArgument("client/json");
  }
  return Guarded([&] {
    shmalloc::v1::ListRegionsResponse response;
    absl::Status s =
        sc::ConnectionOf(*client->client)
            .Call(&shmalloc::v1::Allocator::Stub::ListRegions, "ListRegions",
                  shmalloc::v1::ListRegionsRequest(), &response);
    if (!s.ok()) {
      return Fail(s);
    }
    char* out = CopyString(shmalloc::cli::RegionsToJson(response));
    if (out == nullptr) {
      return Fail(absl::ResourceExhaustedError("malloc"));
    }
    *json = out;
    return SHMALLOC_OK;
  });
}

void shmalloc_string_free(char* s) { std::free(s); }

shmalloc_status_t shmalloc_block_cache_create(shmalloc_region_t* region,
                                              uint32_t batch,
                                              shmalloc_block_cache_t** cache) {
  if (region == nullptr || cache == nullptr) {
    return NullArgument("region/cache");
  }
  return Guarded([&] {
    sc::BlockCacheOptions o;
    if (batch != 0) {
      o.batch = batch;
      o.thread_capacity = std::max(o.thread_capacity, 4 * batch);
      o.central_capacity = std::max(o.central_capacity, 4 * batch);
    }
    auto c = sc::BlockCache::Create(region->region, o);
    if (!c.ok()) {
      return Fail(c.status());
    }
    *cache = new shmalloc_block_cache{*std::move(c)};
    return SHMALLOC_OK;
  });
}

void shmalloc_block_cache_destroy(shmalloc_block_cache_t* cache) {
  delete cache;
}

shmalloc_status_t shmalloc_block_cache_allocate(shmalloc_block_cache_t* cache,
                                                uint64_t size,
                                                uint64_t* offset) {
  if (cache == nullptr || offset == nullptr) {
    return NullArgument("cache/offset");
  }
  return Guarded([&] {
    auto o = cache->cache->Allocate(size);
    if (!o.ok()) {
      return Fail(o.status());
    }
    *offset = *o;
    return SHMALLOC_OK;
  });
}

shmalloc_status_t shmalloc_block_cache_free(shmalloc_block_cache_t* cache,
                                            uint64_t offset, uint64_t size) {
  if (cache == nullptr) {
    return NullArgument("cache");
  }
  return Guarded([&] { return Fail(cache->cache->Free(offset, size)); });
}

shmalloc_status_t shmalloc_block_cache_flush(shmalloc_block_cache_t* cache) {
  if (cache == nullptr) {
    return NullArgument("cache");
  }
  return Guarded([&] { return Fail(cache->cache->Flush()); });
}

uint64_t shmalloc_block_cache_class_size(const shmalloc_block_cache_t* cache,
                                         uint64_t size) {
  return cache == nullptr ? 0 : cache->cache->ClassSize(size);
}

shmalloc_status_t shmalloc_block_cache_stats(
    const shmalloc_block_cache_t* cache, shmalloc_block_cache_stats_t* stats) {
  if (cache == nullptr || stats == nullptr) {
    return NullArgument("cache/stats");
  }
  const sc::BlockCacheStats s = cache->cache->Stats();
  shmalloc_block_cache_stats_t out = {};
  out.allocate_rpcs = s.allocate_rpcs;
  out.free_rpcs = s.free_rpcs;
  out.blocks_from_daemon = s.blocks_from_daemon;
  out.blocks_to_daemon = s.blocks_to_daemon;
  out.cached_blocks = s.cached_blocks;
  out.rejected_frees = s.rejected_frees;
  *stats = out;
  return SHMALLOC_OK;
}

}  // extern "C"
