// The shmalloc.v1.Allocator gRPC service, on gRPC's callback API: unary RPCs
// answer inline on gRPC's callback threads (each is short: a lock, some
// bookkeeping, no I/O except CreateRegion/DeleteRegion's file work), and
// the two server streams are reactors (session_reactor.h, watch_reactor.h)
// that hold no thread while idle.
//
// Every RPC is counted in Core::metrics with its final status code; every
// absl::Status becomes a grpc::Status in grpc_status.h only.
//
// Thread-safety: thread-safe (all state is in Core).
#ifndef SERVER_SERVICE_H_
#define SERVER_SERVICE_H_

#include <google/protobuf/arena.h>
#include <grpcpp/support/message_allocator.h>

#include <string_view>

#include "absl/status/status.h"
#include "server/core.h"
#include "shmalloc/v1/shmalloc.grpc.pb.h"

namespace shmalloc::server {

// gRPC's MessageAllocator for one method: each call's request and response
// live on a protobuf Arena of their own, so a batch of 1,000 extents (1,000
// Extent messages unless the client asked for the packed answer) is a few
// arena blocks instead of 1,000 heap allocations and frees.
// Thread-safety: thread-safe (no state).
template <typename Request, typename Response>
class ArenaMessages final : public grpc::MessageAllocator<Request, Response> {
 public:
  grpc::MessageHolder<Request, Response>* AllocateMessages() override {
    return new Holder();
  }

 private:
  class Holder final : public grpc::MessageHolder<Request, Response> {
   public:
    Holder() : arena_(Options(first_block_, sizeof(first_block_))) {
      this->set_request(
          google::protobuf::Arena::CreateMessage<Request>(&arena_));
      this->set_response(
          google::protobuf::Arena::CreateMessage<Response>(&arena_));
    }
    void Release() override { delete this; }

   private:
    static google::protobuf::ArenaOptions Options(char* block, size_t size) {
      google::protobuf::ArenaOptions options;
      options.initial_block = block;
      options.initial_block_size = size;
      return options;
    }
    // A unary call's messages fit here: one allocation per call (this
    // holder); a batch's extents grow the arena.
    alignas(8) char first_block_[1024];
    google::protobuf::Arena arena_;
  };
};

class AllocatorService final : public v1::Allocator::CallbackService {
 public:
  explicit AllocatorService(Core& core) : core_(core) {
    SetMessageAllocatorFor_Allocate(&allocate_messages_);
    SetMessageAllocatorFor_Free(&free_messages_);
  }

  grpc::ServerUnaryReactor* CreateRegion(grpc::CallbackServerContext* context,
                                         const v1::CreateRegionRequest* request,
                                         v1::Region* response) override;
  grpc::ServerUnaryReactor* GetRegion(grpc::CallbackServerContext* context,
                                      const v1::GetRegionRequest* request,
                                      v1::Region* response) override;
  grpc::ServerUnaryReactor* ListRegions(
      grpc::CallbackServerContext* context,
      const v1::ListRegionsRequest* request,
      v1::ListRegionsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteRegion(
      grpc::CallbackServerContext* context,
      const v1::DeleteRegionRequest* request,
      v1::DeleteRegionResponse* response) override;
  grpc::ServerWriteReactor<v1::SessionEvent>* OpenSession(
      grpc::CallbackServerContext* context,
      const v1::OpenSessionRequest* request) override;
  grpc::ServerUnaryReactor* Allocate(grpc::CallbackServerContext* context,
                                     const v1::AllocateRequest* request,
                                     v1::AllocateResponse* response) override;
  grpc::ServerUnaryReactor* Free(grpc::CallbackServerContext* context,
                                 const v1::FreeRequest* request,
                                 v1::FreeResponse* response) override;
  grpc::ServerUnaryReactor* AdoptAllocations(
      grpc::CallbackServerContext* context, const v1::AdoptRequest* request,
      v1::AdoptResponse* response) override;
  grpc::ServerUnaryReactor* ResetRegion(grpc::CallbackServerContext* context,
                                        const v1::ResetRegionRequest* request,
                                        v1::Region* response) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* context,
                                     const v1::GetStatsRequest* request,
                                     v1::Stats* response) override;
  grpc::ServerWriteReactor<v1::Stats>* WatchStats(
      grpc::CallbackServerContext* context,
      const v1::WatchStatsRequest* request) override;
  // The leak report and the fragmentation map (server/map_service.h).
  grpc::ServerUnaryReactor* ListAllocations(
      grpc::CallbackServerContext* context,
      const v1::ListAllocationsRequest* request,
      v1::ListAllocationsResponse* response) override;
  grpc::ServerUnaryReactor* GetRegionMap(grpc::CallbackServerContext* context,
                                         const v1::GetRegionMapRequest* request,
                                         v1::RegionMap* response) override;

 private:
  // Runs `body` unless shutdown has begun (then UNAVAILABLE), records the
  // status for `method` and finishes the call with it.
  template <typename Body>
  grpc::ServerUnaryReactor* Serve(grpc::CallbackServerContext* context,
                                  std::string_view method, Body&& body);

  absl::Status DoCreateRegion(const v1::CreateRegionRequest& request,
                              v1::Region& response);
  absl::Status DoResetRegion(const v1::ResetRegionRequest& request,
                             v1::Region& response);
  absl::Status DoAllocate(const v1::AllocateRequest& request,
                          v1::AllocateResponse& response);
  absl::Status DoFree(const v1::FreeRequest& request,
                      v1::FreeResponse& response);
  absl::Status DoAdopt(const v1::AdoptRequest& request);
  // Returns OK when `session_id` is a session (open or orphaned) and
  // `session_token` is its token; NOT_FOUND for no such session,
  // PERMISSION_DENIED for a missing or wrong token.
  absl::Status CheckSession(uint64_t session_id,
                            std::string_view session_token) const;

  Core& core_;
  ArenaMessages<v1::AllocateRequest, v1::AllocateResponse> allocate_messages_;
  ArenaMessages<v1::FreeRequest, v1::FreeResponse> free_messages_;
};

}  // namespace shmalloc::server

#endif  // SERVER_SERVICE_H_
