// The JSON object of a run that failed before it had a report (see
// json_errors.h): each command's own schema, with its status, exit code and
// error set and nothing else known.
#include "json_errors.h"

#include <nlohmann/json.hpp>

#include <cstdio>

#include "ckpt/batch.h"
#include "ckpt/check.h"
#include "ckpt/convert.h"
#include "ckpt/error.h"
#include "ckpt/inspect.h"

namespace ckpt::cli {

std::string command_of(const std::vector<std::string>& args) {
  for (const std::string& arg : args) {
    if (arg == "--") {
      break;
    }
    if (arg.empty() || arg[0] != '-') {
      return arg == "inspect" || arg == "batch" || arg == "check" ? arg : "convert";
    }
  }
  return "convert";
}

bool wants_json(const std::vector<std::string>& args) {
  for (const std::string& arg : args) {
    if (arg == "--") {
      return false;
    }
    if (arg == "--json") {
      return true;
    }
  }
  return false;
}

std::string error_json(const std::string& command, int exit_code, const std::string& message) {
  if (command == "inspect") {
    return format_inspect_json(InspectReport{}, exit_code, message);
  }
  if (command == "check") {
    return format_check_json({}, exit_code, message);
  }
  if (command == "batch") {
    BatchRecord record;
    record.status = BatchStatus::k_failed;
    record.exit_code = exit_code;
    record.error = message;
    // A record in the batch schema; its status says the run could not start
    // (`error`), which no input's status is.
    nlohmann::ordered_json object = nlohmann::ordered_json::parse(format_batch_record(record));
    object["status"] = run_status_name(exit_code);
    return object.dump() + "\n";
  }
  ConvertReport report;
  report.exit_code = exit_code;
  report.error = message;
  return format_report_json(report);
}

int run_with_json_errors(bool json, const std::string& command, const Runner& run) {
  try {
    return run();
  } catch (const Error& e) {
    if (json) {
      std::fputs(error_json(command, static_cast<int>(e.status()), e.what()).c_str(), stdout);
    }
    throw;
  }
}

}  // namespace ckpt::cli
