// The default command: ckpt-convert IN OUT [options].
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>

#include "ckpt/convert.h"
#include "ckpt/error.h"
#include "commands.h"

namespace ckpt::cli {
namespace {

struct ConvertArgs {
  ConvertOptions options;
  std::string preset = "unwrap";
  std::vector<std::string> strip;
  std::vector<std::string> add_prefix;
  std::string extract;  // "" = off, "*" = find it, else the key
  bool no_verify = false;
  bool quiet = false;
};

void print_changes(const ConvertReport& report, FILE* out) {
  for (const KeyChange& change : report.rewrite.changes) {
    std::fprintf(out, "%s: %s -> %s\n", change.state_dict.c_str(), change.old_key.c_str(),
                 change.new_key.c_str());
  }
}

// Adds the --strip and --add-prefix rules in the order they were given:
// CLI11 keeps each option's values apart, and its parse order interleaves them.
void add_rules_in_order(const CLI::App& app, const ConvertArgs& args, Rules& rules) {
  size_t next_strip = 0;
  size_t next_add = 0;
  for (const CLI::Option* option : app.parse_order()) {
    if (option->get_name() == "--strip" && next_strip < args.strip.size()) {
      rules.add({RuleKind::k_strip, {args.strip[next_strip++]}, "--strip"});
    } else if (option->get_name() == "--add-prefix" && next_add < args.add_prefix.size()) {
      rules.add({RuleKind::k_add_prefix, {args.add_prefix[next_add++]}, "--add-prefix"});
    }
  }
}

int run(const CLI::App& app, ConvertArgs& args) {
  ConvertOptions& options = args.options;
  options.rules = Rules::preset(args.preset);
  add_rules_in_order(app, args, options.rules);
  options.extract = !args.extract.empty();
  if (options.extract && args.extract != "*") {
    options.extract_key = args.extract;
  }
  options.verify = !args.no_verify;
  ConvertReport report = convert(options);
  if (options.dry_run) {
    print_changes(report, stdout);
    std::fprintf(stderr, "dry run: %zu of %zu keys would change in %zu state dict(s); nothing written\n",
                 report.rewrite.changes.size(), report.rewrite.keys_seen,
                 report.state_dicts.size());
    return 0;
  }
  if (!args.quiet) {
    std::fprintf(stderr,
                 "%s -> %s: %zu state dict(s), %zu of %zu keys renamed, %zu tensors in %zu "
                 "storages (%llu bytes), %llu bytes written",
                 options.input.c_str(), options.output.c_str(), report.state_dicts.size(),
                 report.rewrite.changes.size(), report.rewrite.keys_seen, report.tensors,
                 report.storages, static_cast<unsigned long long>(report.storage_bytes),
                 static_cast<unsigned long long>(report.bytes_written));
    if (report.verified) {
      std::fprintf(stderr, ", verified on %s\n", report.verified->device.c_str());
    } else {
      std::fprintf(stderr, ", not verified (--no-verify)\n");
    }
    if (report.state_dicts.empty()) {
      std::fprintf(stderr, "ckpt-convert: warning: %s: no state dict found; keys unchanged\n",
                   options.input.c_str());
    }
  }
  return 0;
}

}  // namespace

Runner add_convert(CLI::App& app) {
  auto args = std::make_shared<ConvertArgs>();
  ConvertOptions& o = args->options;
  app.add_option("IN", o.input, "Checkpoint to read (never modified)");
  app.add_option("OUT", o.output, "Where to write the converted checkpoint");
  app.add_option("--device", o.device, "Device the output is loaded on to verify it (cpu, cuda:N)")
      ->capture_default_str();
  app.add_option("--location", o.location,
                 "Location tag written on every storage; 'keep' keeps the input's")
      ->capture_default_str();
  app.add_option("--preset", args->preset, "Key rule preset: unwrap (default), none")
      ->capture_default_str();
  app.add_option("--strip", args->strip, "Also strip this leading prefix from keys (repeatable)")
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--add-prefix", args->add_prefix,
                 "Put this prefix in front of every key (repeatable)")
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  // `--extract` alone arrives as `--extract=*` (see main.cc).
  app.add_option("--extract", args->extract,
                 "Write only the model's state dict; --extract=KEY names its top-level key")
      ->option_text("[=KEY]");
  app.add_flag("--dry-run", o.dry_run, "Print old -> new keys on stdout; write nothing");
  app.add_flag("--force", o.force, "Replace OUT if it exists");
  app.add_flag("--no-verify", args->no_verify, "Skip reloading and comparing the output");
  app.add_option("--allow-global", o.allowed_globals,
                 "Allow this global (module.name) in the output (repeatable)")
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_flag("-q,--quiet", args->quiet, "Print nothing but errors");
  return [args, &app]() -> int {
    if (args->options.input.empty() || args->options.output.empty()) {
      std::fprintf(stderr, "%s", app.help().c_str());
      throw Error("expected IN and OUT (see usage above)", ExitStatus::k_usage);
    }
    return run(app, *args);
  };
}

}  // namespace ckpt::cli
