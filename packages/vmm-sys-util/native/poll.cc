#include "common.h"
namespace vsu {
void InitPoll(Napi::Env env, Napi::Object exports) {}
}
