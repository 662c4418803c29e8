// Argument checks for bound functions: a failed check throws std::invalid_argument,
// which pybind11 turns into a Python ValueError carrying the message.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace pyinstance {

template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream message;
  (message << ... << parts);
  throw std::invalid_argument(message.str());
}

}  // namespace pyinstance

#define PYI_CHECK(condition, ...)      \
  do {                                 \
    if (!(condition)) {                \
      ::pyinstance::fail(__VA_ARGS__); \
    }                                  \
  } while (0)
