// tincan_tun: a Linux TUN device for Node.js (plain C, N-API 8).
//
// One device = one non-blocking, close-on-exec fd from /dev/net/tun plus a uv_poll watcher. When the fd is
// readable the watcher drains up to `batch` packets with read() into slots of ONE buffer that JS allocated
// once (slot i starts at i*stride, the packet at i*stride + headroom), stores their lengths in a Uint32Array,
// and calls the JS callback once per batch with the packet count. Writes are synchronous and non-blocking:
// one write() per packet, a whole batch per native call. See ../README.md for the JS API.
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>
#include <node_api.h>
#include <uv.h>

#include "native_heap.h"
#include "usrsctp_sysctl.h"

typedef struct {
  napi_env env;
  int fd;
  uv_poll_t poll;
  uint8_t *base;                        // the JS slot buffer (kept alive by buf_ref)
  uint32_t *lens;                       // the JS Uint32Array of lengths (kept alive by lens_ref)
  uint32_t batch, headroom, slot, stride;
  napi_ref buf_ref, lens_ref, on_packets, on_error, resource;
  napi_async_context actx;
  int in_callback;                      // > 0 while JS runs from on_readable (close() must not free actx)
  bool reading, closed, uv_closed, finalized;
  bool vnet;                            // IFF_VNET_HDR: a virtio_net_hdr precedes every packet
} tun_t;

// sizeof(struct virtio_net_hdr) (the TUN default, TUNSETVNETHDRSZ not used); a zero one = a plain packet.
#define VNET_HDR_LEN 10
static const uint8_t ZERO_VNET_HDR[VNET_HDR_LEN];

static const napi_type_tag TUN_TAG = {0x74696e63616e5f74ULL, 0x756e5f6465766963ULL};

// "EBUSY" for EBUSY; glibc knows every errno name (libuv lacks some, e.g. EBADFD).
static const char *errname(int err) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 32)
  const char *name = strerrorname_np(err);
  if (name) return name;
#endif
  return uv_err_name(-err);
}

// Builds an Error like Node's system errors: .code 'EBUSY', .errno -16, .syscall 'ioctl(TUNSETIFF)'.
static napi_value make_error(napi_env env, int err, const char *syscall, const char *msg) {
  char text[320];
  napi_value code, message, error, v;
  snprintf(text, sizeof text, "%s (%s, %s)", msg ? msg : strerror(err), errname(err), syscall);
  napi_create_string_utf8(env, errname(err), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, -err, &v);
  napi_set_named_property(env, error, "errno", v);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, error, "syscall", v);
  return error;
}

static napi_value throw_errno(napi_env env, int err, const char *syscall, const char *msg) {
  napi_throw(env, make_error(env, err, syscall, msg));
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

static tun_t *get_tun(napi_env env, napi_value v) {
  bool ok = false;
  void *p = NULL;
  if (napi_check_object_type_tag(env, v, &TUN_TAG, &ok) != napi_ok || !ok ||
      napi_get_value_external(env, v, &p) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "not a TUN handle");
    return NULL;
  }
  return p;
}

static void on_uv_closed(uv_handle_t *h) {
  tun_t *t = h->data;
  t->uv_closed = true;
  if (t->finalized) free(t);
}

// Stops the watcher and closes the fd. With `release`, also drops the JS references (not done from the
// finalizer, which may run during environment teardown).
static void do_close(tun_t *t, bool release) {
  if (t->closed) return;
  t->closed = true;
  t->reading = false;
  uv_poll_stop(&t->poll);
  uv_close((uv_handle_t *)&t->poll, on_uv_closed);
  close(t->fd);
  t->fd = -1;
  if (!release) return;
  if (t->actx && !t->in_callback) napi_async_destroy(t->env, t->actx);  // else on_readable does it
  if (!t->in_callback) t->actx = NULL;
  napi_ref *refs[] = {&t->buf_ref, &t->lens_ref, &t->on_packets, &t->on_error, &t->resource};
  for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) {
    if (*refs[i]) napi_delete_reference(t->env, *refs[i]);
    *refs[i] = NULL;
  }
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)env, (void)hint;
  tun_t *t = data;
  do_close(t, false);
  t->finalized = true;
  if (t->uv_closed) free(t);
}

