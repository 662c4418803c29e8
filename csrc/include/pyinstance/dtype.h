// Element types crossing the Python boundary, and float16/bfloat16 <-> float32
// conversions usable on host and device (bit-exact with torch's conversions).
#pragma once
#include <cstdint>
#include <cstring>

#include "pyinstance/checks.h"
#include "pyinstance/macros.h"

namespace pyinstance {

// Codes passed from Python (pyinstance/ops/_arrays.py keeps the same table).
enum class DType : int { Float32 = 0, Float16 = 1, BFloat16 = 2, Float64 = 3, Int64 = 4 };

PYI_HD float bits_to_float(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
#endif
}

PYI_HD uint32_t float_to_bits(float value) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(value);
#else
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
#endif
}

// bfloat16 is the upper half of a float32.
PYI_HD float bf16_to_float(uint16_t bits) {
  return bits_to_float(static_cast<uint32_t>(bits) << 16);
}

// Round to nearest even; NaN stays NaN.
PYI_HD uint16_t float_to_bf16(float value) {
  uint32_t bits = float_to_bits(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

// IEEE binary16 -> binary32, subnormals, infinities and NaN included.
PYI_HD float fp16_to_float(uint16_t half) {
  uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
  uint32_t exponent = (half >> 10) & 0x1fu;
  uint32_t mantissa = half & 0x3ffu;
  if (exponent == 0x1fu) return bits_to_float(sign | 0x7f800000u | (mantissa << 13));
  if (exponent == 0) {
    if (mantissa == 0) return bits_to_float(sign);
    // Subnormal: value = mantissa * 2^-24.
    float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-08f;
    return sign ? -magnitude : magnitude;
  }
  return bits_to_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

// float -> IEEE binary16, round to nearest even, overflow to infinity, NaN kept
// (bit-exact with torch's conversion).
PYI_HD uint16_t float_to_fp16(float value) {
  uint32_t bits = float_to_bits(value);
  uint32_t sign = (bits >> 16) & 0x8000u;
  uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);   // NaN
  if (magnitude >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520: inf
  if (magnitude < 0x38800000u) {
    // Result is subnormal or zero: value / 2^-24 rounded to nearest even.
    if (magnitude < 0x33000000u) return static_cast<uint16_t>(sign);  // < 2^-25: rounds to 0
    uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - (magnitude >> 23);  // 14..24
    uint32_t half = mantissa >> shift;
    uint32_t rest = mantissa & ((1u << shift) - 1u);
    uint32_t midpoint = 1u << (shift - 1u);
    if (rest > midpoint || (rest == midpoint && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  // Normal: rebias the exponent and round the 13 dropped mantissa bits to nearest even.
  uint32_t rounded = magnitude + 0xfffu + ((magnitude >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

// Storage tags for the 16-bit float formats (both are stored as uint16_t).
struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

// Element access through the storage type: 16-bit formats are read and written as float.
PYI_HD float load(const float* p) { return *p; }
PYI_HD double load(const double* p) { return *p; }
PYI_HD float load(const Half* p) { return fp16_to_float(p->bits); }
PYI_HD float load(const BFloat16* p) { return bf16_to_float(p->bits); }

PYI_HD void store(float* p, float v) { *p = v; }
PYI_HD void store(double* p, double v) { *p = v; }
PYI_HD void store(Half* p, float v) { p->bits = float_to_fp16(v); }
PYI_HD void store(BFloat16* p, float v) { p->bits = float_to_bf16(v); }

// The one dtype dispatch of the kernels (host side): calls fn with a value of the storage
// type of a floating DType (float, double, Half, BFloat16); float64 only when kWithDouble.
// Any other code throws std::invalid_argument naming the argument `name`.
template <bool kWithDouble = true, typename Fn>
void dispatch_float(DType dtype, const char* name, Fn&& fn) {
  switch (dtype) {
    case DType::Float32:
      return fn(float{});
    case DType::Float16:
      return fn(Half{});
    case DType::BFloat16:
      return fn(BFloat16{});
    case DType::Float64:
      if constexpr (kWithDouble) return fn(double{});
      [[fallthrough]];
    default:
      fail(name, ": expected dtype float32, ", kWithDouble ? "float64, " : "",
           "float16 or bfloat16 (code ", static_cast<int>(dtype), ")");
  }
}

}  // namespace pyinstance
