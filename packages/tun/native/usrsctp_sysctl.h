// The usrsctpSysctl object of tincan_tun.node (usrsctp_sysctl.c): usrsctp settings inside node-datachannel.
#ifndef TINCAN_USRSCTP_SYSCTL_H
#define TINCAN_USRSCTP_SYSCTL_H
#include <node_api.h>

// Adds `usrsctpSysctl` ({ get, set }) to the addon's exports.
napi_status usrsctp_sysctl_init(napi_env env, napi_value exports);

#endif