// Calls a JS callback from the event loop (outside any JS frame), with async context, microtask draining
// and uncaught-exception reporting like a Node core callback.
static void call_js(tun_t *t, napi_ref fn_ref, napi_value arg) {
  napi_env env = t->env;
  napi_value fn, global, result, exc;
  if (!fn_ref || napi_get_reference_value(env, fn_ref, &fn) != napi_ok || !fn) return;
  napi_get_global(env, &global);
  t->in_callback++;
  napi_status st = napi_make_callback(env, t->actx, global, fn, 1, &arg, &result);
  t->in_callback--;
  if (st == napi_pending_exception && napi_get_and_clear_last_exception(env, &exc) == napi_ok)
    napi_fatal_exception(env, exc);
  if (t->closed && t->actx && !t->in_callback) {  // closed from inside the callback
    napi_async_destroy(env, t->actx);
    t->actx = NULL;
  }
}

static void on_readable(uv_poll_t *h, int status, int events) {
  (void)events;
  tun_t *t = h->data;
  if (t->closed || !t->reading) return;
  uint32_t n = 0;
  int err = 0;
  while (n < t->batch) {  // also on a poll error: read() tells what is wrong (EBADFD: device deleted)
    // With a vnet header, it lands in the last VNET_HDR_LEN bytes of the headroom, the packet where it
    // always is (slot start + headroom), and lens[] holds the IP packet's length.
    uint32_t shift = t->vnet ? VNET_HDR_LEN : 0;
    ssize_t r = read(t->fd, t->base + (size_t)n * t->stride + t->headroom - shift, t->slot + shift);
    if (r > (ssize_t)shift) {
      t->lens[n++] = (uint32_t)r - shift;
    } else if (r > 0) {
      continue;  // a vnet header without a packet: nothing to deliver
    } else if (r < 0 && errno == EINTR) {
      continue;
    } else {
      if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) err = errno;
      break;
    }
  }
  const char *syscall = "read";
  // libuv turns EPOLLERR into UV_EBADF without reading. A TUN fd polls EPOLLERR only when its device is
  // detached or no longer registered (tun_chr_poll), and during `ip link del` that starts before the read
  // side sees the detach (read still says EAGAIN): it is the same event as read's EBADFD, reported as such.
  if (!err && n == 0 && status < 0) err = EBADFD, syscall = "poll";
  napi_handle_scope scope;
  if (napi_open_handle_scope(t->env, &scope) != napi_ok) return;
  if (n > 0) {
    napi_value count;
    napi_create_uint32(t->env, n, &count);
    call_js(t, t->on_packets, count);  // may close or pause the device
  }
  if (err && !t->closed) {
    t->reading = false;
    uv_poll_stop(&t->poll);
    call_js(t, t->on_error, make_error(t->env, err, syscall, err == EBADFD ? "TUN device was deleted" : NULL));
  }
  napi_close_handle_scope(t->env, scope);
}

