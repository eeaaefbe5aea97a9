// This file runs a conversion end to end (DESIGN.md's pipeline): read the
// checkpoint, pick what to write, rewrite keys and locations, refuse globals
// that would run code, encode, write to a temporary file, verify, rename.
#include "ckpt/convert.h"

#include <sys/stat.h>

#include "ckpt/checkpoint.h"
#include "ckpt/error.h"
#include "ckpt/globals.h"
#include "ckpt/pickle.h"
#include "ckpt/temp_file.h"
#include "ckpt/tensor.h"
#include "ckpt/writer.h"

namespace ckpt {
namespace {

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa {};
  struct stat sb {};
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

bool exists(const std::string& path) {
  struct stat s {};
  return ::lstat(path.c_str(), &s) == 0;
}

void check_paths(const ConvertOptions& options) {
  if (options.input == options.output || same_file(options.input, options.output)) {
    throw Error(options.input + ": refusing to convert: OUT '" + options.output +
                "' is the same file (the input is never modified)", ExitStatus::k_usage);
  }
  if (!options.dry_run && !options.force && exists(options.output)) {
    throw Error(options.output + ": refusing to overwrite: the file exists (use --force)",
                ExitStatus::k_usage);
  }
}

}  // namespace

ConvertReport convert(const ConvertOptions& options) {
  check_paths(options);
  if (options.verify && !options.dry_run) {
    require_device(options.device);
  }
  ConvertReport report;
  Checkpoint input = read_checkpoint(options.input);
  report.format = format_name(input.format);
  std::string where = options.input + ":" + input.pickle_record;
  try {
    Node* root = input.graph.root;
    if (options.extract) {
      root = find_model_state_dict(root, options.extract_key);
    }
    report.state_dicts = find_state_dicts(root);
    report.rewrite = rewrite_keys(input.graph, report.state_dicts, options.rules);
    if (options.location != "keep") {
      set_locations(input.graph, options.location);
    }
    check_output_globals(root, options.allowed_globals);
    if (options.dry_run) {
      return report;
    }
    EncodedPickle encoded = encode_pickle(root);
    report.storages = encoded.storages.size();
    for (const Storage* storage : encoded.storages) {
      report.storage_bytes += storage->bytes.size;
    }
    TempFile temp(options.output);
    report.bytes_written = write_checkpoint(encoded, temp.fd(), options.output);
    if (options.verify) {
      report.verified = verify_output(root, temp.path(), options.output, options.device);
    }
    report.tensors = tensors_reachable(root).size();
    temp.commit();
    report.written = true;
    return report;
  } catch (const FormatError& e) {
    throw Error(where + ": " + e.what());
  }
}

}  // namespace ckpt
