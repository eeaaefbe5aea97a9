// Key rules, presets and rule files.
#include <gtest/gtest.h>

#include "ckpt/error.h"
#include "ckpt/rule_file.h"
#include "ckpt/rules.h"

namespace ckpt {
namespace {

Rules with(std::vector<Rule> extra) {
  Rules rules = Rules::preset("none");
  for (Rule& rule : extra) {
    rules.add(std::move(rule));
  }
  return rules;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), ExitStatus::k_usage);
    return e.what();
  }
  return "no error";
}

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

TEST(Presets, HoldTheDocumentedRules) {
  auto described = [](const std::string& name) {
    std::vector<std::string> out;
    Rules rules = Rules::preset(name);
    for (const Rule& rule : rules.rules()) {
      out.push_back(rule.describe());
      EXPECT_EQ(rule.origin, "preset " + name);
    }
    return out;
  };
  using Lines = std::vector<std::string>;
  Lines unwrap = {"strip-repeated module. _orig_mod.",
                  "drop-component _fsdp_wrapped_module _checkpoint_wrapped_module"};
  EXPECT_EQ(described("unwrap"), unwrap);
  EXPECT_EQ(described("none"), Lines{});
  Lines lightning = unwrap;
  lightning.insert(lightning.end(), {"strip _forward_module.", "strip model."});
  EXPECT_EQ(described("lightning"), lightning);
  EXPECT_EQ(described("ddp"), Lines{"strip-repeated module."});
  EXPECT_EQ(described("add-module"), Lines{"add-prefix module."});
}

TEST(Presets, LightningUnwrapsFabricAndModuleAttributes) {
  Rules rules = Rules::preset("lightning");
  EXPECT_EQ(rules.apply("model.conv.weight"), "conv.weight");
  EXPECT_EQ(rules.apply("_forward_module.model.conv.weight"), "conv.weight");
  EXPECT_EQ(rules.apply("module.model.fc.bias"), "fc.bias");
}

TEST(Presets, ListsEveryPresetWithItsRules) {
  std::string text = Rules::describe_presets();
  for (const std::string& name : Rules::preset_names()) {
    EXPECT_NE(text.find(name + ": "), std::string::npos) << name;
  }
  EXPECT_NE(text.find("  add-prefix module.\n"), std::string::npos);
}

TEST(Presets, UnknownNameSuggestsTheClosest) {
  EXPECT_EQ(error_of([] { Rules::preset("unwarp"); }),
            "unknown preset 'unwarp', did you mean 'unwrap'?");
  EXPECT_EQ(error_of([] { Rules::preset("zzzzzzzzz"); }),
            "unknown preset 'zzzzzzzzz' (see --list-presets)");
}

TEST(Rules, StripRemovesThePrefixOnce) {
  Rules rules = with({make_rule(RuleKind::k_strip, {"module."}, "--strip")});
  EXPECT_EQ(rules.apply("module.module.fc"), "module.fc");
  EXPECT_EQ(rules.apply("fc"), "fc");
}

TEST(Rules, ReplaceChangesALeadingLiteral) {
  Rules rules = with({make_rule(RuleKind::k_replace, {"backbone.", "encoder."}, "--replace")});
  EXPECT_EQ(rules.apply("backbone.conv.weight"), "encoder.conv.weight");
  EXPECT_EQ(rules.apply("head.backbone.w"), "head.backbone.w");
}

TEST(Rules, DropComponentRemovesItWhereverItStands) {
  Rules rules = with({make_rule(RuleKind::k_drop_component, {"module"}, "--drop-component")});
  EXPECT_EQ(rules.apply("features.module.0.weight"), "features.0.weight");
  EXPECT_EQ(rules.apply("module.fc"), "fc");
  EXPECT_EQ(rules.apply("modules.fc"), "modules.fc");
}

Rules regex(const std::string& pattern, const std::string& repl) {
  return with({make_rule(RuleKind::k_regex, {pattern, repl}, "--regex")});
}

TEST(Rules, RegexReplacesAMatchAnywhereInTheKey) {
  Rules rules = regex("running_", "stats_");
  EXPECT_EQ(rules.apply("bn.running_mean"), "bn.stats_mean");
  EXPECT_EQ(rules.apply("layer1.0.bn1.running_var.x"), "layer1.0.bn1.stats_var.x");
  EXPECT_EQ(rules.apply("bn.weight"), "bn.weight");
}