// open(name: string | null, multiQueue: boolean, buffer: Buffer, lengths: Uint32Array, batch, headroom,
//      slot, stride, onPackets(count), onError(err), offload: boolean) -> { handle, name }
// offload: IFF_VNET_HDR and TUNSETOFFLOAD(CSUM | TSO4 | TSO6); needs headroom >= VNET_HDR_LEN.
static napi_value tun_open(napi_env env, napi_callback_info info) {
  ARGS(11);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  napi_valuetype type;
  napi_typeof(env, argv[0], &type);
  bool named = type == napi_string;
  if (named) {
    size_t len;
    CHECK(env, napi_get_value_string_utf8(env, argv[0], NULL, 0, &len), "name");
    if (len == 0 || len >= IFNAMSIZ) return throw_errno(env, EINVAL, "open", "invalid interface name");
    napi_get_value_string_utf8(env, argv[0], ifr.ifr_name, IFNAMSIZ, &len);
  }
  bool mq, offload;
  uint32_t batch, headroom, slot, stride;
  void *base, *lens;
  size_t buf_len, lens_count;
  napi_typedarray_type ta_type;
  CHECK(env, napi_get_value_bool(env, argv[1], &mq), "multiQueue must be a boolean");
  CHECK(env, napi_get_buffer_info(env, argv[2], &base, &buf_len), "buffer must be a Buffer");
  CHECK(env, napi_get_typedarray_info(env, argv[3], &ta_type, &lens_count, &lens, NULL, NULL),
        "lengths must be a Uint32Array");
  CHECK(env, napi_get_value_uint32(env, argv[4], &batch), "batch");
  CHECK(env, napi_get_value_uint32(env, argv[5], &headroom), "headroom");
  CHECK(env, napi_get_value_uint32(env, argv[6], &slot), "slot");
  CHECK(env, napi_get_value_uint32(env, argv[7], &stride), "stride");
  CHECK(env, napi_get_value_bool(env, argv[10], &offload), "offload must be a boolean");
  if (offload && headroom < VNET_HDR_LEN) return throw_errno(env, EINVAL, "open", "offload needs headroom >= 10");
  if (ta_type != napi_uint32_array || lens_count < batch || batch == 0 || slot == 0 ||
      (uint64_t)headroom + slot > stride || (uint64_t)batch * stride > buf_len)
    return throw_errno(env, EINVAL, "open", "inconsistent buffer layout");

  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    const char *msg = e == ENOENT ? "/dev/net/tun does not exist (no TUN support in this kernel or container; "
                                    "modprobe tun)"
                      : e == EACCES || e == EPERM ? "cannot open /dev/net/tun: needs root or CAP_NET_ADMIN"
                                                  : NULL;
    return throw_errno(env, e, "open", msg);
  }
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (mq ? IFF_MULTI_QUEUE : 0) | (offload ? IFF_VNET_HDR : 0);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    char msg[160];
    close(fd);
    if (e == EPERM) return throw_errno(env, e, "ioctl(TUNSETIFF)", "creating a TUN device needs root or CAP_NET_ADMIN");
    if (e == EBUSY || (e == EINVAL && named && if_nametoindex(ifr.ifr_name) != 0)) {
      snprintf(msg, sizeof msg, "interface '%s' is in use (busy single-queue TUN, or not a TUN device with "
               "multiQueue=%s offload=%s)", ifr.ifr_name, mq ? "true" : "false", offload ? "true" : "false");
      return throw_errno(env, EBUSY, "ioctl(TUNSETIFF)", msg);
    }
    return throw_errno(env, e, "ioctl(TUNSETIFF)", NULL);
  }
  if (offload && ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, e, "ioctl(TUNSETOFFLOAD)", NULL);
  }

  tun_t *t = calloc(1, sizeof *t);
  if (!t) { close(fd); return throw_errno(env, ENOMEM, "open", NULL); }
  t->env = env, t->fd = fd, t->base = base, t->lens = lens, t->batch = batch;
  t->headroom = headroom, t->slot = slot, t->stride = stride, t->poll.data = t, t->vnet = offload;
  uv_loop_t *loop;
  int e = napi_get_uv_event_loop(env, &loop) == napi_ok ? uv_poll_init(loop, &t->poll, fd) : -EINVAL;
  if (e < 0) { close(fd); free(t); return throw_errno(env, -e, "uv_poll_init", NULL); }
  napi_value handle, result, name, resource_name;
  napi_create_string_utf8(env, "TunDevice", NAPI_AUTO_LENGTH, &resource_name);
  if (napi_create_external(env, t, finalize, NULL, &handle) != napi_ok) {
    t->finalized = true;  // free once the (never started) watcher is closed
    do_close(t, true);
    return NULL;
  }
  napi_type_tag_object(env, handle, &TUN_TAG);
  napi_create_reference(env, argv[2], 1, &t->buf_ref);
  napi_create_reference(env, argv[3], 1, &t->lens_ref);
  napi_create_reference(env, argv[8], 1, &t->on_packets);
  napi_create_reference(env, argv[9], 1, &t->on_error);
  // The async resource must be an ordinary (extensible) object, and napi_async_init holds it only weakly:
  // keep it alive ourselves, or AsyncLocalStorage loses the context after a GC.
  napi_value resource;
  napi_create_object(env, &resource);
  napi_create_reference(env, resource, 1, &t->resource);
  napi_async_init(env, resource, resource_name, &t->actx);
  napi_create_string_utf8(env, ifr.ifr_name, NAPI_AUTO_LENGTH, &name);
  napi_create_object(env, &result);
  napi_set_named_property(env, result, "handle", handle);
  napi_set_named_property(env, result, "name", name);
  return result;
}

