// <immintrin.h> for the AVX-512 kernel files (*_avx512.cc), without GCC 12's false
// -Wmaybe-uninitialized from its own AVX-512 headers (_mm512_undefined_*; GCC bug 105593, fixed
// in 13). Include it first in those files:
//
//   #include "kernels/cpu/avx512_intrin.h"
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
