// Compile-check stub: the CPU torch wheel ships the c10/cuda headers but not this file, which a CUDA build of torch
// generates at configure time. The CUDA wheel's copy defines exactly this macro (shared-library build of c10_cuda).
// Used only by scripts/compile_check_csrc.sh; the JIT build on a GPU machine uses the real header.
#pragma once
#define C10_CUDA_BUILD_SHARED_LIBS