// resume(handle) / pause(handle): start or stop the readability watcher. A paused device does not keep the
// event loop alive.
static napi_value tun_resume(napi_env env, napi_callback_info info) {
  ARGS(1);
  tun_t *t = get_tun(env, argv[0]);
  if (!t) return NULL;
  if (t->closed) return throw_errno(env, EBADF, "resume", "device is closed");
  if (!t->reading) {
    int e = uv_poll_start(&t->poll, UV_READABLE, on_readable);
    if (e < 0) return throw_errno(env, -e, "uv_poll_start", NULL);
    t->reading = true;
  }
  return NULL;
}

static napi_value tun_pause(napi_env env, napi_callback_info info) {
  ARGS(1);
  tun_t *t = get_tun(env, argv[0]);
  if (t && !t->closed && t->reading) {
    uv_poll_stop(&t->poll);
    t->reading = false;
  }
  return NULL;
}

// close(handle): idempotent; safe from inside the packets callback.
static napi_value tun_close(napi_env env, napi_callback_info info) {
  ARGS(1);
  tun_t *t = get_tun(env, argv[0]);
  if (t) do_close(t, true);
  return NULL;
}

// One non-blocking write: 1 written, 0 dropped (queue full, no memory, packet rejected), -errno fatal.
// On a vnet device a plain packet (`raw` false) goes behind a zero virtio_net_hdr (writev, no copy);
// a raw one is [virtio_net_hdr][packet] already.
static int write_one(const tun_t *t, const uint8_t *p, size_t len, bool raw) {
  struct iovec iov[2] = {{(void *)ZERO_VNET_HDR, VNET_HDR_LEN}, {(void *)p, len}};
  bool prefix = t->vnet && !raw;
  for (;;) {
    if ((prefix ? writev(t->fd, iov, 2) : write(t->fd, p, len)) >= 0) return 1;
    switch (errno) {
      case EINTR: continue;
      case EAGAIN: case ENOBUFS: case ENOMEM: case EINVAL: case EMSGSIZE: case EIO: return 0;
      default: return -errno;
    }
  }
}

static tun_t *writable(napi_env env, napi_value v) {
  tun_t *t = get_tun(env, v);
  if (t && t->closed) {
    throw_errno(env, EBADF, "write", "device is closed");
    return NULL;
  }
  return t;
}

static napi_value make_uint32(napi_env env, uint32_t n) {
  napi_value v;
  napi_create_uint32(env, n, &v);
  return v;
}

// write(handle, buffer, offset, length, raw) -> boolean (false = dropped). raw: [vnet header][packet].
static napi_value tun_write(napi_env env, napi_callback_info info) {
  ARGS(5);
  tun_t *t = writable(env, argv[0]);
  if (!t) return NULL;
  void *data;
  size_t size;
  uint32_t off, len;
  CHECK(env, napi_get_buffer_info(env, argv[1], &data, &size), "buffer must be a Buffer or Uint8Array");
  CHECK(env, napi_get_value_uint32(env, argv[2], &off), "offset");
  CHECK(env, napi_get_value_uint32(env, argv[3], &len), "length");
  bool raw;
  CHECK(env, napi_get_value_bool(env, argv[4], &raw), "raw must be a boolean");
  if ((uint64_t)off + len > size) return throw_errno(env, ERANGE, "write", "offset/length out of range");
  if (raw && !t->vnet) return throw_errno(env, EINVAL, "write", "a raw write needs a device opened with offload");
  int r = write_one(t, (uint8_t *)data + off, len, raw);
  if (r < 0) return throw_errno(env, -r, "write", NULL);
  napi_value v;
  napi_get_boolean(env, r == 1, &v);
  return v;
}

