{
  "targets": [
    {
      "target_name": "vmm_sys_util",
      "sources": [
        "native/addon.cc",
        "native/mmap.cc",
        "native/fd.cc",
        "native/signals.cc",
        "native/poll.cc",
        "native/tap.cc",
        "native/copy.cc",
        "native/iov.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")"
      ],
      "defines": [
        "NAPI_VERSION=9",
        "NAPI_DISABLE_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"
      ],
      "cflags_cc": [
        "-std=gnu++20",
        "-Wall",
        "-Wextra",
        "-Wno-unused-parameter",
        "-Wno-cast-function-type"
      ],
      "ldflags": [
        "-Wl,-z,nodelete"
      ]
    }
  ]
}
