// One helper shared by the addon's parts (native_heap.c, usrsctp_sysctl.c): each adds its functions to
// the addon's exports as one named object.
#ifndef TINCAN_ADDON_OBJECT_H
#define TINCAN_ADDON_OBJECT_H
#include <node_api.h>

// exports[name] = a new object with `props`.
static inline napi_status export_object(napi_env env, napi_value exports, const char *name,
                                        const napi_property_descriptor *props, size_t count) {
  napi_value obj;
  napi_status st = napi_create_object(env, &obj);
  if (st != napi_ok) return st;
  st = napi_define_properties(env, obj, count, props);
  if (st != napi_ok) return st;
  return napi_set_named_property(env, exports, name, obj);
}

#endif
