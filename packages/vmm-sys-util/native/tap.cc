#include "common.h"
namespace vsu {
void InitTap(Napi::Env env, Napi::Object exports) {}
}