TEST(Rules, RegexReplacesEveryMatch) {
  EXPECT_EQ(regex("\\.gamma", ".weight").apply("a.gamma.b.gamma"), "a.weight.b.weight");
  EXPECT_EQ(regex("0", "zero").apply("blocks.0.conv0"), "blocks.zero.convzero");
}

TEST(Rules, RegexAnchorsOnlyWhereTheUserDoes) {
  Rules rules = regex("^module\\.", "");
  EXPECT_EQ(rules.apply("module.fc.weight"), "fc.weight");
  EXPECT_EQ(rules.apply("features.module.0.weight"), "features.module.0.weight");
  EXPECT_EQ(regex("\\.weight$", ".w").apply("weight.weight"), "weight.w");
}

// Python 3.7+: re.sub('x*', '-', 'abc') == '-a-b-c-', re.sub('x*', '-', 'abxd') == '-a-b--d-'.
TEST(Rules, RegexEmptyMatchesAsPython) {
  EXPECT_EQ(regex("x*", "-").apply("abc"), "-a-b-c-");
  EXPECT_EQ(regex("x*", "-").apply("abxd"), "-a-b--d-");
  EXPECT_EQ(regex("x*", "-").apply("xx"), "--");
  EXPECT_EQ(regex("$", ".w").apply("fc"), "fc.w");
  EXPECT_EQ(regex("(?:)", "-").apply("\xc3\xa9t\xc3\xa9"), "-\xc3\xa9-t-\xc3\xa9-");  // é: one step
  // The documented difference: Python takes `a` where it refuses a second empty match at
  // one place (re.sub('a*?', '-', 'aa') == '-----'); RE2 cannot be asked for it.
  EXPECT_EQ(regex("a*?", "-").apply("aa"), "-a-a-");
}

TEST(Rules, RegexReplacementGroupsAsPython) {
  Rules numbered = regex("(\\w+)\\.running_(mean|var)", "\\1.stats_\\2");
  EXPECT_EQ(numbered.apply("bn.running_mean"), "bn.stats_mean");
  EXPECT_EQ(regex("(\\w+)\\.(\\w+)", "\\g<2>.\\g<1>").apply("a.b.c.d"), "b.a.d.c");
  Rules named = regex("layers\\.(?P<n>\\d+)\\.", "blocks.\\g<n>.");
  EXPECT_EQ(named.apply("layers.3.layers.4.w"), "blocks.3.blocks.4.w");
  EXPECT_EQ(regex("a|ab", "[\\g<0>]").apply("ab"), "[a]b");  // leftmost-first, as Python
  EXPECT_EQ(regex("(x)?y", "[\\1]").apply("y"), "[]");      // a group that took no part
  EXPECT_EQ(regex("(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)", "\\10\\1").apply("abcdefghij"), "ja");
}

TEST(Rules, RegexReplacementEscapesAsPython) {
  EXPECT_EQ(regex("\\.", "\\\\").apply("a.b"), "a\\b");
  EXPECT_EQ(regex("\\.", "\\.").apply("a.b"), "a\\.b");  // Python keeps \ before punctuation
  EXPECT_EQ(regex("\\.", "\\t").apply("a.b"), "a\tb");
  EXPECT_EQ(regex("\\.", "$").apply("a.b"), "a$b");  // a lone $ is literal
}

// Why `make_rule` refuses the replacement `repl` of `pattern`, after the
// common `--regex: invalid replacement '...' for regex '...': `.
std::string replacement_error(const std::string& pattern, const std::string& repl) {
  std::string message = error_of([&] { regex(pattern, repl); });
  std::string head = "--regex: invalid replacement '" + repl + "' for regex '" + pattern + "': ";
  EXPECT_EQ(message.rfind(head, 0), 0u) << message;
  return message.substr(head.size());
}

TEST(Rules, RegexRefusesDollarGroupsSayingWhatToWrite) {
  EXPECT_EQ(error_of([] { regex("(a)", "x.$1"); }),
            "--regex: invalid replacement 'x.$1' for regex '(a)': '$1' is not a group in "
            "Python's re.sub syntax: write \\1");
  const std::string head = " is not a group in Python's re.sub syntax: write ";
  EXPECT_EQ(replacement_error("(a)", "$1_x"), "'$1'" + head + "\\1");
  EXPECT_EQ(replacement_error("(a)", "${1}"), "'${1}'" + head + "\\1");
  EXPECT_EQ(replacement_error("(?P<n>a)", "$n"), "'$n'" + head + "\\g<n>");
  EXPECT_EQ(replacement_error("a", "$0"), "'$0'" + head + "\\g<0>");
}