// writeBatch(handle, buffers: Buffer[], count) -> number written
static napi_value tun_write_batch(napi_env env, napi_callback_info info) {
  ARGS(3);
  tun_t *t = writable(env, argv[0]);
  if (!t) return NULL;
  uint32_t count, written = 0, n;
  CHECK(env, napi_get_array_length(env, argv[1], &n), "buffers must be an array");
  CHECK(env, napi_get_value_uint32(env, argv[2], &count), "count");
  if (count > n) return throw_errno(env, ERANGE, "writeBatch", "count exceeds buffers.length");
  for (uint32_t i = 0; i < count; i++) {
    napi_value el;
    void *data;
    size_t size;
    CHECK(env, napi_get_element(env, argv[1], i, &el), "buffers");
    CHECK(env, napi_get_buffer_info(env, el, &data, &size), "buffers must hold Buffers");
    int r = write_one(t, data, size, false);
    if (r < 0) return throw_errno(env, -r, "write", NULL);
    written += (uint32_t)r;
  }
  return make_uint32(env, written);
}

// writePackets(handle, buffer, offsets: Uint32Array, lengths: Uint32Array, count) -> number written.
// Writes packets straight out of one buffer (e.g. the read slots, after editing them in place).
static napi_value tun_write_packets(napi_env env, napi_callback_info info) {
  ARGS(5);
  tun_t *t = writable(env, argv[0]);
  if (!t) return NULL;
  void *data, *offs, *lens;
  size_t size, n_offs, n_lens;
  napi_typedarray_type ot, lt;
  uint32_t count, written = 0;
  CHECK(env, napi_get_buffer_info(env, argv[1], &data, &size), "buffer must be a Buffer or Uint8Array");
  CHECK(env, napi_get_typedarray_info(env, argv[2], &ot, &n_offs, &offs, NULL, NULL), "offsets");
  CHECK(env, napi_get_typedarray_info(env, argv[3], &lt, &n_lens, &lens, NULL, NULL), "lengths");
  CHECK(env, napi_get_value_uint32(env, argv[4], &count), "count");
  if (ot != napi_uint32_array || lt != napi_uint32_array)
    return throw_errno(env, EINVAL, "writePackets", "offsets and lengths must be Uint32Arrays");
  if (count > n_offs || count > n_lens)
    return throw_errno(env, ERANGE, "writePackets", "count exceeds offsets/lengths");
  for (uint32_t i = 0; i < count; i++) {
    uint32_t off = ((uint32_t *)offs)[i], len = ((uint32_t *)lens)[i];
    if ((uint64_t)off + len > size) return throw_errno(env, ERANGE, "writePackets", "packet out of range");
    int r = write_one(t, (uint8_t *)data + off, len, false);
    if (r < 0) return throw_errno(env, -r, "write", NULL);
    written += (uint32_t)r;
  }
  return make_uint32(env, written);
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"open", NULL, tun_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"resume", NULL, tun_resume, NULL, NULL, NULL, napi_enumerable, NULL},
      {"pause", NULL, tun_pause, NULL, NULL, NULL, napi_enumerable, NULL},
      {"close", NULL, tun_close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"write", NULL, tun_write, NULL, NULL, NULL, napi_enumerable, NULL},
      {"writeBatch", NULL, tun_write_batch, NULL, NULL, NULL, napi_enumerable, NULL},
      {"writePackets", NULL, tun_write_packets, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  native_heap_init(env, exports);
  usrsctp_sysctl_init(env, exports);
  return exports;
}
