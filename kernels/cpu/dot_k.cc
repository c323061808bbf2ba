// Scalar dot products of Q4_K / Q6_K weight rows with Q8_K activations, as ggml's generic
// ggml_vec_dot_q4_K_q8_K / ggml_vec_dot_q6_K_q8_K compute them.

#include <cstring>

#include "kernels/cpu/fp16.h"
#include "kernels/cpu/internal.h"

namespace loom::kernels::cpu::scalar {
namespace {

// aux32[l] += scale[g] * q8[..] * a[..] over n_groups groups of kQK_K / n_groups values, eight
// lanes at a time with the products rounded to int16 as ggml's generic code does.
template <typename Scale>
void AccumulateScaledGroups(const int8_t* q8, const int8_t* a, const Scale* scales, int n_groups,
                            int32_t aux32[8]) {
  const int chunks = kQK_K / n_groups / 8;
  int16_t aux16[8];
  for (int g = 0; g < n_groups; ++g) {
    const int32_t scale = scales[g];
    for (int c = 0; c < chunks; ++c) {
      for (int l = 0; l < 8; ++l) aux16[l] = static_cast<int16_t>(q8[l] * a[l]);
      for (int l = 0; l < 8; ++l) aux32[l] += scale * aux16[l];
      q8 += 8;
      a += 8;
    }
  }
}

}  // namespace

float DotQ4_KQ8_K(int64_t k, const void* w, const void* x) {
  const auto* bw = static_cast<const BlockQ4_K*>(w);
  const auto* bx = static_cast<const BlockQ8_K*>(x);
  constexpr uint32_t kmask1 = 0x3f3f3f3f;
  constexpr uint32_t kmask2 = 0x0f0f0f0f;
  constexpr uint32_t kmask3 = 0x03030303;
  uint32_t utmp[4];
  const auto* scales = reinterpret_cast<const uint8_t*>(&utmp[0]);
  const auto* mins = reinterpret_cast<const uint8_t*>(&utmp[2]);
  int8_t aux8[kQK_K];
  float sums[8] = {};
  int32_t aux32[8];
  float sumf = 0.0f;
  for (int64_t i = 0; i < k / kQK_K; ++i) {
    const uint8_t* q4 = bw[i].qs;
    const int8_t* q8 = bx[i].qs;
    std::memset(aux32, 0, sizeof(aux32));
    int8_t* a = aux8;
    for (int j = 0; j < kQK_K / 64; ++j) {
      for (int l = 0; l < 32; ++l) a[l] = static_cast<int8_t>(q4[l] & 0xF);
      a += 32;
      for (int l = 0; l < 32; ++l) a[l] = static_cast<int8_t>(q4[l] >> 4);
      a += 32;
      q4 += 32;
    }
    std::memcpy(utmp, bw[i].scales, 12);
    utmp[3] = ((utmp[2] >> 4) & kmask2) | (((utmp[1] >> 6) & kmask3) << 4);
    const uint32_t uaux = utmp[1] & kmask1;
    utmp[1] = (utmp[2] & kmask2) | (((utmp[0] >> 6) & kmask3) << 4);
    utmp[2] = uaux;
    utmp[0] &= kmask1;

    int sumi = 0;
    for (int j = 0; j < kQK_K / 16; ++j) sumi += bx[i].bsums[j] * mins[j / 2];
    AccumulateScaledGroups(q8, aux8, scales, kQK_K / 32, aux32);
    const float d = HalfToFloat(bw[i].d) * bx[i].d;
    for (int l = 0; l < 8; ++l) sums[l] += d * aux32[l];
    const float dmin = HalfToFloat(bw[i].dmin) * bx[i].d;
    sumf -= dmin * sumi;
  }
  for (int l = 0; l < 8; ++l) sumf += sums[l];
  return sumf;
}

float DotQ6_KQ8_K(int64_t k, const void* w, const void* x) {
  const auto* bw = static_cast<const BlockQ6_K*>(w);
  const auto* bx = static_cast<const BlockQ8_K*>(x);
  int8_t aux8[kQK_K];
  float sums[8] = {};
  int32_t aux32[8];
  for (int64_t i = 0; i < k / kQK_K; ++i) {
    const uint8_t* q4 = bw[i].ql;
    const uint8_t* qh = bw[i].qh;
    const int8_t* q8 = bx[i].qs;
    std::memset(aux32, 0, sizeof(aux32));
    int8_t* a = aux8;
    for (int j = 0; j < kQK_K; j += 128) {
      for (int l = 0; l < 32; ++l) {
        a[l + 0] = static_cast<int8_t>((q4[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        a[l + 32] = static_cast<int8_t>((q4[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        a[l + 64] = static_cast<int8_t>((q4[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        a[l + 96] = static_cast<int8_t>((q4[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      }
      a += 128;
      q4 += 64;
      qh += 32;
    }
    AccumulateScaledGroups(q8, aux8, bw[i].scales, kQK_K / 16, aux32);
    const float d = HalfToFloat(bw[i].d) * bx[i].d;
    for (int l = 0; l < 8; ++l) sums[l] += d * aux32[l];
  }
  float sumf = 0.0f;
  for (int l = 0; l < 8; ++l) sumf += sums[l];
  return sumf;
}

}  // namespace loom::kernels::cpu::scalar
