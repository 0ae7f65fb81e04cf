{
  "targets": [
    {
      "target_name": "tincan_watchdog",
      "sources": ["native/watchdog.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11"],
      "libraries": ["-lpthread"]
    }
  ]
}
