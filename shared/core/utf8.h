// UTF-8 validity as RFC 3629 defines it: no overlong forms, no surrogates,
// nothing above U+10FFFF.
#ifndef SWITCHYARD_SHARED_CORE_UTF8_H_
#define SWITCHYARD_SHARED_CORE_UTF8_H_

#include <string_view>

namespace switchyard {

bool IsValidUtf8(std::string_view text);

}  // namespace switchyard

#endif  // SWITCHYARD_SHARED_CORE_UTF8_H_
