// tincan_watchdog: a liveness watchdog for a Node.js process's main thread (plain C, N-API 8).
//
// start() makes one detached pthread. The main thread bumps an atomic heartbeat counter with beat() (from a
// JS timer); every `check_every_ms` the thread compares the counter with what it saw last. When it has not
// moved for `timeout_ms`, the thread writes ONE line to fd 2 with write(2) and SIGKILLs the process, so that
// its supervisor restarts it. After start() the thread never calls into V8 or N-API (the main thread may be
// deadlocked, e.g. in a native close), takes no lock, allocates nothing, and has every signal blocked, so
// signals keep going to the main thread. See ../README.md for the JS API.
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <node_api.h>

// A gap between two of the thread's own checks longer than this many check periods means the whole process
// was not running (SIGSTOP, a debugger's stop, a suspended VM): the main thread is not to be blamed for that
// time, so the stall window starts again.
#define PAUSED_CHECKS 3

// Room for `"time":<up to 20 digits>,"stalledS":<up to 20 digits>.<digit>,` between prefix and suffix.
#define NUMBERS_ROOM 80

typedef struct {
  atomic_uint_fast64_t beats;   // bumped by the main thread (beat())
  atomic_bool stopping;         // set by stop(): the thread ends at its next check
  atomic_int refs;              // the thread's and the JS handle's; the last one frees
  uint32_t timeout_ms, check_every_ms;
  char *line;                   // prefix, then room for the numbers and the suffix (allocated at start)
  size_t prefix_len;
  char *suffix;
  size_t suffix_len;
} watchdog_t;

static const napi_type_tag WATCHDOG_TAG = {0x74696e63616e5f77ULL, 0x617463686467ULL};

static void release(watchdog_t *w) {
  if (atomic_fetch_sub(&w->refs, 1) != 1) return;
  free(w->line);
  free(w->suffix);
  free(w);
}

static int64_t now_ns(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ms(uint32_t ms) {
  struct timespec left = {ms / 1000, (long)(ms % 1000) * 1000000};
  while (nanosleep(&left, &left) == -1 && errno == EINTR) {
  }
}

// Appends the decimal digits of v at p; returns the end. No printf: nothing that may lock or allocate.
static char *append_uint(char *p, uint64_t v) {
  char digits[20];
  int n = 0;
  do {
    digits[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n) *p++ = digits[--n];
  return p;
}

static char *append_str(char *p, const char *s) {
  size_t n = strlen(s);
  memcpy(p, s, n);
  return p + n;
}

// Writes the fatal line (prefix, "time" and "stalledS", suffix) to fd 2, then SIGKILLs the process: not
// exit(), since a deadlocked thread can block a normal exit.
static void report_and_kill(watchdog_t *w, int64_t stalled_ms) {
  char *p = w->line + w->prefix_len;
  p = append_str(p, "\"time\":");
  p = append_uint(p, (uint64_t)(now_ns(CLOCK_REALTIME) / 1000000));
  p = append_str(p, ",\"stalledS\":");
  uint64_t tenths = (uint64_t)(stalled_ms / 100);
  p = append_uint(p, tenths / 10);
  *p++ = '.';
  *p++ = (char)('0' + tenths % 10);
  *p++ = ',';
  memcpy(p, w->suffix, w->suffix_len);
  p += w->suffix_len;
  for (const char *q = w->line; q < p;) {
    ssize_t n = write(2, q, (size_t)(p - q));
    if (n > 0) q += n;
    else if (n == -1 && errno == EINTR) continue;
    else break;
  }
  kill(getpid(), SIGKILL);
}

static void *watch(void *arg) {
  watchdog_t *w = arg;
  pthread_setname_np(pthread_self(), "tincan-watchdog");  // its name in /proc/PID/task/*/comm, top -H, gdb
  const int64_t timeout_ns = (int64_t)w->timeout_ms * 1000000;
  const int64_t paused_ns = (int64_t)PAUSED_CHECKS * w->check_every_ms * 1000000;
  uint_fast64_t last_beat = atomic_load(&w->beats);
  int64_t last_beat_at = now_ns(CLOCK_MONOTONIC), last_check = last_beat_at;
  for (;;) {
    sleep_ms(w->check_every_ms);
    if (atomic_load(&w->stopping)) break;
    int64_t now = now_ns(CLOCK_MONOTONIC);
    uint_fast64_t beat = atomic_load(&w->beats);
    bool paused = now - last_check > paused_ns;
    last_check = now;
    if (beat != last_beat || paused) {
      last_beat = beat;
      last_beat_at = now;
      continue;
    }
    if (now - last_beat_at >= timeout_ns) report_and_kill(w, (now - last_beat_at) / 1000000);
  }
  release(w);
  return NULL;
}

#define CHECK(env, call, what)                                                       \
  do {                                                                               \
    if ((call) != napi_ok) {                                                         \
      bool pending_;                                                                 \
      napi_is_exception_pending((env), &pending_);                                   \
      if (!pending_) napi_throw_type_error((env), "ERR_INVALID_ARG_TYPE", (what));   \
      return NULL;                                                                   \
    }                                                                                \
  } while (0)

#define ARGS(n)                                                                      \
  size_t argc = (n);                                                                 \
  napi_value argv[(n) > 0 ? (n) : 1];                                                \
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), "bad arguments"); \
  if (argc < (n)) { napi_throw_type_error(env, NULL, "too few arguments"); return NULL; }

