// The nativeHeap object of tincan_tun.node (native_heap.c): glibc malloc's arena limit, trim and totals.
#ifndef TINCAN_NATIVE_HEAP_H
#define TINCAN_NATIVE_HEAP_H
#include <node_api.h>

// Adds `nativeHeap` ({ supported, limitArenas, trim, stats }) to the addon's exports.
napi_status native_heap_init(napi_env env, napi_value exports);

#endif
