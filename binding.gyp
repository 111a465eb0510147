{
  "targets": [
    {
      "target_name": "vitsae_native",
      "sources": ["src/sae/native/addon.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "<!@(node src/sae/native/blas-flags.mjs include)"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "<!@(node src/sae/native/blas-flags.mjs defines)"],
      "libraries": ["<!@(node src/sae/native/blas-flags.mjs libs)"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-O2"],
      "cflags_cc": ["-O3", "-fno-math-errno", "-fopenmp", "-std=c++17", "-fexceptions"],
      "ldflags": ["-fopenmp"],
      "conditions": [
        ["OS=='mac'", {
          "xcode_settings": {
            "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
            "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
            "MACOSX_DEPLOYMENT_TARGET": "11.0",
            "OTHER_CPLUSPLUSFLAGS": ["-O3", "-fno-math-errno", "-Xpreprocessor", "-fopenmp"]
          }
        }]
      ]
    }
  ]
}
