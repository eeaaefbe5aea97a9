// `--json` promises one JSON object on stdout for every outcome. The commands
// print their own (with what they had done) for errors they meet; this is the
// object for what stops a command before it has a report: a usage error that
// CLI11 finds while parsing, or an error before the work starts.
#pragma once

#include <string>
#include <vector>

#include "commands.h"

namespace ckpt::cli {

// The command the arguments `args` (in order, without argv[0]) run:
// `inspect`, `batch`, `check`, or `convert` (the default command).
std::string command_of(const std::vector<std::string>& args);

// True when `args` ask for `--json` (before a `--` that ends the options).
bool wants_json(const std::vector<std::string>& args);

// The JSON object of `command`'s schema for a run that failed with
// `exit_code` and `message` before it had a report.
std::string error_json(const std::string& command, int exit_code, const std::string& message);

// Runs `run`; when it throws `Error` and `json` is set, prints
// `error_json(command, …)` on stdout first. For commands whose runners do
// not print a report of their own on error.
int run_with_json_errors(bool json, const std::string& command, const Runner& run);


}  // namespace ckpt::cli
