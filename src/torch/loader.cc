// Opens the LibTorch plugin on first use (see plugin_abi.h) and wraps its C
// functions. It is looked for in $CKPT_TORCH_PLUGIN, next to the executable
// (the build tree), and in ../lib/ckpt-convert/ beside it (an installation).
#include <dlfcn.h>
#include <unistd.h>

#include <array>
#include <climits>
#include <cstdlib>

#include "ckpt/error.h"
#include "ckpt/storage_pieces.h"
#include "ckpt/torch_plugin.h"
#include "plugin_abi.h"

namespace ckpt {
namespace {

constexpr const char* k_plugin_name = "libckpt_torch.so";

struct Plugin {
  CkptRequireDeviceFn require_device = nullptr;
  CkptRoundTripFn round_trip = nullptr;
  CkptModuleEntriesFn module_entries = nullptr;
};

std::string executable_dir() {
  std::array<char, PATH_MAX> buffer{};
  ssize_t n = ::readlink("/proc/self/exe", buffer.data(), buffer.size() - 1);
  if (n <= 0) {
    return ".";
  }
  std::string path(buffer.data(), static_cast<size_t>(n));
  return path.substr(0, path.rfind('/'));
}

std::vector<std::string> candidates() {
  std::vector<std::string> paths;
  if (const char* forced = std::getenv("CKPT_TORCH_PLUGIN"); forced != nullptr && *forced != '\0') {
    paths.emplace_back(forced);
    return paths;
  }
  std::string dir = executable_dir();
  paths.push_back(dir + "/" + k_plugin_name);
  paths.push_back(dir + "/../lib/ckpt-convert/" + k_plugin_name);
  return paths;
}

// The plugin, opened once; throws `Error` with `status` naming `purpose`.
const Plugin& plugin(const std::string& purpose, ExitStatus status) {
  static Plugin loaded;
  static std::string failure;
  static bool tried = false;
  if (!tried) {
    tried = true;
    std::string reasons;
    for (const std::string& path : candidates()) {
      void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (handle == nullptr) {
        reasons += (reasons.empty() ? "" : "; ") + std::string(::dlerror());
        continue;
      }
      auto version = reinterpret_cast<CkptAbiVersionFn>(::dlsym(handle, "ckpt_torch_abi_version"));
      if (version == nullptr || version() != CKPT_TORCH_ABI_VERSION) {
        reasons += (reasons.empty() ? "" : "; ") + path + ": built for another ckpt-convert";
        continue;
      }
      loaded.require_device = reinterpret_cast<CkptRequireDeviceFn>(::dlsym(handle, "ckpt_torch_require_device"));
      loaded.round_trip = reinterpret_cast<CkptRoundTripFn>(::dlsym(handle, "ckpt_torch_round_trip"));
      loaded.module_entries = reinterpret_cast<CkptModuleEntriesFn>(::dlsym(handle, "ckpt_torch_module_entries"));
      break;
    }
    if (loaded.require_device == nullptr) {
      failure = "the LibTorch plugin " + std::string(k_plugin_name) + " cannot be loaded (" +
                reasons + "); install it beside ckpt-convert or set CKPT_TORCH_PLUGIN";
    }
  }
  if (loaded.require_device == nullptr) {
    throw Error(purpose + ": " + failure, status);
  }
  return loaded;
}

void check(int status, const char* message) {
  if (status != 0) {
    throw Error(message, static_cast<ExitStatus>(status));
  }
}

CkptTensor view(const TensorRef& ref) {
  if (has_pieces(*ref.storage)) {
    // Never the case for an output (one range of the written file); an input
    // consolidated from several files is checked on the CPU.
    throw Error("'" + ref.storage->key + "' is consolidated from several files: convert the "
                "checkpoint first, then load the result on a device");
  }
  CkptTensor t{};
  t.data = storage_bytes(*ref.storage).bytes.data + ref.offset * element_size(ref.dtype);
  t.dtype = static_cast<int32_t>(ref.dtype);
  t.ndim = static_cast<int32_t>(ref.sizes.size());
  t.sizes = ref.sizes.data();
  t.strides = ref.strides.data();
  return t;
}

}  // namespace

namespace {

// `cpu` or `cuda`, optionally followed by `:N`.
bool is_device_name(const std::string& device) {
  size_t colon = device.find(':');
  std::string type = device.substr(0, colon);
  if (type != "cpu" && type != "cuda") {
    return false;
  }
  if (colon == std::string::npos) {
    return true;
  }
  std::string index = device.substr(colon + 1);
  return !index.empty() && index.size() <= 9 &&
         index.find_first_not_of("0123456789") == std::string::npos;
}

}  // namespace

bool is_cpu_device(const std::string& device) {
  if (!is_device_name(device)) {
    throw Error("invalid --device '" + device + "': expected cpu, cuda or cuda:N",
                ExitStatus::k_usage);
  }
  return device.compare(0, 3, "cpu") == 0;  // cpu or cpu:N, as torch reads them
}

void require_device(const std::string& device) {
  if (is_cpu_device(device)) {
    return;
  }
  const Plugin& p = plugin("device " + device + " unavailable", ExitStatus::k_device_unavailable);
  std::array<char, 1024> message{};
  check(p.require_device(device.c_str(), message.data(), message.size()), message.data());
}

std::string round_trip(const std::string& device, const TensorRef& loaded,
                       const TensorRef& expected) {
  const Plugin& p = plugin("device " + device + " unavailable", ExitStatus::k_device_unavailable);
  CkptTensor a = view(loaded);
  CkptTensor b = view(expected);
  std::array<char, 1024> message{};
  int status = p.round_trip(device.c_str(), &a, &b, message.data(), message.size());
  return status == 0 ? std::string() : std::string(message.data());
}

std::vector<ModuleEntry> torchscript_entries(const std::string& path) {
  const Plugin& p = plugin(path + ": cannot read a TorchScript model", ExitStatus::k_bad_input);
  std::vector<ModuleEntry> entries;
  auto add = [](void* context, const char* name, int32_t dtype, int32_t ndim, const int64_t* sizes) {
    static_cast<std::vector<ModuleEntry>*>(context)->push_back(
        {name, dtype, std::vector<int64_t>(sizes, sizes + ndim)});
  };
  std::array<char, 1024> message{};
  int status = p.module_entries(path.c_str(), add, &entries, message.data(), message.size());
  if (status != 0) {
    throw Error(path + ": " + message.data(), static_cast<ExitStatus>(status));
  }
  return entries;
}

}  // namespace ckpt