static watchdog_t *get_watchdog(napi_env env, napi_value v) {
  bool ok = false;
  void *p = NULL;
  if (napi_check_object_type_tag(env, v, &WATCHDOG_TAG, &ok) != napi_ok || !ok ||
      napi_get_value_external(env, v, &p) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "not a watchdog handle");
    return NULL;
  }
  return p;
}

// A JS string, UTF-8, in a new malloc'd buffer (NUL-terminated); *len without the NUL.
static char *get_string(napi_env env, napi_value v, size_t *len) {
  if (napi_get_value_string_utf8(env, v, NULL, 0, len) != napi_ok) return NULL;
  char *s = malloc(*len + 1);
  if (s && napi_get_value_string_utf8(env, v, s, *len + 1, len) != napi_ok) {
    free(s);
    return NULL;
  }
  return s;
}

static void finalize_handle(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  release(data);
}

// start(timeoutMs, checkEveryMs, linePrefix, lineSuffix) -> handle. Call it on the main thread.
static napi_value wd_start(napi_env env, napi_callback_info info) {
  ARGS(4);
  uint32_t timeout_ms, check_every_ms;
  CHECK(env, napi_get_value_uint32(env, argv[0], &timeout_ms), "timeoutMs must be a number");
  CHECK(env, napi_get_value_uint32(env, argv[1], &check_every_ms), "checkEveryMs must be a number");
  if (timeout_ms < 1 || check_every_ms < 1 || check_every_ms > timeout_ms) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "need 1 <= checkEveryMs <= timeoutMs");
    return NULL;
  }
  if (syscall(SYS_gettid) != getpid()) {
    napi_throw_error(env, "ERR_INVALID_THREAD", "the watchdog watches the process's main thread: start it there");
    return NULL;
  }
  watchdog_t *w = calloc(1, sizeof *w);
  size_t prefix_len = 0;
  char *prefix = w ? get_string(env, argv[2], &prefix_len) : NULL;
  if (w && prefix) w->suffix = get_string(env, argv[3], &w->suffix_len);
  if (w && prefix && w->suffix) w->line = malloc(prefix_len + NUMBERS_ROOM + w->suffix_len);
  if (!w || !prefix || !w->suffix || !w->line) {
    free(prefix);
    if (w) {
      free(w->suffix);
      free(w);
    }
    bool pending;
    napi_is_exception_pending(env, &pending);
    if (!pending) napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "linePrefix and lineSuffix must be strings");
    return NULL;
  }
  memcpy(w->line, prefix, prefix_len);
  free(prefix);
  w->prefix_len = prefix_len;
  w->timeout_ms = timeout_ms;
  w->check_every_ms = check_every_ms;
  atomic_init(&w->beats, 0);
  atomic_init(&w->stopping, false);
  atomic_init(&w->refs, 2);

  napi_value handle;
  if (napi_create_external(env, w, finalize_handle, NULL, &handle) != napi_ok) {
    free(w->line);
    free(w->suffix);
    free(w);
    return NULL;
  }
  napi_type_tag_object(env, handle, &WATCHDOG_TAG);

  // The new thread inherits the creating thread's signal mask: block everything around pthread_create, so
  // that not even the thread's first instructions can take a signal meant for the main thread.
  sigset_t all, old;
  sigfillset(&all);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, PTHREAD_STACK_MIN > 65536 ? PTHREAD_STACK_MIN : 65536);
  pthread_t thread;
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int err = pthread_create(&thread, &attr, watch, w);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (err) {
    atomic_fetch_sub(&w->refs, 1);  // the thread's; the handle's goes with its finalizer
    napi_throw_error(env, "ERR_WATCHDOG_THREAD", strerror(err));
    return NULL;
  }
  return handle;
}

// beat(handle): the main thread is alive.
static napi_value wd_beat(napi_env env, napi_callback_info info) {
  ARGS(1);
  watchdog_t *w = get_watchdog(env, argv[0]);
  if (w) atomic_fetch_add_explicit(&w->beats, 1, memory_order_relaxed);
  return NULL;
}

// stop(handle): the thread ends at its next check (within checkEveryMs) without looking again. Idempotent.
static napi_value wd_stop(napi_env env, napi_callback_info info) {
  ARGS(1);
  watchdog_t *w = get_watchdog(env, argv[0]);
  if (w) atomic_store(&w->stopping, true);
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"start", NULL, wd_start, NULL, NULL, NULL, napi_enumerable, NULL},
      {"beat", NULL, wd_beat, NULL, NULL, NULL, napi_enumerable, NULL},
      {"stop", NULL, wd_stop, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
