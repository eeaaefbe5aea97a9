// Fuzz target: the whole conversion, as `ckpt-convert IN OUT` runs it, on
// files in a private folder of /dev/shm (memory): read, find and rewrite the
// state dicts with the default rules, retag storages, refuse code globals,
// encode, write the archive, verify it, rename it into place; then the
// report (text and JSON) and `inspect` (text and JSON). Any input must give
// a verified OUT that reads back, or an Error with the exit status of bad
// input, leaving no file behind. A failed verification (exit status 3) is a
// finding: the tool wrote something it then could not prove. The
// `--extract` path runs too, and one of the deployment outputs, chosen by the
// input's size: `.safetensors`, a bf16 `.pth` or an fp16 `.safetensors`, so
// that the sinks, the casts and their independent check see hostile graphs.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

#include "common.h"
#include "ckpt/checkpoint.h"
#include "ckpt/convert.h"
#include "ckpt/dtype.h"
#include "ckpt/inspect.h"

using namespace ckpt;

namespace {

const std::string& folder() {
  static const std::string path = [] {
    std::string base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    std::string pattern = base + "/ckpt-fuzz-convert-XXXXXX";
    CKPT_FUZZ_CHECK(mkdtemp(pattern.data()) != nullptr);
    return pattern;
  }();
  static const bool cleanup = [] {
    std::atexit([] {
      for (const char* name : {"/in.pth", "/out.pth", "/out.safetensors"}) {
        ::unlink((path + name).c_str());
      }
      ::rmdir(path.c_str());
    });
    return true;
  }();
  (void)cleanup;
  return path;
}

// The names in the folder other than `keep`.
std::string leftovers(const std::string& keep) {
  std::string found;
  DIR* dir = opendir(folder().c_str());
  CKPT_FUZZ_CHECK(dir != nullptr);
  while (dirent* entry = readdir(dir)) {
    std::string name = entry->d_name;
    if (name != "." && name != ".." && name != keep) {
      found += name + " ";
    }
  }
  closedir(dir);
  return found;
}

void write_file(const std::string& path, const uint8_t* data, size_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  CKPT_FUZZ_CHECK(fd >= 0);
  CKPT_FUZZ_CHECK(::write(fd, data, size) == static_cast<ssize_t>(size));
  ::close(fd);
}

// The output of a conversion: its file name and what the sink is asked to do.
struct Output {
  const char* name;
  std::optional<Dtype> dtype;
};

void convert_once(const std::string& input, bool extract, const Output& output) {
  ConvertOptions options;
  options.input = input;
  options.output = folder() + "/" + output.name;
  options.extract = extract;
  options.sink.dtype = output.dtype;
  ConvertReport report;
  report.input = options.input;
  report.output = options.output;
  try {
    convert(options, report);
  } catch (const Error& e) {
    if (e.status() == ExitStatus::k_verify_failed) {
      std::fprintf(stderr, "verification of our own output failed: %s\n", e.what());
      std::abort();
    }
    CKPT_FUZZ_CHECK(e.status() == ExitStatus::k_bad_input);
    report.exit_code = static_cast<int>(e.status());
    report.error = e.what();
  }
  format_report_text(report);
  format_mapping_diff(report);
  format_report_json(report);
  if (report.written) {
    Checkpoint written = read_checkpoint(options.output);  // must read back
    CKPT_FUZZ_CHECK(written.tensors.size() == report.tensors);
    ::unlink(options.output.c_str());
  }
  std::string left = leftovers("in.pth");
  if (!left.empty()) {
    std::fprintf(stderr, "files left behind: %s\n", left.c_str());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string input = folder() + "/in.pth";
  write_file(input, data, size);
  convert_once(input, false, {"out.pth", std::nullopt});
  convert_once(input, true, {"out.pth", std::nullopt});
  static const Output k_deployment[] = {{"out.safetensors", std::nullopt},
                                        {"out.pth", Dtype::k_bfloat16},
                                        {"out.safetensors", Dtype::k_float16}};
  convert_once(input, false, k_deployment[size % 3]);
  try {
    InspectReport report = inspect_checkpoint(input);
    format_inspect_text(report);
    format_inspect_json(report);
  } catch (const Error&) {
  }
  return 0;
}
