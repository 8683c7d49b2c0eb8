{
  "targets": [
    {
      "target_name": "kvm_ioctls",
      "sources": ["native/kvm_ioctls.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_DISABLE_CPP_EXCEPTIONS", "NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags_cc": ["-std=gnu++20", "-O2", "-Wall", "-Wextra"]
    }
  ]
}