TEST(Rules, RegexRefusesBadEscapesAndGroups) {
  auto why = replacement_error;
  EXPECT_EQ(why("(a)", "\\2"), "invalid group reference 2 (the regex has 1 group)");
  EXPECT_EQ(why("(a)", "\\10"), "invalid group reference 10 (the regex has 1 group)");
  EXPECT_EQ(why("(a)", "\\g<2>"), "invalid group reference 2 (the regex has 1 group)");
  EXPECT_EQ(why("(a)", "\\g<x>"), "unknown group name 'x'");
  EXPECT_EQ(why("(a)", "\\g<-1>"), "bad character in group name '-1'");
  EXPECT_EQ(why("(a)", "\\g<>"), "missing group name in \\g<>");
  EXPECT_EQ(why("(a)", "\\g<1"), "missing >, unterminated name in \\g<");
  EXPECT_EQ(why("(a)", "\\g1"), "missing < after \\g");
  EXPECT_EQ(why("(a)", "\\q"), "bad escape \\q");
  EXPECT_EQ(why("(a)", "x\\"), "bad escape (end of replacement)");
  EXPECT_EQ(why("(a)", "\\0"),
            "\\0 is a NUL character in Python's re.sub, not the whole match: write \\g<0>");
  EXPECT_EQ(why("(a)", "\\101"), "octal escape \\101 is not supported");
}

TEST(Rules, DropAndKeepSelectKeysThePatternIsFoundIn) {
  Rules drop = with({make_rule(RuleKind::k_drop, {"aux_head\\."}, "--drop")});
  EXPECT_EQ(drop.apply("aux_head.weight"), std::nullopt);
  EXPECT_EQ(drop.apply("head.aux_head.weight"), std::nullopt);
  EXPECT_EQ(drop.apply("head.weight"), "head.weight");
  Rules keep = with({make_rule(RuleKind::k_keep, {"fc\\."}, "--keep")});
  EXPECT_EQ(keep.apply("fc.weight"), "fc.weight");
  EXPECT_EQ(keep.apply("head.fc.weight"), "head.fc.weight");
  EXPECT_EQ(keep.apply("conv.weight"), std::nullopt);
}

TEST(Rules, DropAndKeepAnchoredPatterns) {
  Rules drop = with({make_rule(RuleKind::k_drop, {"^aux_head\\."}, "--drop")});
  EXPECT_EQ(drop.apply("aux_head.weight"), std::nullopt);
  EXPECT_EQ(drop.apply("head.aux_head.weight"), "head.aux_head.weight");
  Rules keep = with({make_rule(RuleKind::k_keep, {"\\.weight$"}, "--keep")});
  EXPECT_EQ(keep.apply("fc.weight"), "fc.weight");
  EXPECT_EQ(keep.apply("fc.weight_g"), std::nullopt);
}

TEST(Rules, AppliesInOrderAndCountsMatches) {
  Rules rules = with({make_rule(RuleKind::k_strip, {"model."}, "--strip"),
                      make_rule(RuleKind::k_add_prefix, {"module."}, "--add-prefix"),
                      make_rule(RuleKind::k_drop, {"^module\\.aux"}, "--drop")});
  std::vector<size_t> matches(3, 0);
  EXPECT_EQ(rules.apply("model.fc.weight", &matches), "module.fc.weight");
  EXPECT_EQ(rules.apply("fc.weight", &matches), "module.fc.weight");
  EXPECT_EQ(rules.apply("aux.weight", &matches), std::nullopt);
  EXPECT_EQ(matches, (std::vector<size_t>{1, 3, 1}));
}

TEST(Rules, RenameSkipsDropAndKeepForMetadataPrefixes) {
  Rules rules = with({make_rule(RuleKind::k_keep, {"^fc\\."}, "--keep"),
                      make_rule(RuleKind::k_strip, {"module."}, "--strip")});
  EXPECT_EQ(rules.rename("module.conv."), "conv.");
}

