// Key rules and presets.
#include <gtest/gtest.h>

#include "ckpt/error.h"
#include "ckpt/rules.h"

namespace ckpt {
namespace {

TEST(UnwrapPreset, StripsModuleAndOrigModInAnyOrderAndNumber) {
  Rules rules = Rules::preset("unwrap");
  EXPECT_EQ(rules.apply("module.conv1.weight"), "conv1.weight");
  EXPECT_EQ(rules.apply("_orig_mod.module.fc.bias"), "fc.bias");
  EXPECT_EQ(rules.apply("module._orig_mod.fc.bias"), "fc.bias");
  EXPECT_EQ(rules.apply("module.module.fc.bias"), "fc.bias");
  EXPECT_EQ(rules.apply("fc.bias"), "fc.bias");
}

TEST(UnwrapPreset, LeavesModuleInsideAKeyAlone) {
  Rules rules = Rules::preset("unwrap");
  EXPECT_EQ(rules.apply("features.module.0.weight"), "features.module.0.weight");
  EXPECT_EQ(rules.apply("modulex.weight"), "modulex.weight");
}

TEST(UnwrapPreset, DropsFsdpAndCheckpointComponentsAnywhere) {
  Rules rules = Rules::preset("unwrap");
  EXPECT_EQ(rules.apply("layers.0._fsdp_wrapped_module.weight"), "layers.0.weight");
  EXPECT_EQ(rules.apply("_fsdp_wrapped_module.layers.1._fsdp_wrapped_module."
                        "_checkpoint_wrapped_module.bias"),
            "layers.1.bias");
  EXPECT_EQ(rules.apply("layers.0._fsdp_wrapped_module."), "layers.0.");
}

TEST(Rules, AppliesExtraRulesInOrderAfterThePreset) {
  Rules rules = Rules::preset("none");
  rules.add({RuleKind::k_strip, {"model."}, "--strip"});
  rules.add({RuleKind::k_add_prefix, {"module."}, "--add-prefix"});
  std::vector<size_t> matches(2, 0);
  EXPECT_EQ(rules.apply("model.fc.weight", &matches), "module.fc.weight");
  EXPECT_EQ(rules.apply("fc.weight", &matches), "module.fc.weight");
  EXPECT_EQ(matches, (std::vector<size_t>{1, 2}));
}

TEST(Rules, StripRemovesThePrefixOnce) {
  Rules rules = Rules::preset("none");
  rules.add({RuleKind::k_strip, {"module."}, "--strip"});
  EXPECT_EQ(rules.apply("module.module.fc"), "module.fc");
}

TEST(Rules, UnknownPresetSuggestsTheClosest) {
  try {
    Rules::preset("unwarp");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "unknown preset 'unwarp', did you mean 'unwrap'?");
    EXPECT_EQ(e.status(), ExitStatus::k_usage);
  }
}

TEST(Rules, DescribesEachRule) {
  Rules rules = Rules::preset("unwrap");
  ASSERT_EQ(rules.rules().size(), 2u);
  EXPECT_EQ(rules.rules()[0].describe(), "strip-repeated module. _orig_mod.");
  EXPECT_EQ(rules.rules()[1].describe(),
            "drop-component _fsdp_wrapped_module _checkpoint_wrapped_module");
}

}  // namespace
}  // namespace ckpt
