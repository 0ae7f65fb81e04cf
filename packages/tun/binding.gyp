{
  "targets": [
    {
      "target_name": "tincan_tun",
      "sources": ["native/tun.c", "native/native_heap.c", "native/usrsctp_sysctl.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11"]
    }
  ]
}
