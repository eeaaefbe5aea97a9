// The subcommands of the executable, one file each. Each registers its options
// on `app` and returns the function that runs it once parsing succeeded.
#pragma once

#include <functional>

namespace CLI {
class App;
}

namespace ckpt::cli {

using Runner = std::function<int()>;

Runner add_convert(CLI::App& app);
Runner add_inspect(CLI::App& app);
Runner add_batch(CLI::App& app);
Runner add_check(CLI::App& app);

}  // namespace ckpt::cli
