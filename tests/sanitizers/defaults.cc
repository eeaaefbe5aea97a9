// Sanitizer settings compiled into every executable of a CKPT_SANITIZE build
// (the tool, the unit tests, the fuzz replays), so that ctest, the end-to-end
// judge and a run by hand all use them without environment variables (which
// still override them).
//
// A sanitizer report exits with status 86, which no code path of the tool
// uses, so a report can never pass for a clean refusal (exit 1). LeakSanitizer
// skips memory that LibTorch's own shared libraries allocate in their static
// initializers and keep until exit (operator registries, thread pools): the
// suppressions name only those libraries' frames, never ours.

extern "C" const char* __asan_default_options() {
  return "detect_leaks=1:exitcode=86:strict_string_checks=1:detect_stack_use_after_return=1:"
         "check_initialization_order=1:print_suppressions=0";
}

extern "C" const char* __ubsan_default_options() {
  return "print_stacktrace=1:halt_on_error=1:exitcode=86";
}

extern "C" const char* __lsan_default_options() { return "exitcode=86:print_suppressions=0"; }

extern "C" const char* __lsan_default_suppressions() {
  return "leak:libtorch_cpu.so\n"
         "leak:libtorch.so\n"
         "leak:libc10.so\n";
}