TEST(Rules, MakeRuleRefusesBadPatternsAndArity) {
  EXPECT_EQ(error_of([] { make_rule(RuleKind::k_drop, {"a(b"}, "--drop"); }),
            "--drop: invalid regex 'a(b': missing ): a(b");
  EXPECT_EQ(error_of([] { make_rule(RuleKind::k_regex, {"(a)", "\\2"}, "--regex"); }),
            "--regex: invalid replacement '\\2' for regex '(a)': invalid group reference 2 "
            "(the regex has 1 group)");
  EXPECT_EQ(error_of([] { make_rule(RuleKind::k_regex, {"a", "\\1"}, "--regex"); }),
            "--regex: invalid replacement '\\1' for regex 'a': invalid group reference 1 "
            "(the regex has 0 groups)");
  EXPECT_EQ(error_of([] { make_rule(RuleKind::k_replace, {"a"}, "x.toml:3"); }),
            "x.toml:3: 'replace' takes 2 arguments, got 1");
}

TEST(RuleFile, ParsesPresetAndRulesWithTheirLines) {
  RuleFile file = parse_rule_file(
      "# rename the backbone\n"
      "preset = \"none\"\n"
      "\n"
      "[[rule]]\n"
      "replace = [\"backbone.\", \"encoder.\"]\n"
      "\n"
      "[[rule]]\n"
      "drop = '^aux_head\\.'\n",
      "rules.toml");
  EXPECT_EQ(file.preset, "none");
  ASSERT_EQ(file.rules.size(), 2u);
  EXPECT_EQ(file.rules[0].describe(), "replace backbone. encoder.");
  EXPECT_EQ(file.rules[0].origin, "rules.toml:5");
  EXPECT_EQ(file.rules[1].describe(), "drop ^aux_head\\.");
  EXPECT_EQ(file.rules[1].origin, "rules.toml:8");
}

TEST(RuleFile, ReportsEveryErrorWithItsLine) {
  std::string text =
      "preset = \"unwarp\"\n"
      "colour = 3\n"
      "[[rule]]\n"
      "strp = \"module.\"\n"
      "[[rule]]\n"
      "replace = [\"only-one\"]\n"
      "[[rule]]\n"
      "drop = 'a(b'\n"
      "[[rule]]\n"
      "strip = \"a.\"\n"
      "add-prefix = \"b.\"\n";
  EXPECT_EQ(error_of([&] { parse_rule_file(text, "rules.toml"); }),
            "rules.toml:1: unknown preset 'unwarp', did you mean 'unwrap'?\n"
            "rules.toml:2: unknown key 'colour' (a rule file holds 'preset' and [[rule]] tables)\n"
            "rules.toml:4: unknown rule kind 'strp', did you mean 'strip'?\n"
            "rules.toml:6: 'replace' takes two strings, [\"A\", \"B\"]\n"
            "rules.toml:8: invalid regex 'a(b': missing ): a(b\n"
            "rules.toml:9: a [[rule]] holds exactly one rule, found 2: add-prefix, strip");
}

TEST(RuleFile, RegexRulesAreRePythonsWithErrorsAtTheirLine) {
  RuleFile file = parse_rule_file(
      "[[rule]]\n"
      "regex = ['\\.gamma', '.weight']\n"
      "[[rule]]\n"
      "keep = 'norm'\n",
      "rules.toml");
  Rules rules = with(file.rules);
  EXPECT_EQ(rules.apply("norm.gamma.x.gamma"), "norm.weight.x.weight");
  EXPECT_EQ(rules.apply("layers.0.norm.beta"), "layers.0.norm.beta");
  EXPECT_EQ(rules.apply("fc.weight"), std::nullopt);
  EXPECT_EQ(error_of([] { parse_rule_file("[[rule]]\nregex = ['(a)', '$1']\n", "r.toml"); }),
            "r.toml:2: invalid replacement '$1' for regex '(a)': '$1' is not a group in "
            "Python's re.sub syntax: write \\1");
}

TEST(RuleFile, ReportsTomlSyntaxErrorsWithTheLine) {
  std::string message = error_of([] { parse_rule_file("[[rule]]\nstrip = \"x\n", "r.toml"); });
  EXPECT_EQ(message.rfind("r.toml:2: ", 0), 0u) << message;
}

}  // namespace
}  // namespace ckpt
