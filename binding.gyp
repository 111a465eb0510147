{
  "targets": [
    {
      "target_name": "vitsae_native",
      "sources": ["src/sae/native/addon.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "/usr/include/x86_64-linux-gnu/openblas-pthread"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-O2"],
      "cflags_cc": ["-O3", "-march=x86-64-v3", "-fopenmp", "-std=c++17", "-fexceptions"],
      "libraries": ["-lopenblas", "-fopenmp"]
    }
  ]
}
