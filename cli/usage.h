// The entry points for people who do not know the options yet: what
// `ckpt-convert` alone prints, and `ckpt-convert help [COMMAND]`.
#pragma once

#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace ckpt::cli {

// The short usage `ckpt-convert` alone prints (on stderr, exit 2): the four
// forms and three examples.
extern const char* const k_short_usage;

// `ckpt-convert help [COMMAND]`: the help of `app` or of its subcommand
// COMMAND (`convert` is the default command) on stdout, exit 0; an unknown
// COMMAND is a usage error with a suggestion (exit 2). `args` are the
// arguments after argv[0], `help` first.
int print_help(const CLI::App& app, const std::vector<std::string>& args);

}  // namespace ckpt::cli
