#include "pyinstance/cpu_features.h"

#include <cstdlib>
#include <cstring>

namespace pyinstance::cpu {

Isa detected_isa() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    return Isa::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c"))
    return Isa::Avx2;
#endif
  return Isa::Generic;
}

Isa active_isa() {
  Isa best = detected_isa();
  const char* cap = std::getenv("PYINSTANCE_ISA");
  if (cap == nullptr || *cap == '\0') return best;
  Isa requested;
  if (std::strcmp(cap, "generic") == 0) {
    requested = Isa::Generic;
  } else if (std::strcmp(cap, "avx2") == 0) {
    requested = Isa::Avx2;
  } else if (std::strcmp(cap, "avx512") == 0) {
    requested = Isa::Avx512;
  } else {
    return best;  // an unknown value caps nothing (pyinstance._backend warns about it)
  }
  return static_cast<int>(requested) < static_cast<int>(best) ? requested : best;
}

bool bf16_dot_active() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return active_isa() == Isa::Avx512 && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      return "avx512";
    case Isa::Avx2:
      return "avx2";
    default:
      return "generic";
  }
}

std::vector<std::string> compiled_isas() {
#if defined(__x86_64__)
  return {"generic", "avx2", "avx512"};
#else
  return {"generic"};
#endif
}

std::vector<std::string> detected_features() {
  std::vector<std::string> found;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
// __builtin_cpu_supports only takes string literals, hence the macro.
#define PYI_REPORT_FEATURE(name) \
  if (__builtin_cpu_supports(name)) found.emplace_back(name)
  PYI_REPORT_FEATURE("sse4.2");
  PYI_REPORT_FEATURE("avx");
  PYI_REPORT_FEATURE("avx2");
  PYI_REPORT_FEATURE("fma");
  PYI_REPORT_FEATURE("f16c");
  PYI_REPORT_FEATURE("avx512f");
  PYI_REPORT_FEATURE("avx512bw");
  PYI_REPORT_FEATURE("avx512vl");
  PYI_REPORT_FEATURE("avx512dq");
  PYI_REPORT_FEATURE("avx512bf16");
  PYI_REPORT_FEATURE("avx512vnni");
#undef PYI_REPORT_FEATURE
#endif
  return found;
}

}  // namespace pyinstance::cpu
