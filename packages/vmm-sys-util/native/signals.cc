#include "common.h"
namespace vsu {
void InitSignals(Napi::Env env, Napi::Object exports) {}
}
