# The native addon (Linux only): built into build/Release/virtio_ts_native.node
# by node-gyp on `npm install` / `npm ci` (see "install" in package.json).
{
  "targets": [
    {
      "target_name": "virtio_ts_native",
      "sources": [
        "native/addon.cc",
        "native/files.cc",
        "native/io.cc",
        "native/memory.cc",
        "native/sigbus.cc",
        "native/sockets.cc",
        "native/uring.cc",
        "native/watch.cc"
      ],
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"
      ],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
