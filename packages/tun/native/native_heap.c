// The process's C heap (glibc malloc), for the datapath's memory: cap the number of malloc arenas, give
// freed pages back to the kernel, read the allocator's totals. Plain C, N-API 8, part of tincan_tun.node
// (our addon that every datapath loads). See ../README.md, "Native heap".
//
// glibc gives each thread that calls malloc an arena of its own, up to 8 per core; every arena keeps its
// own free memory. Where the C library is not glibc (musl), none of this exists: `supported` is false,
// limitArenas and trim do nothing and return false, and stats returns null.
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <node_api.h>

#include "addon_object.h"
#include "native_heap.h"

#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
#define HAVE_GLIBC_MALLOC 1
#else
#define HAVE_GLIBC_MALLOC 0
#endif

static napi_value make_bool(napi_env env, bool b) {
  napi_value v;
  napi_get_boolean(env, b, &v);
  return v;
}

static void set_number(napi_env env, napi_value obj, const char *name, double x) {
  napi_value v;
  napi_create_double(env, x, &v);
  napi_set_named_property(env, obj, name, v);
}

// limitArenas(n) -> true when glibc took the limit (mallopt(M_ARENA_MAX, n), 1 <= n <= 64). Threads that
// first call malloc after this share the arenas that exist, round robin, once there are n of them. glibc
// fixes its own default limit (8 per core) when the 9th arena is made, so this must run before that:
// early in the process, before a library starts its threads.
static napi_value heap_limit_arenas(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t n = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &n) != napi_ok || n < 1 || n > 64) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "limitArenas takes a whole number of arenas, 1..64");
    return NULL;
  }
#if HAVE_GLIBC_MALLOC
  return make_bool(env, mallopt(M_ARENA_MAX, n) == 1);
#else
  return make_bool(env, false);
#endif
}

// trim() -> malloc_trim(0)'s answer (1 when it madvised any page, also one given back before): malloc_trim(0) returns the free pages of every arena (not only
// the top of the heap) to the kernel with madvise(MADV_DONTNEED). Takes each arena's lock in turn.
static napi_value heap_trim(napi_env env, napi_callback_info info) {
  (void)info;
#if HAVE_GLIBC_MALLOC
  return make_bool(env, malloc_trim(0) == 1);
#else
  return make_bool(env, false);
#endif
}

// trimInBackground() -> Promise<boolean>: the same malloc_trim(0) on a thread of libuv's pool, so that the
// main thread does not wait for the madvise calls (~10 ms for 12 MB of free pages); a thread that allocates
// meanwhile from the arena being trimmed waits for its lock. Resolves false without glibc or when the work
// was cancelled (the environment going away).
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int result;
} trim_job_t;

static void trim_execute(napi_env env, void *data) {
  (void)env;
  trim_job_t *job = data;
#if HAVE_GLIBC_MALLOC
  job->result = malloc_trim(0);
#else
  job->result = 0;
#endif
}

static void trim_complete(napi_env env, napi_status status, void *data) {
  trim_job_t *job = data;
  napi_resolve_deferred(env, job->deferred, make_bool(env, status == napi_ok && job->result == 1));
  napi_delete_async_work(env, job->work);
  free(job);
}

static napi_value heap_trim_in_background(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value promise, name;
  trim_job_t *job = calloc(1, sizeof *job);
  if (!job) {
    napi_throw_error(env, "ENOMEM", "trimInBackground: out of memory");
    return NULL;
  }
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok) {
    free(job);
    return NULL;
  }
  napi_create_string_utf8(env, "tincan:malloc_trim", NAPI_AUTO_LENGTH, &name);
  if (napi_create_async_work(env, NULL, name, trim_execute, trim_complete, job, &job->work) != napi_ok ||
      napi_queue_async_work(env, job->work) != napi_ok) {
    napi_reject_deferred(env, job->deferred, name);  // settles the promise; the caller sees a rejection
    if (job->work) napi_delete_async_work(env, job->work);
    free(job);
  }
  return promise;
}

// stats() -> { heapBytes, mmappedBytes, inUseBytes, freeBytes, topReleasableBytes } from mallinfo2(), over
// all arenas; null without glibc. heapBytes: taken from the kernel by sbrk or arena heaps (not counting
// mmapped blocks); inUseBytes: allocated, mmapped blocks included; freeBytes: free inside the heaps.
static napi_value heap_stats(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
#if HAVE_GLIBC_MALLOC
  struct mallinfo2 mi = mallinfo2();
  napi_create_object(env, &out);
  set_number(env, out, "heapBytes", (double)mi.arena);
  set_number(env, out, "mmappedBytes", (double)mi.hblkhd);
  set_number(env, out, "inUseBytes", (double)(mi.uordblks + mi.hblkhd));
  set_number(env, out, "freeBytes", (double)mi.fordblks);
  set_number(env, out, "topReleasableBytes", (double)mi.keepcost);
#else
  napi_get_null(env, &out);
#endif
  return out;
}

napi_status native_heap_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"supported", NULL, NULL, NULL, NULL, make_bool(env, HAVE_GLIBC_MALLOC), napi_enumerable, NULL},
      {"limitArenas", NULL, heap_limit_arenas, NULL, NULL, NULL, napi_enumerable, NULL},
      {"trim", NULL, heap_trim, NULL, NULL, NULL, napi_enumerable, NULL},
      {"trimInBackground", NULL, heap_trim_in_background, NULL, NULL, NULL, napi_enumerable, NULL},
      {"stats", NULL, heap_stats, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return export_object(env, exports, "nativeHeap", props, sizeof props / sizeof props[0]);
}
