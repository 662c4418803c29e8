// Run-time CPU dispatch: kernels compile *_avx2.cpp / *_avx512.cpp variants and pick one
// with active_isa(). PYINSTANCE_ISA=generic|avx2|avx512 caps the choice (tests use it to
// exercise every variant on one machine).
#pragma once
#include <string>
#include <vector>

namespace pyinstance::cpu {

enum class Isa : int { Generic = 0, Avx2 = 1, Avx512 = 2 };

// Best ISA level this CPU supports, ignoring the environment cap.
Isa detected_isa();
// detected_isa() capped by PYINSTANCE_ISA (read at every call: cheap, and testable); a value
// other than generic, avx2 or avx512 caps nothing.
Isa active_isa();
const char* isa_name(Isa isa);
// Whether the AVX-512 kernels may use AVX512_BF16 dot products: the active ISA is AVX-512
// and the CPU has the extension.
bool bf16_dot_active();
// ISA variants compiled into this build.
std::vector<std::string> compiled_isas();
// CPU feature flags relevant to the kernels, as detected at run time.
std::vector<std::string> detected_features();

}  // namespace pyinstance::cpu
